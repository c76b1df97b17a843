// Hostile tables: outboxes made by hand or written by other programs, with NULLs, wrong
// types, missing or extra columns and impossible times, and roles lacking privileges, for
// PostgreSQL polling, CDC and SQLite. In every case the good rows are delivered, a bad row is
// parked with a reason naming its id and column, or, when the table or role itself is wrong,
// the relay stops with one line naming what to fix and exit 2: no crash, no retry storm.
#include <mutex>
#include <thread>

#include "core/encoding.h"
#include "relay/relay_internal.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

enum class Kind { kPoll, kCdc, kSqlite };

std::string KindName(const ::testing::TestParamInfo<Kind>& info) {
  switch (info.param) {
    case Kind::kPoll:
      return "Poll";
    case Kind::kCdc:
      return "Cdc";
    case Kind::kSqlite:
      return "Sqlite";
  }
  return "?";
}

// Events in a file sink's JSONL output.
std::vector<Event> ReadSinkFile(const std::string& path) {
  std::vector<Event> out;
  std::istringstream lines(ReadFile(path));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    auto e = EventFromJsonLine(line);
    EXPECT_OK(e);
    if (e.ok()) out.push_back(*e);
  }
  return out;
}

std::map<std::string, int> CountById(const std::vector<Event>& events) {
  std::map<std::string, int> n;
  for (const Event& e : events) ++n[e.event_id];
  return n;
}

int CountLines(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

// The URL of the same database as role `role`.
std::string AsRole(const std::string& url, const std::string& role) {
  std::string out = url;
  out.replace(out.find("postgres@"), 9, role + "@");
  return out;
}

std::string DbName(const std::string& url) { return url.substr(url.rfind('/') + 1); }

// A database (PostgreSQL or SQLite) with nothing in it yet; SQL run in autocommit.
class HostileDb {
 public:
  explicit HostileDb(bool postgres) {
    db_.postgres = postgres;
    if (postgres) {
      auto url = SharedPostgres().NewDatabase("hostile");
      EXPECT_OK(url);
      db_.url = url.ok() ? *url : "";
    } else {
      db_.url = "sqlite://" + db_.dir.File("app.db");
      EXPECT_OK(SqliteOpen(db_.dir.File("app.db"), /*create=*/true));
    }
  }
  const std::string& url() const { return db_.url; }
  bool postgres() const { return db_.postgres; }
  Status Run(const std::string& sql) const { return db_.Transaction({sql}); }
  // The first column of the first row, as text ("" for none or NULL).
  std::string Query1(const std::string& sql) const {
    if (db_.postgres) {
      auto rows = PgQuery(db_.url, sql);
      EXPECT_OK(rows);
      return rows.ok() && !rows->empty() ? (*rows)[0] : "";
    }
    auto db = SqliteOpen(db_.url.substr(9), false);
    EXPECT_OK(db);
    if (!db.ok()) return "";
    auto stmt = SqlitePrepare(db->get(), sql);
    EXPECT_OK(stmt);
    if (!stmt.ok() || sqlite3_step(stmt->get()) != SQLITE_ROW) return "";
    const unsigned char* text = sqlite3_column_text(stmt->get(), 0);
    return text == nullptr ? "" : reinterpret_cast<const char*>(text);
  }
  int64_t Count(const std::string& table_and_where) const { return db_.Count(table_and_where); }

 private:
  TestDb db_;
};

// An outbox made by hand with every column nullable, as another tool might make it.
constexpr const char* kPgLooseOutbox =
    "CREATE TABLE courier_outbox (id bigserial PRIMARY KEY, event_id uuid,"
    " aggregate_type text, aggregate_id text, event_type text, payload json, headers jsonb,"
    " created_at timestamptz DEFAULT now(), published_at timestamptz)";
constexpr const char* kSqliteLooseOutbox =
    "CREATE TABLE courier_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT,"
    " aggregate_type TEXT, aggregate_id TEXT, event_type TEXT, payload BLOB, headers TEXT,"
    " created_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), published_at TEXT)";

class HostileRows : public ::testing::TestWithParam<Kind> {};

// Rows other programs could write: each bad one is parked with its reason and holds back its
// aggregate's later event; every good one (a NULL payload too: an event without a body) is
// delivered once.
TEST_P(HostileRows, BadRowsAreParkedWithTheirReasonAndTheRestFlows) {
  const Kind kind = GetParam();
  HostileDb db(kind != Kind::kSqlite);
  ASSERT_OK(db.Run(kind == Kind::kSqlite ? kSqliteLooseOutbox : kPgLooseOutbox));
  CommandResult migrate =
      RunCourier({"migrate", "--source", db.url(), "--mode", kind == Kind::kCdc ? "cdc" : "poll"});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.err;

  struct Bad {
    std::string column;  // of the reason
    std::string values;  // event_id, aggregate_type, aggregate_id, event_type, headers, created_at
    std::string reason;  // after "outbox row N: column "
  };
  const std::string now = kind == Kind::kSqlite ? "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')" : "now()";
  auto id = [] { return "'" + NewUuidV7() + "'"; };
  std::vector<Bad> bad = {
      {"created_at", id() + ", 'order', 'bad-null-time', 'Made', NULL, NULL", "created_at is NULL"},
      {"created_at", id() + ", 'order', 'bad-infinity', 'Made', NULL, 'infinity'",
       "created_at is 'infinity', not a finite time"},
      {"created_at", id() + ", 'order', 'bad-minus-infinity', 'Made', NULL, '-infinity'",
       "created_at is '-infinity', not a finite time"},
      {"aggregate_type", id() + ", NULL, 'bad-type', 'Made', NULL, " + now,
       "aggregate_type is NULL"},
      {"aggregate_id", id() + ", 'order', NULL, 'Made', NULL, " + now, "aggregate_id is NULL"},
      {"event_type", id() + ", 'order', 'bad-event-type', NULL, NULL, " + now,
       "event_type is NULL"},
      {"headers", id() + ", 'order', 'bad-headers', 'Made', '[1,2]', " + now,
       "headers: headers must be a JSON object"},
      {"event_id", "NULL, 'order', 'bad-event-id', 'Made', NULL, " + now, "event_id is NULL"},
  };
  if (kind == Kind::kSqlite) {
    // SQLite keeps whatever it is given: text that is no time, an id that is no UUID.
    bad.push_back({"created_at", id() + ", 'order', 'bad-text-time', 'Made', NULL, 'yesterday'",
                   "created_at is 'yesterday', not a finite time"});
    bad.push_back({"event_id", "'not-a-uuid', 'order', 'bad-uuid', 'Made', NULL, " + now,
                   "event_id 'not-a-uuid' is not a UUID"});
  }
  const std::string insert =
      "INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, headers,"
      " created_at, payload) VALUES (";
  std::set<std::string> good;
  int64_t seq = 1;
  auto add_good = [&](const std::string& aggregate, bool null_payload) {
    const std::string event_id = NewUuidV7();
    ASSERT_OK(db.Run(insert + "'" + event_id + "', 'order', '" + aggregate + "', 'Made', NULL, " +
                     now + ", " +
                     (null_payload ? "NULL" : "'{\"seq\":" + std::to_string(seq++) + "}'") + ")"));
    good.insert(event_id);
  };
  add_good("good", false);
  std::vector<std::string> bad_rows;
  for (const Bad& b : bad) {
    ASSERT_OK(db.Run(insert + b.values + ", '{\"seq\":0}')"));
    bad_rows.push_back(db.Query1("SELECT max(id) FROM courier_outbox"));
    add_good("good", false);
  }
  add_good("good", true);
  // Behind a parked row of its aggregate: held, not published.
  const std::string held = NewUuidV7();
  ASSERT_OK(db.Run(insert + "'" + held + "', 'order', 'bad-infinity', 'Made', NULL, " + now +
                   ", '{\"seq\":1}')"));

  TempDir dir;
  std::vector<std::string> args = {
      "relay", "--source", db.url(), "--sink", "file://" + dir.File("out.jsonl"), "--once"};
  if (kind == Kind::kCdc) args.insert(args.end(), {"--mode", "cdc"});
  CommandResult relay = RunCourier(args, Duration(60000));
  ASSERT_EQ(relay.exit_code, 0) << relay.err;

  const std::vector<Event> delivered = ReadSinkFile(dir.File("out.jsonl"));
  const std::map<std::string, int> times = CountById(delivered);
  for (const std::string& g : good) EXPECT_EQ(times.count(g) ? times.at(g) : 0, 1) << g;
  EXPECT_EQ(delivered.size(), good.size()) << "nothing but the good rows, once each";
  for (const Event& e : delivered) {
    EXPECT_EQ(e.aggregate_id, "good");
    EXPECT_EQ(e.aggregate_type, "order");
    EXPECT_EQ(e.event_type, "Made");
  }
  for (size_t i = 0; i < bad.size(); ++i) {
    const std::string reason = "outbox row " + bad_rows[i] + ": column " + bad[i].reason;
    EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'parked' AND outbox_id = " +
                       bad_rows[i] + " AND error LIKE " + QuoteLiteral(reason + "%")),
              1)
        << reason << "; table has: "
        << db.Query1("SELECT error FROM courier_dead_letter WHERE outbox_id = " + bad_rows[i]);
  }
  EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'held' AND event_id = '" + held + "'"), 1);
  EXPECT_EQ(db.Count("courier_outbox"), 0);
}

INSTANTIATE_TEST_SUITE_P(Sources, HostileRows,
                         ::testing::Values(Kind::kPoll, Kind::kCdc, Kind::kSqlite), KindName);

// A role that may read the outbox but not delete from it would publish a batch, fail to
// checkpoint it and publish it again, forever. The relay checks its privileges first and
// stops with one line saying what to grant, before publishing anything.
class MissingPrivilege : public ::testing::TestWithParam<Kind> {};

TEST_P(MissingPrivilege, RoleWithoutDeleteStopsWithOneLineAndExit2) {
  const bool cdc = GetParam() == Kind::kCdc;
  TestDb db = TestDb::Make(true);
  if (cdc) {
    ASSERT_EQ(RunCourier({"migrate", "--source", db.url, "--mode", "cdc"}).exit_code, 0);
  }
  const std::string role = "nodelete_" + DbName(db.url);
  ASSERT_OK(db.Transaction({"CREATE ROLE " + role + " LOGIN" + (cdc ? " REPLICATION" : ""),
                            "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
                            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role,
                            "REVOKE DELETE ON courier_outbox FROM " + role}));
  int64_t seq = 1;
  CommitEvents(db, 20, 4, &seq);
  TempDir dir;
  std::vector<std::string> args = {"relay", "--source", AsRole(db.url, role), "--sink",
                                   "file://" + dir.File("out.jsonl")};
  if (cdc) args.insert(args.end(), {"--mode", "cdc"});
  // A daemon: without the check it would retry until killed at the deadline.
  CommandResult r = RunCourier(args, Duration(30000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot delete from \"courier_outbox\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("GRANT DELETE ON \"courier_outbox\" TO \"" + role + "\""), std::string::npos)
      << r.err;
  EXPECT_EQ(CountLines(r.err, "courier: error:"), 1) << r.err;
  EXPECT_EQ(CountLines(r.err, "retrying"), 0) << r.err;
  EXPECT_TRUE(ReadSinkFile(dir.File("out.jsonl")).empty()) << "nothing published";
  EXPECT_EQ(db.Count("courier_outbox"), 20);
}

INSTANTIATE_TEST_SUITE_P(Sources, MissingPrivilege, ::testing::Values(Kind::kPoll, Kind::kCdc),
                         KindName);

// Acks everything; on its first batch takes DELETE away from the relay's role, as an
// operator might while the relay runs.
class RevokingSink final : public Sink {
 public:
  RevokingSink(std::string admin_url, std::string role)
      : admin_url_(std::move(admin_url)), role_(std::move(role)) {}
  Status Configure() override { return Status::Ok(); }
  Status Open() override { return Status::Ok(); }
  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!revoked_) {
      EXPECT_OK(PgQuery(admin_url_, "REVOKE DELETE ON courier_outbox FROM " + role_));
      revoked_ = true;
    }
    for (const Event& e : batch) ++published_[e.event_id];
    return std::vector<Status>(batch.size(), Status::Ok());
  }
  std::string Describe() const override { return "revoking://"; }
  std::map<std::string, int> published() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return published_;
  }

 private:
  std::string admin_url_;
  std::string role_;
  mutable std::mutex mutex_;
  bool revoked_ = false;                  // guarded by mutex_
  std::map<std::string, int> published_;  // guarded by mutex_
};

// The privilege goes away after the check: the checkpoint fails for good (SQLSTATE 42501),
// and the relay stops with the same line instead of republishing the batch forever. The batch
// went out once (at least once: the rows stay for the next relay).
TEST(HostileCheckpoint, PrivilegeRevokedWhileRunningStopsAfterPublishingTheBatchOnce) {
  TestDb db = TestDb::Make(true);
  const std::string role = "revoked_" + DbName(db.url);
  ASSERT_OK(db.Transaction({"CREATE ROLE " + role + " LOGIN",
                            "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
                            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role}));
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 30, 3, &seq);
  RelayOptions o = TestRelayOptions(AsRole(db.url, role), "revoking://");
  SourceOptions so;
  so.url = o.source_url;
  so.poll_interval = o.poll_interval;
  auto source = MakeSource(so);
  ASSERT_OK(source);
  auto sink = std::make_unique<RevokingSink>(db.url, role);
  RevokingSink* seen = sink.get();
  auto made = MakeRelay(o, std::move(source).value(), std::move(sink));
  ASSERT_OK(made);
  std::unique_ptr<Relay> relay = std::move(made).value();
  std::atomic<bool> done{false};
  Status result;
  std::thread runner([&] {
    result = relay->Run();
    done = true;
  });
  const bool stopped = WaitUntil([&] { return done.load(); }, Duration(20000));
  if (!stopped) relay->RequestStop();
  runner.join();
  ASSERT_TRUE(stopped) << "the relay kept retrying a checkpoint that cannot work";
  EXPECT_EQ(result.code(), StatusCode::kInvalidArgument) << result.ToString();
  EXPECT_NE(result.message().find("GRANT DELETE ON \"courier_outbox\" TO \"" + role + "\""),
            std::string::npos)
      << result.ToString();
  const std::map<std::string, int> published = seen->published();
  EXPECT_EQ(published.size(), ids.size());
  for (const auto& [id, n] : published) EXPECT_EQ(n, 1) << id << " published more than once";
  EXPECT_EQ(db.Count("courier_outbox"), 30) << "nothing checkpointed without the privilege";
}

// The "in_ms" of each "retrying" line of a relay's log, in order.
std::vector<int64_t> RetryDelays(const std::string& log) {
  std::vector<int64_t> delays;
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find("retrying") == std::string::npos) continue;
    const size_t at = line.find("in_ms=");
    if (at == std::string::npos) continue;
    delays.push_back(ParseInt64(line.substr(at + 6, line.find(' ', at) - at - 6)).value_or(-1));
  }
  return delays;
}

// A checkpoint that fails again and again but may work later (its DELETE times out on a row
// another session keeps locked): the relay backs off more each time, as for any failure.
// With checkpoints in flight the failure used to surface one call late, after a success had
// reset the backoff: the batches in flight went out again every ~150 ms, for as long as the
// lock was held. Once the lock goes, everything is delivered.
TEST(HostileCheckpoint, CheckpointThatKeepsFailingBacksOffAndLosesNothing) {
  TestDb db = TestDb::Make(true);
  const std::string role = "timeout_" + DbName(db.url);
  ASSERT_OK(db.Transaction({"CREATE ROLE " + role + " LOGIN",
                            "ALTER ROLE " + role + " SET lock_timeout = '50ms'",
                            "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
                            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role}));
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 300, 5, &seq);
  auto lock = PgConnect(db.url);
  ASSERT_OK(lock);
  ASSERT_OK(PgRun(lock->get(), "BEGIN"));
  auto locked =
      PgExec(lock->get(), "SELECT id FROM courier_outbox ORDER BY id LIMIT 1 FOR KEY SHARE");
  ASSERT_OK(locked);
  const std::string out = db.dir.File("out.jsonl");
  const std::string log = db.dir.File("relay.log");
  auto relay =
      SpawnCourier({"relay", "--source", AsRole(db.url, role), "--sink", "file://" + out,
                    "--batch-size", "20", "--backoff-initial", "50ms", "--backoff-max", "10s"},
                   log);
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] { return RetryDelays(ReadFile(log)).size() >= 4; }, Duration(60000)))
      << ReadFile(log);
  const std::vector<int64_t> delays = RetryDelays(ReadFile(log));
  // The n-th delay is drawn from [50 ms * 2^n / 2, 50 ms * 2^n]: the fourth is over twice the
  // first unless the backoff was reset in between.
  EXPECT_GT(delays[3], 2 * delays[0]) << ReadFile(log);
  ASSERT_OK(PgRun(lock->get(), "COMMIT"));
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }, Duration(60000)))
      << ReadFile(log);
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(20000)).value_or(-1), 0);
  const std::map<std::string, int> published = CountById(ReadSinkFile(out));
  for (const std::string& id : ids) EXPECT_GT(published.count(id), 0u) << id << " was lost";
  EXPECT_EQ(published.size(), ids.size());
}

// A role at its connection limit: the pipeline's extra connection cannot be opened, and the
// relay checkpoints one batch at a time on the connections it has, with a warning, instead of
// republishing the same batches for ever.
TEST(HostileCheckpoint, RoleAtItsConnectionLimitCheckpointsOneBatchAtATime) {
  TestDb db = TestDb::Make(true);
  const std::string role = "limited_" + DbName(db.url);
  // The relay's own: the source's, the lease's and the dead-letter table's.
  ASSERT_OK(db.Transaction({"CREATE ROLE " + role + " LOGIN CONNECTION LIMIT 3",
                            "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
                            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role}));
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 500, 5, &seq);
  const std::string out = db.dir.File("out.jsonl");
  const std::string log = db.dir.File("relay.log");
  auto relay = SpawnCourier(
      {"relay", "--source", AsRole(db.url, role), "--sink", "file://" + out, "--batch-size", "20"},
      log);
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }, Duration(60000)))
      << ReadFile(log);
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(20000)).value_or(-1), 0);
  const std::string text = ReadFile(log);
  EXPECT_NE(text.find("checkpoints commit one batch at a time: no second connection"),
            std::string::npos)
      << text;
  EXPECT_EQ(CountLines(text, "retrying"), 0) << text;
  const std::map<std::string, int> published = CountById(ReadSinkFile(out));
  EXPECT_EQ(published.size(), ids.size());
  for (const auto& [id, n] : published) EXPECT_EQ(n, 1) << id << " published more than once";
}

// SIGTERM while a checkpoint's DELETE waits on a row another session keeps locked (BEGIN;
// SELECT ... FOR UPDATE, left open): the relay waits at most --shutdown-timeout for it, then
// cancels it, says in one line that the checkpoint was abandoned and its events go out again,
// and exits 0, the lock still held. The next relay, once the lock is gone, publishes them:
// every committed event is delivered at least once and the outbox ends empty. The same for
// --once, for checkpoints in flight or one batch at a time, polled or read from the WAL.
struct StopCase {
  const char* name;
  const char* mode;
  const char* in_flight;
  bool once;
};

void PrintTo(const StopCase& c, std::ostream* os) { *os << c.name; }

class StopWhileCheckpointBlocked : public ::testing::TestWithParam<StopCase> {};

TEST_P(StopWhileCheckpointBlocked, StopsWithinTheShutdownTimeoutAndLosesNothing) {
  const StopCase& c = GetParam();
  TestDb db = TestDb::Make(true);
  // CDC: the slot exists before the rows and the lock (creating a slot waits for every open
  // transaction).
  if (std::string(c.mode) == "cdc") {
    CommandResult prepared = RunCourier({"migrate", "--source", db.url, "--mode", "cdc"});
    ASSERT_EQ(prepared.exit_code, 0) << prepared.err;
  }
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 200, 5, &seq);
  auto lock = PgConnect(db.url);
  ASSERT_OK(lock);
  ASSERT_OK(PgRun(lock->get(), "BEGIN"));
  ASSERT_OK(PgExec(lock->get(), "SELECT * FROM courier_outbox ORDER BY id LIMIT 1 FOR UPDATE"));
  const std::string out = db.dir.File("out.jsonl");
  const std::string log = db.dir.File("relay.log");
  std::vector<std::string> args = {"relay",
                                   "--mode",
                                   c.mode,
                                   "--source",
                                   db.url,
                                   "--sink",
                                   "file://" + out,
                                   "--batch-size",
                                   "20",
                                   "--poll-interval",
                                   "10ms",
                                   "--checkpoints-in-flight",
                                   c.in_flight,
                                   "--shutdown-timeout",
                                   "2s"};
  if (c.once) args.push_back("--once");
  auto relay = SpawnCourier(args, log);
  ASSERT_OK(relay);
  // The checkpoint's statement waits for the lock.
  const std::string blocked =
      "pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND"
      " query LIKE 'DELETE%'";
  ASSERT_TRUE(WaitUntil([&] { return db.Count(blocked) > 0; }, Duration(60000))) << ReadFile(log);
  const TimePoint term = Clock::Real().Now();
  relay->Signal(SIGTERM);
  const std::optional<int> code = relay->Wait(Duration(30000));
  const Duration took = std::chrono::duration_cast<Duration>(Clock::Real().Now() - term);
  if (!code) {
    relay->Signal(SIGKILL);
    relay->Wait(Duration(10000));
  }
  const std::string text = ReadFile(log);
  ASSERT_EQ(code, std::optional<int>(0)) << "still waiting on the lock: " << text;
  // 2 s of grace, and the rest of the shutdown on a loaded machine.
  EXPECT_GE(took.count(), 1900) << "the checkpoint was given its grace: " << text;
  EXPECT_LT(took.count(), 12000) << text;
  EXPECT_EQ(CountLines(text, "checkpoint abandoned"), 1) << text;
  EXPECT_NE(text.find("waiting for the checkpoint"), std::string::npos) << text;
  EXPECT_GT(db.Count("courier_outbox"), 0) << "the blocked rows are still there";

  ASSERT_OK(PgRun(lock->get(), "COMMIT"));
  CommandResult last = RunCourier(
      {"relay", "--mode", c.mode, "--source", db.url, "--sink", "file://" + out, "--once"},
      Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  const std::map<std::string, int> published = CountById(ReadSinkFile(out));
  for (const std::string& id : ids) EXPECT_GT(published.count(id), 0u) << id << " was lost";
  EXPECT_EQ(published.size(), ids.size());
}

INSTANTIATE_TEST_SUITE_P(Relays, StopWhileCheckpointBlocked,
                         ::testing::Values(StopCase{"PollInFlight", "poll", "4", false},
                                           StopCase{"PollOneAtATime", "poll", "0", false},
                                           StopCase{"PollOnce", "poll", "4", true},
                                           StopCase{"PollOnceOneAtATime", "poll", "0", true},
                                           StopCase{"CdcInFlight", "cdc", "4", false},
                                           StopCase{"CdcOneAtATime", "cdc", "0", false}),
                         [](const ::testing::TestParamInfo<StopCase>& info) {
                           return std::string(info.param.name);
                         });

// CDC reads the write-ahead log through a replication connection, which needs the role's
// REPLICATION attribute.
TEST(HostileCdc, RoleWithoutReplicationStopsWithOneLineAndExit2) {
  TestDb db = TestDb::Make(true);
  ASSERT_EQ(RunCourier({"migrate", "--source", db.url, "--mode", "cdc"}).exit_code, 0);
  const std::string role = "norepl_" + DbName(db.url);
  ASSERT_OK(db.Transaction({"CREATE ROLE " + role + " LOGIN",
                            "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
                            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role}));
  int64_t seq = 1;
  CommitEvents(db, 5, 1, &seq);
  TempDir dir;
  CommandResult r = RunCourier({"relay", "--source", AsRole(db.url, role), "--sink",
                                "file://" + dir.File("out.jsonl"), "--mode", "cdc"},
                               Duration(30000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("REPLICATION"), std::string::npos) << r.err;
  EXPECT_EQ(CountLines(r.err, "courier: error:"), 1) << r.err;
  EXPECT_EQ(CountLines(r.err, "retrying"), 0) << r.err;
}

// A hand-made outbox whose event_id is text: the dead-letter moves would fail on every
// checkpoint that parks a row. migrate names the column and changes nothing; a relay on a
// table altered after migrate stops with the same line.
TEST(HostileShape, EventIdOfTypeTextIsNamedByMigrateAndRelay) {
  HostileDb db(true);
  ASSERT_OK(
      db.Run("CREATE TABLE courier_outbox (id bigserial PRIMARY KEY, event_id text NOT NULL,"
             " aggregate_type text NOT NULL, aggregate_id text NOT NULL, event_type text NOT NULL,"
             " payload json, headers jsonb, created_at timestamptz NOT NULL DEFAULT now(),"
             " published_at timestamptz)"));
  CommandResult m = RunCourier({"migrate", "--source", db.url()});
  EXPECT_EQ(m.exit_code, 2) << m.err;
  EXPECT_NE(m.err.find("has column event_id of type text"), std::string::npos) << m.err;
  EXPECT_NE(m.err.find("ALTER TABLE \"courier_outbox\" ALTER COLUMN event_id TYPE uuid"),
            std::string::npos)
      << m.err;
  EXPECT_EQ(CountLines(m.err, "courier: error:"), 1) << m.err;
  EXPECT_EQ(db.Query1("SELECT to_regclass('courier_dead_letter') IS NULL"), "t")
      << "migrate changed nothing";

  ASSERT_OK(
      db.Run("ALTER TABLE courier_outbox ALTER COLUMN event_id TYPE uuid USING"
             " event_id::uuid"));
  ASSERT_EQ(RunCourier({"migrate", "--source", db.url()}).exit_code, 0);
  ASSERT_OK(db.Run("ALTER TABLE courier_outbox ALTER COLUMN event_id TYPE text"));
  ASSERT_OK(
      db.Run("INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id,"
             " event_type) VALUES ('" +
             NewUuidV7() + "', 'order', 'a', 'Made')"));
  TempDir dir;
  CommandResult r =
      RunCourier({"relay", "--source", db.url(), "--sink", "file://" + dir.File("out.jsonl")},
                 Duration(30000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("has column event_id of type text"), std::string::npos) << r.err;
  EXPECT_EQ(CountLines(r.err, "retrying"), 0) << r.err;
}

// Missing columns and NOT NULL columns courier cannot fill are named by migrate, which
// changes nothing; an extra NOT NULL column in the outbox is the application's business and
// the relay delivers.
TEST(HostileShape, MissingAndExtraColumns) {
  {
    HostileDb db(true);
    ASSERT_OK(db.Run(
        "CREATE TABLE courier_outbox (id bigserial PRIMARY KEY, event_id uuid NOT NULL,"
        " aggregate_type text NOT NULL, aggregate_id text NOT NULL, event_type text NOT NULL,"
        " payload json, headers jsonb, created_at timestamptz NOT NULL DEFAULT now())"));
    CommandResult m = RunCourier({"migrate", "--source", db.url()});
    EXPECT_EQ(m.exit_code, 2) << m.err;
    EXPECT_NE(m.err.find("has no column published_at"), std::string::npos) << m.err;
    EXPECT_EQ(db.Query1("SELECT to_regclass('courier_dead_letter') IS NULL"), "t");
  }
  {
    HostileDb db(false);
    ASSERT_OK(
        db.Run("CREATE TABLE courier_outbox (id INTEGER PRIMARY KEY, event_id TEXT,"
               " aggregate_type TEXT, aggregate_id TEXT, event_type TEXT, payload BLOB,"
               " published_at TEXT, created_at TEXT)"));
    CommandResult m = RunCourier({"migrate", "--source", db.url()});
    EXPECT_EQ(m.exit_code, 2) << m.err;
    EXPECT_NE(m.err.find("has no column headers"), std::string::npos) << m.err;
  }
  {
    HostileDb db(true);
    ASSERT_OK(
        db.Run("CREATE TABLE courier_dead_letter (id bigserial PRIMARY KEY, outbox_id bigint,"
               " event_id uuid NOT NULL, aggregate_type text NOT NULL, aggregate_id text NOT NULL,"
               " event_type text NOT NULL, payload json, headers jsonb, created_at timestamptz NOT"
               " NULL, error text NOT NULL, sink text NOT NULL, tenant text NOT NULL)"));
    CommandResult m = RunCourier({"migrate", "--source", db.url()});
    EXPECT_EQ(m.exit_code, 2) << m.err;
    EXPECT_NE(m.err.find("has column tenant NOT NULL without a default"), std::string::npos)
        << m.err;
    EXPECT_EQ(db.Query1("SELECT to_regclass('courier_outbox') IS NULL"), "t");
  }
  {
    HostileDb db(true);
    ASSERT_OK(db.Run(std::string(kPgLooseOutbox)
                         .replace(std::string(kPgLooseOutbox).find("published_at"), 0,
                                  "tenant text NOT NULL, ")));
    ASSERT_EQ(RunCourier({"migrate", "--source", db.url()}).exit_code, 0);
    const std::string event_id = NewUuidV7();
    ASSERT_OK(
        db.Run("INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id,"
               " event_type, tenant) VALUES ('" +
               event_id + "', 'order', 'a', 'Made', 'acme')"));
    TempDir dir;
    CommandResult r = RunCourier(
        {"relay", "--source", db.url(), "--sink", "file://" + dir.File("out.jsonl"), "--once"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::vector<Event> out = ReadSinkFile(dir.File("out.jsonl"));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].event_id, event_id);
  }
}

}  // namespace
}  // namespace courier::test
