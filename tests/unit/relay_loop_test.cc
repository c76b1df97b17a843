// The relay loop's own logic (relay/relay.cc) against an in-memory outbox and sink under a
// fake clock: order per aggregate, retry with backoff until acked, refusals parked with their
// aggregate held behind them, checkpoints only after acks, draining on shutdown. No database,
// no broker and no sleeping: time moves only when the relay waits on the clock.
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <thread>

#include "core/fault_points.h"
#include "relay/relay_internal.h"
#include "stores/leadership.h"
#include "stores/postgres_lease.h"
#include "support/fake_clock.h"
#include "support/matchers.h"
#include "unit/relay_fakes.h"

namespace courier::test {
namespace {

// Records the fault points reached and, at each, what was still in the outbox.
class RecordingFaultPoints final : public FaultPoints {
 public:
  explicit RecordingFaultPoints(World& world) : w_(world) {}
  void Reached(std::string_view name) override {
    std::lock_guard<std::mutex> lock(mu_);
    reached.emplace_back(name, w_.pending());
  }
  std::vector<std::pair<std::string, size_t>> Reached() {
    std::lock_guard<std::mutex> lock(mu_);
    return reached;
  }

 private:
  World& w_;
  std::mutex mu_;
  std::vector<std::pair<std::string, size_t>> reached;  // guarded by mu_
};

class RelayLoopTest : public ::testing::Test {
 protected:
  RelayLoopTest() {
    options_.clock = &clock_;
    options_.poll_interval = Duration(100);
    options_.batch_size = 10;
    options_.backoff_initial = Duration(200);
    options_.backoff_max = Duration(30000);
  }
  ~RelayLoopTest() override { (void)Stop(); }

  void Start() {
    relay_ = MakeTestRelay(options_, world_);
    thread_ = std::thread([this] { result_ = relay_->Run(); });
  }

  // Moves the fake time to the relay's next wake-up each time it waits, until `done` holds.
  // Fails after 5 s of real time (a relay that neither progresses nor waits).
  bool RunUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      if (clock_.WaitForSleepers(1, Duration(20))) clock_.AdvanceToNextWakeup();
    }
    return done();
  }

  Status Stop() {
    if (!thread_.joinable()) return result_;
    relay_->RequestStop();
    thread_.join();
    return result_;
  }

  FakeClock clock_;
  World world_;
  RelayOptions options_;
  std::unique_ptr<Relay> relay_;
  std::thread thread_;
  Status result_;
};

TEST_F(RelayLoopTest, DeliversEachAggregateInOrderAndCheckpointsEveryEvent) {
  for (int i = 0; i < 30; ++i) world_.Add("a" + std::to_string(i % 3));
  Start();
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  ASSERT_OK(Stop());
  for (int a = 0; a < 3; ++a) {
    std::vector<std::string> expected;
    for (int i = a; i < 30; i += 3) expected.push_back("e" + std::to_string(i + 1));
    EXPECT_EQ(world_.SentOf("a" + std::to_string(a)), expected);
  }
  EXPECT_EQ(world_.sent.size(), 30u) << "each event once";
  EXPECT_EQ(world_.checkpoints.size(), 3u) << "three batches of ten";
  EXPECT_TRUE(world_.checkpointed_unacked.empty());
  EXPECT_EQ(relay_->stats().published, 30);
}

TEST_F(RelayLoopTest, RetriesWithBackoffUntilTheSinkAcks) {
  world_.answer = [](const Event&, int attempt) {
    return attempt <= 4 ? RetriableError("broker away") : Status::Ok();
  };
  world_.Add("a");
  const TimePoint start = clock_.Now();
  Start();
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  ASSERT_OK(Stop());
  EXPECT_EQ(world_.attempts["e1"], 5);
  EXPECT_EQ(relay_->stats().retries, 4);
  EXPECT_EQ(relay_->stats().published, 1);
  // Delays drawn from [cap/2, cap] with caps 200, 400, 800, 1600 ms.
  const auto waited = std::chrono::duration_cast<Duration>(clock_.Now() - start);
  EXPECT_GE(waited, Duration(100 + 200 + 400 + 800));
  EXPECT_LE(waited, Duration(200 + 400 + 800 + 1600 + 100)) << "plus one poll interval at most";
  // Every failed attempt left the event in the outbox; the one checkpoint holds it once acked.
  std::vector<std::vector<int64_t>> with_event;
  for (const auto& c : world_.checkpoints) {
    if (!c.empty()) with_event.push_back(c);
  }
  EXPECT_EQ(with_event, (std::vector<std::vector<int64_t>>{{1}}));
  EXPECT_TRUE(world_.checkpointed_unacked.empty());
}

TEST_F(RelayLoopTest, BackoffIsCappedAtItsMaximum) {
  options_.backoff_max = Duration(1000);
  world_.answer = [](const Event&, int attempt) {
    return attempt <= 10 ? RetriableError("broker away") : Status::Ok();
  };
  world_.Add("a");
  const TimePoint start = clock_.Now();
  Start();
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  ASSERT_OK(Stop());
  const auto waited = std::chrono::duration_cast<Duration>(clock_.Now() - start);
  EXPECT_LE(waited, Duration(10 * 1000 + 100));
}

// A refused event is parked; its aggregate's later events are held behind it, in this batch
// and in later ones, while the other aggregates flow. Queued for retry and accepted, it goes
// out again before the events held behind it.
TEST_F(RelayLoopTest, ARefusedEventIsParkedAndItsAggregateHeldBehindIt) {
  bool refuse = true;
  world_.answer = [&](const Event& e, int) {
    return e.event_id == "e2" && refuse ? RejectedError("too large") : Status::Ok();
  };
  world_.Add("a");  // e1
  world_.Add("a");  // e2: refused
  world_.Add("b");  // e3
  world_.Add("a");  // e4: held
  Start();
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  world_.Add("a");  // e5: held, a later batch
  world_.Add("b");  // e6
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  EXPECT_EQ(world_.SentOf("a"), (std::vector<std::string>{"e1", "e2"}));
  EXPECT_EQ(world_.SentOf("b"), (std::vector<std::string>{"e3", "e6"}));
  {
    std::lock_guard<std::mutex> lock(world_.mu);
    ASSERT_EQ(world_.dead_letters.size(), 3u);
    EXPECT_EQ(world_.dead_letters[0].event.event_id, "e2");
    EXPECT_EQ(world_.dead_letters[0].status, kParked);
    EXPECT_EQ(world_.dead_letters[0].error, "too large");
    EXPECT_EQ(world_.dead_letters[1].event.event_id, "e4");
    EXPECT_EQ(world_.dead_letters[1].status, kHeld);
    EXPECT_EQ(world_.dead_letters[2].event.event_id, "e5");
    EXPECT_EQ(world_.dead_letters[2].status, kHeld);
  }
  EXPECT_EQ(relay_->stats().dead_lettered, 1);
  EXPECT_EQ(relay_->stats().held, 2);

  {
    std::lock_guard<std::mutex> lock(world_.mu);
    refuse = false;
    world_.dead_letters[0].status = kRetry;  // courier dead-letters retry
  }
  ASSERT_TRUE(RunUntil([&] {
    std::lock_guard<std::mutex> lock(world_.mu);
    return world_.dead_letters.empty();
  }));
  world_.Add("a");  // e7: the aggregate flows again
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  ASSERT_OK(Stop());
  EXPECT_EQ(world_.SentOf("a"), (std::vector<std::string>{"e1", "e2", "e2", "e4", "e5", "e7"}));
  EXPECT_EQ(relay_->stats().republished, 3);
}

TEST_F(RelayLoopTest, UnderTheSkipPolicyARefusedEventHoldsNothingBack) {
  options_.dead_letter_policy = RelayOptions::DeadLetterPolicy::kSkip;
  world_.answer = [](const Event& e, int) {
    return e.event_id == "e1" ? RejectedError("malformed") : Status::Ok();
  };
  world_.Add("a");
  world_.Add("a");
  Start();
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  ASSERT_OK(Stop());
  EXPECT_EQ(world_.SentOf("a"), (std::vector<std::string>{"e1", "e2"}));
  std::lock_guard<std::mutex> lock(world_.mu);
  ASSERT_EQ(world_.dead_letters.size(), 1u);
  EXPECT_EQ(world_.dead_letters[0].status, kSkipped);
}

// An event whose ack failed is not checkpointed, nor are its aggregate's later events even
// if acked (they go out again after it); other aggregates' acked events are.
TEST_F(RelayLoopTest, ChecksPointsOnlyWhatTheSinkAcked) {
  world_.answer = [](const Event& e, int attempt) {
    return e.event_id == "e1" && attempt == 1 ? RetriableError("timed out") : Status::Ok();
  };
  world_.Add("a");  // e1: not acked the first time
  world_.Add("a");  // e2: not handed over behind it
  world_.Add("b");  // e3
  RecordingFaultPoints points(world_);
  options_.fault_points = &points;
  Start();
  ASSERT_TRUE(RunUntil([&] { return world_.pending() == 0; }));
  ASSERT_OK(Stop());
  ASSERT_GE(world_.checkpoints.size(), 2u);
  EXPECT_EQ(world_.checkpoints[0], (std::vector<int64_t>{3}));
  EXPECT_EQ(world_.checkpoints[1], (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(world_.checkpointed_unacked.empty());
  EXPECT_EQ(world_.SentOf("a"), (std::vector<std::string>{"e1", "e1", "e2"}));
  // Between the sink's acks and the checkpoint the rows are all still there: a crash at that
  // point publishes them again, it loses none.
  const auto reached = points.Reached();
  ASSERT_GE(reached.size(), 4u);
  EXPECT_EQ(reached[0], (std::pair<std::string, size_t>{"relay-after-publish", 3}));
  EXPECT_EQ(reached[1], (std::pair<std::string, size_t>{"relay-after-checkpoint", 2}));
  EXPECT_EQ(reached[2], (std::pair<std::string, size_t>{"relay-after-publish", 2}));
  EXPECT_EQ(reached[3], (std::pair<std::string, size_t>{"relay-after-checkpoint", 0}));
}

// A stop requested while a batch waits for its acks lets the acks come in and checkpoints
// them before Run() returns.
TEST_F(RelayLoopTest, ShutdownDrainsTheBatchInFlight) {
  std::mutex gate_mu;
  std::condition_variable gate;
  bool in_publish = false, release = false;
  world_.on_publish = [&] {
    std::unique_lock<std::mutex> lock(gate_mu);
    in_publish = true;
    gate.notify_all();
    gate.wait(lock, [&] { return release; });
  };
  for (int i = 0; i < 5; ++i) world_.Add("a");
  Start();
  {
    std::unique_lock<std::mutex> lock(gate_mu);
    ASSERT_TRUE(gate.wait_for(lock, std::chrono::seconds(5), [&] { return in_publish; }));
  }
  relay_->RequestStop();
  {
    std::lock_guard<std::mutex> lock(gate_mu);
    release = true;
  }
  gate.notify_all();
  thread_.join();
  ASSERT_OK(result_);
  EXPECT_EQ(world_.pending(), 0u) << "the acked batch was checkpointed before stopping";
  EXPECT_EQ(relay_->stats().published, 5);
  EXPECT_EQ(relay_->stats().state, RelayStats::State::kStopped);
}

// A stop requested while the relay backs off after a failure ends the wait at once.
TEST_F(RelayLoopTest, StopEndsTheBackoffWait) {
  world_.answer = [](const Event&, int) { return RetriableError("broker away"); };
  world_.Add("a");
  Start();
  ASSERT_TRUE(clock_.WaitForSleepers(1));
  const TimePoint before = clock_.Now();
  ASSERT_OK(Stop());
  EXPECT_EQ(clock_.Now(), before) << "stopping needed no time to pass";
  EXPECT_EQ(world_.pending(), 1u) << "the unacked event stays for the next run";
}

TEST_F(RelayLoopTest, OnceModeEndsWithTheFirstFailure) {
  options_.once = true;
  world_.answer = [](const Event&, int) { return RetriableError("broker away"); };
  world_.Add("a");
  relay_ = MakeTestRelay(options_, world_);
  const Status st = relay_->Run();
  EXPECT_EQ(st.code(), StatusCode::kRetriable);
  EXPECT_EQ(st.message(), "1 of 1 events not acked by fake sink: broker away");
  EXPECT_EQ(clock_.sleeps(), 0) << "no backoff in once mode";
}

// The source's poll interval and the lease default to the relay's own (one constant each in
// courier/relay.h), so a part built without RelayOptions behaves as the relay would.
TEST(RelayDefaults, SourceAndLeaseTakeTheRelaysDefaults) {
  EXPECT_EQ(SourceOptions{}.poll_interval, RelayOptions{}.poll_interval);
  EXPECT_EQ(LeaseOptions{}.lease, RelayOptions{}.lease);
  EXPECT_EQ(LeadershipOptions{}.lease, RelayOptions{}.lease);
}

}  // namespace
}  // namespace courier::test
