// The JSONL file sink: every line of the file is a whole event, whatever write fails part way.
#include <signal.h>
#include <sys/resource.h>

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

}  // namespace
}  // namespace courier::test
