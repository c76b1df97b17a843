// No sink hangs the relay: against a destination that is unreachable (a closed port) or
// silent (a listener that accepts and never answers), `courier relay --once` fails within its
// delivery timeout with one line and exit 1, and a relay running as a daemon stops on SIGTERM
// within its shutdown timeout, for every sink scheme. The bounds are generous: they check
// that the relay ends, not how fast.
#include <signal.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <unistd.h>

#include "support/fixtures.h"

namespace courier::test {
namespace {

enum class Peer { kUnreachable, kSilent };

struct LivenessCase {
  std::string scheme;
  Peer peer;
};

std::string CaseName(const ::testing::TestParamInfo<LivenessCase>& info) {
  std::string name;
  for (char c : info.param.scheme) {
    if (std::isalnum(static_cast<unsigned char>(c))) name.push_back(c);
  }
  return name + (info.param.peer == Peer::kSilent ? "Silent" : "Unreachable");
}

constexpr Duration kDeliveryTimeout{2000};
constexpr Duration kShutdownTimeout{2000};
constexpr Duration kSlack{10000};

class SinkLiveness : public ::testing::TestWithParam<LivenessCase> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<TestDb>(TestDb::Make(false));
    int64_t seq = 1;
    CommitEvents(*db_, 5, 2, &seq);
    int port = 0;
    if (GetParam().peer == Peer::kSilent) {
      auto silent = SilentServer::Start();
      ASSERT_OK(silent);
      silent_ = std::move(silent).value();
      port = silent_->port();
    } else {
      port = FreePort();
    }
    const std::string host = "127.0.0.1:" + std::to_string(port);
    const std::string& scheme = GetParam().scheme;
    if (scheme == "amqp") {
      sink_ = "amqp://guest:guest@" + host + "/%2F/orders";
    } else if (scheme == "http" || scheme == "https") {
      sink_ = scheme + "://" + host + "/hooks/{aggregate_type}";
    } else if (scheme == "file") {
      // Unreachable: a directory that does not exist; silent: a FIFO whose reader never reads.
      if (GetParam().peer == Peer::kSilent) {
        const std::string fifo = db_->dir.File("events.fifo");
        ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
        fifo_reader_ = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        ASSERT_GE(fifo_reader_, 0);
        // Fill the pipe: the reader has stopped taking anything.
        const int writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        ASSERT_GE(writer, 0);
        const std::string chunk(4096, '\n');
        while (::write(writer, chunk.data(), chunk.size()) > 0) {
        }
        ASSERT_EQ(errno, EAGAIN);
        ::close(writer);
        sink_ = "file://" + fifo;
      } else {
        sink_ = "file://" + db_->dir.File("missing/events.jsonl");
      }
    } else {
      sink_ = scheme + "://" + host + "/orders";
    }
  }
  void TearDown() override {
    if (fifo_reader_ >= 0) ::close(fifo_reader_);
  }

  // Something of the sink was tried: a connection reached the silent server, or the relay got
  // past opening the sink.
  bool SinkTried(const std::string& log) const {
    if (silent_ != nullptr && silent_->accepted() > 0) return true;
    return log.find("connected to source") != std::string::npos;
  }

  std::unique_ptr<TestDb> db_;
  std::unique_ptr<SilentServer> silent_;
  int fifo_reader_ = -1;
  std::string sink_;
};

TEST_P(SinkLiveness, OnceFailsWithinItsDeliveryTimeoutWithOneLine) {
  const TimePoint start = Clock::Real().Now();
  CommandResult r = RunCourier(
      {"relay", "--source", db_->url, "--sink", sink_, "--once", "--delivery-timeout", "2s"},
      Duration(120000));
  const Duration took = std::chrono::duration_cast<Duration>(Clock::Real().Now() - start);
  EXPECT_LT(took, kDeliveryTimeout + kSlack) << r.err;
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.exit_code, -1) << "killed after 120 s: " << r.err;
  // One line says why, the last one.
  size_t errors = 0;
  for (size_t pos = 0; (pos = r.err.find("courier: error: ", pos)) != std::string::npos; ++pos) {
    ++errors;
  }
  EXPECT_EQ(errors, 1u) << r.err;
  const size_t last = r.err.rfind('\n', r.err.size() - 2);
  EXPECT_EQ(r.err.compare(last == std::string::npos ? 0 : last + 1, 16, "courier: error: "), 0)
      << r.err;
  EXPECT_EQ(db_->Count("courier_outbox"), 5) << "nothing is deleted without an ack";
}

TEST_P(SinkLiveness, DaemonStopsOnSigtermWithinItsShutdownTimeout) {
  TempDir dir;
  auto relay = SpawnCourier({"relay", "--source", db_->url, "--sink", sink_, "--poll-interval",
                             "20ms", "--shutdown-timeout", "2s"},
                            dir.File("log"));
  ASSERT_OK(relay);
  const std::string log = dir.File("log");
  if (GetParam().scheme == "file" && GetParam().peer == Peer::kUnreachable) {
    // A file that cannot be created is a setting to fix: the daemon stops at once.
    EXPECT_EQ(relay->Wait(Duration(30000)), std::optional<int>(2)) << ReadFile(log);
    return;
  }
  ASSERT_TRUE(WaitUntil([&] { return SinkTried(ReadFile(log)); })) << ReadFile(log);
  const TimePoint start = Clock::Real().Now();
  relay->Signal(SIGTERM);
  const std::optional<int> code = relay->Wait(kShutdownTimeout + kSlack + Duration(20000));
  const Duration took = std::chrono::duration_cast<Duration>(Clock::Real().Now() - start);
  ASSERT_TRUE(code.has_value()) << "still running 32 s after SIGTERM:\n" << ReadFile(log);
  EXPECT_EQ(*code, 0) << ReadFile(log);
  EXPECT_LT(took, kShutdownTimeout + kSlack) << ReadFile(log);
  EXPECT_EQ(db_->Count("courier_outbox"), 5) << "nothing is deleted without an ack";
}

INSTANTIATE_TEST_SUITE_P(
    EveryScheme, SinkLiveness,
    ::testing::Values(
        LivenessCase{"kafka", Peer::kUnreachable}, LivenessCase{"kafka", Peer::kSilent},
        LivenessCase{"redis", Peer::kUnreachable}, LivenessCase{"redis", Peer::kSilent},
        LivenessCase{"redis-cache", Peer::kUnreachable}, LivenessCase{"redis-cache", Peer::kSilent},
        LivenessCase{"nats", Peer::kUnreachable}, LivenessCase{"nats", Peer::kSilent},
        LivenessCase{"amqp", Peer::kUnreachable}, LivenessCase{"amqp", Peer::kSilent},
        LivenessCase{"http", Peer::kUnreachable}, LivenessCase{"http", Peer::kSilent},
        LivenessCase{"https", Peer::kUnreachable}, LivenessCase{"https", Peer::kSilent},
        LivenessCase{"file", Peer::kUnreachable}, LivenessCase{"file", Peer::kSilent}),
    CaseName);

}  // namespace
}  // namespace courier::test
