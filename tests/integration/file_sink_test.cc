// The JSONL file sink: every line of the file is a whole event, whatever write fails part way.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// The event ids of a JSONL file; fails the test for any line that is not a JSON object with
// an event_id, and for a last line without its newline.
std::multiset<std::string> ParseEveryLine(const std::string& path) {
  const std::string text = ReadFile(path);
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "the file ends inside a line";
  std::multiset<std::string> ids;
  std::stringstream lines(text);
  int line_number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_number;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("event_id")) {
      ADD_FAILURE() << "line " << line_number << " is not an event: " << line.substr(0, 200);
      continue;
    }
    ids.insert(j["event_id"].get<std::string>());
  }
  return ids;
}

Status SetFileSizeLimit(pid_t pid, rlim_t soft) {
  const struct rlimit limit { soft, RLIM_INFINITY };
  if (::prlimit(pid, RLIMIT_FSIZE, &limit, nullptr) != 0) {
    return InternalError(std::string("prlimit: ") + std::strerror(errno));
  }
  return Status::Ok();
}

// A real short write: the relay runs under a file size limit (RLIMIT_FSIZE), so the write
// that crosses it stores part of the batch, up to the limit, and then fails with EFBIG. The
// torn line must be gone before anything is retried; once the limit is raised the backlog
// drains, and every committed event is in a line that parses.
TEST(FileSink, ShortWriteIsCutBackToTheLastCompleteLineAndRetried) {
  TestDb db = TestDb::Make(true);  // PostgreSQL: the relay writes no local file but these
  TempDir dir;
  const std::string out = dir.File("events.jsonl");
  auto relay = SpawnCourier({"relay", "--source", db.url, "--sink", "file://" + out,
                             "--poll-interval", "20ms", "--batch-size", "150"},
                            dir.File("log"));
  ASSERT_OK(relay);
  // The limit also applies to the relay's log file, which stays far below it.
  constexpr rlim_t kLimit = 64 * 1024;
  ASSERT_OK(SetFileSizeLimit(relay->pid(), kLimit));
  int64_t seq = 1;
  std::set<std::string> ids = CommitEvents(db, 100, 7, &seq);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }))
      << ReadFile(dir.File("log"));
  const size_t first_size = ReadFile(out).size();
  ASSERT_LT(first_size, kLimit / 2);
  // Enough to cross the limit inside a batch.
  const std::set<std::string> more = CommitEvents(db, 400, 7, &seq);
  ids.insert(more.begin(), more.end());
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(dir.File("log")).find("File too large") != std::string::npos;
  })) << ReadFile(dir.File("log"));
  EXPECT_GT(db.Count("courier_outbox"), 0) << "nothing past the limit can have been acked";
  // While the disk is "full", the file still ends with a complete line.
  ParseEveryLine(out);
  ASSERT_OK(SetFileSizeLimit(relay->pid(), RLIM_INFINITY));
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }))
      << ReadFile(dir.File("log"));
  const std::multiset<std::string> written = ParseEveryLine(out);
  for (const std::string& id : ids) {
    EXPECT_GE(written.count(id), 1u) << "event " << id << " is in no line that parses";
  }
  EXPECT_GT(ReadFile(out).size(), kLimit);
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(20000)), std::optional<int>(0));
}

// A crash in the middle of a write leaves an incomplete last line; the next relay cuts it off
// before appending, and says so.
TEST(FileSink, OpenCutsAnIncompleteLastLine) {
  TestDb db = TestDb::Make(false);
  int64_t seq = 1;
  const std::set<std::string> first = CommitEvents(db, 3, 1, &seq);
  const std::string out = db.dir.File("events.jsonl");
  ASSERT_EQ(
      RunCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--once"}).exit_code, 0);
  const std::string complete = ReadFile(out);
  std::ofstream(out, std::ios::app) << R"({"event_id":"0190-torn","aggregate_type":"ord)";
  const std::set<std::string> second = CommitEvents(db, 3, 1, &seq);
  CommandResult r = RunCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--once"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("cutting an incomplete last line off the file"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bytes=45"), std::string::npos) << r.err;
  const std::string text = ReadFile(out);
  EXPECT_EQ(text.substr(0, complete.size()), complete) << "complete lines are kept";
  const std::multiset<std::string> written = ParseEveryLine(out);
  EXPECT_EQ(written.size(), 6u);
  for (const std::string& id : first) EXPECT_EQ(written.count(id), 1u);
  for (const std::string& id : second) EXPECT_EQ(written.count(id), 1u);

  // A file holding nothing but a fragment is emptied.
  const std::string fragment = db.dir.File("fragment.jsonl");
  std::ofstream(fragment) << R"({"event_id":"0190-torn")";
  const std::set<std::string> third = CommitEvents(db, 2, 1, &seq);
  r = RunCourier({"relay", "--source", db.url, "--sink", "file://" + fragment, "--once"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::multiset<std::string> fragment_ids = ParseEveryLine(fragment);
  EXPECT_EQ(fragment_ids, std::multiset<std::string>(third.begin(), third.end()));
}

// Another process in the middle of writing a batch (it holds the file's lock, its last line
// not finished yet): the relay waits for it instead of cutting that line off as a crash's,
// and appends after it once it is whole.
TEST(FileSink, ALineAnotherProcessIsWritingIsNotCutAsTorn) {
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 3, 1, &seq);
  const std::string out = db.dir.File("events.jsonl");
  const int fd = ::open(out.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  const std::string other =
      R"({"aggregate_id":"1","aggregate_type":"o","created_at_us":0,"event_id":"0190-other",)"
      R"("event_type":"E","headers":{},"payload":{}})"
      "\n";
  ASSERT_EQ(::write(fd, other.data(), 40), 40);  // half of its line
  const std::string log = db.dir.File("relay.log");
  auto relay = SpawnCourier(
      {"relay", "--source", db.url, "--sink", "file://" + out, "--once", "--log-level", "debug"},
      log);
  ASSERT_OK(relay);
  std::optional<int> code;
  EXPECT_TRUE(WaitUntil([&] {
    return ReadFile(log).find("waiting for the file's lock") != std::string::npos ||
           (code = relay->Wait(Duration(1))).has_value();
  })) << ReadFile(log);
  EXPECT_FALSE(code.has_value()) << "the relay did not wait for the writer: " << ReadFile(log);
  ASSERT_EQ(::write(fd, other.data() + 40, other.size() - 40),
            static_cast<ssize_t>(other.size() - 40));
  ::close(fd);  // and its lock
  if (!code) code = relay->Wait(Duration(30000));
  ASSERT_EQ(code, std::optional<int>(0)) << ReadFile(log);
  const std::multiset<std::string> written = ParseEveryLine(out);
  EXPECT_EQ(written.count("0190-other"), 1u) << ReadFile(out);
  for (const std::string& id : ids) EXPECT_EQ(written.count(id), 1u);
  EXPECT_EQ(ReadFile(log).find("cutting an incomplete last line"), std::string::npos);
}

// Two relays on one file (here shards; a standby taking over, or another outbox, alike):
// one writes big batches while the other starts again and again. A relay that took the other
// one's batch, being written, for a crash's torn line cut it off after it was acked (and its
// rows deleted); under the file's lock each batch is whole before anyone looks at the end.
TEST(FileSink, RelaysSharingTheFileNeverCutEachOthersBatches) {
  TestDb db = TestDb::Make(true);
  const std::string out = db.dir.File("events.jsonl");
  // 1 600 events of ~16 kB, over 64 aggregates (both shards get some).
  ASSERT_OK(db.Transaction(
      {"INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload)"
       " SELECT gen_random_uuid(), 'order', 'agg-' || (g % 64), 'Happened',"
       " json_build_object('seq', g, 'pad', repeat('p', 16000)) FROM generate_series(1, 1600) g"}));
  auto rows = PgQuery(db.url, "SELECT event_id::text FROM courier_outbox");
  ASSERT_OK(rows);
  const std::set<std::string> ids(rows->begin(), rows->end());
  ASSERT_EQ(ids.size(), 1600u);
  auto big = SpawnCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--shard", "0/2",
                           "--batch-size", "400", "--once"},
                          db.dir.File("shard0.log"));
  ASSERT_OK(big);
  int starts = 0;
  std::optional<int> code;
  while (!(code = big->Wait(Duration(1)))) {
    CommandResult r = RunCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--shard",
                                  "1/2", "--batch-size", "400", "--once"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ++starts;
  }
  ASSERT_EQ(code, std::optional<int>(0)) << ReadFile(db.dir.File("shard0.log"));
  CommandResult rest = RunCourier(
      {"relay", "--source", db.url, "--sink", "file://" + out, "--shard", "1/2", "--once"});
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_GE(starts, 1);
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  const std::multiset<std::string> written = ParseEveryLine(out);
  int64_t lost = 0;
  for (const std::string& id : ids) lost += written.count(id) == 0 ? 1 : 0;
  EXPECT_EQ(lost, 0) << "events acked and deleted, then cut off the file";
  EXPECT_EQ(ReadFile(db.dir.File("shard0.log")).find("cutting an incomplete last line"),
            std::string::npos);
}

// A database in LATIN1: the relay reads its text converted to UTF-8, by polling and from the
// write-ahead log alike. Read as LATIN1's own bytes, "café" and "cafè" both became "caf\ufffd"
// (one aggregate), the payload bytes, and the headers a dead letter.
TEST(FileSink, TextOfALatin1DatabaseIsWrittenAsUtf8) {
  const std::string name = "latin1_" + std::to_string(::getpid());
  ASSERT_OK(PgQuery(SharedPostgres().Url("postgres"),
                    "CREATE DATABASE " + name +
                        " ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"));
  TestDb db;
  db.url = SharedPostgres().Url(name);
  ASSERT_OK(Migrate(db.url, TableNames{}));
  for (const std::string mode : {"poll", "cdc"}) {
    SCOPED_TRACE(mode);
    const std::string out = db.dir.File(mode + ".jsonl");
    const std::vector<std::string> relay = {"relay",         "--source", db.url, "--sink",
                                            "file://" + out, "--mode",   mode,   "--once"};
    ASSERT_EQ(RunCourier(relay).exit_code, 0);  // CDC: the slot, before the rows
    ASSERT_OK(db.Transaction(
        {"INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload,"
         " headers) VALUES (gen_random_uuid(), 'order', 'café', 'Happened', '{\"name\":\"José\"}',"
         " '{\"who\":\"Zoë\"}'), (gen_random_uuid(), 'order', 'cafè', 'Happened', '{}', '{}')"}));
    CommandResult r = RunCourier(relay);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::set<std::string> aggregates;
    std::stringstream lines(ReadFile(out));
    for (std::string line; std::getline(lines, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      aggregates.insert(j["aggregate_id"].get<std::string>());
      if (j["aggregate_id"] == "café") {
        EXPECT_EQ(j["payload"]["name"], "José") << line;
        EXPECT_EQ(j["headers"]["who"], "Zoë") << line;
      }
    }
    EXPECT_EQ(aggregates, (std::set<std::string>{"café", "cafè"}));
    EXPECT_EQ(db.Count("courier_dead_letter"), 0);
    EXPECT_EQ(db.Count("courier_outbox"), 0);
  }
}

}  // namespace
}  // namespace courier::test
