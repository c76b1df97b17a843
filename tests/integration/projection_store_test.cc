// `courier project --event-store` and courier::Projection against a real PostgreSQL: global
// order without gaps while writers hold transactions open, exactly-once effects across
// SIGKILLs, --rebuild into the same state.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>

#include "support/fixtures.h"
#include "support/projection.h"

namespace courier::test {
namespace {

// Appends one event through the plain-SQL contract (`amount` in the payload).
std::string AppendSql(const std::string& stream, int64_t version, int amount) {
  return "INSERT INTO courier_events (stream_type, stream_id, version, event_type, payload) "
         "VALUES ('account', '" +
         stream + "', " + std::to_string(version) +
         ", 'FundsDeposited', '{\"amount\":" + std::to_string(amount) + "}')";
}

// A --exec handler recording, per event, its position, stream and amount, and how many times
// it was applied; `applied.seq` keeps the order in which the effects committed.
std::string RecordingHandler() {
  return R"SH(sed -E 's/.*"aggregate_id":"([^"]*)".*"event_id":"([^"]+)".*"position":([0-9]+).*"amount":([0-9]+).*/INSERT INTO applied (event_id, stream, n, amount, position) VALUES ('"'"'\2'"'"', '"'"'\1'"'"', 1, \4, \3) ON CONFLICT (event_id) DO UPDATE SET n = applied.n + 1;/')SH";
}

// Processes of process group `pgid` that have not ended (zombies not counted: whether they
// are reaped depends on the machine's init), from /proc/PID/stat.
int LiveMembersOfGroup(pid_t pgid) {
  int live = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string stat = ReadFile(entry.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0, group = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d %d", &state, &ppid, &group) != 3) continue;
    if (group == pgid && state != 'Z') ++live;
  }
  return live;
}

class ProjectionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const CommandResult migrated = RunCourier({"migrate", "--event-store", "--source", db_.url});
    ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
    ASSERT_OK(CreateAppliedTable(db_.url));
    ASSERT_OK(PgQuery(db_.url,
                      "ALTER TABLE applied ADD COLUMN position bigint, ADD COLUMN seq bigserial"));
  }

  std::vector<std::string> Args(const std::string& name = "balances") const {
    return {"project",
            "--event-store",
            "--db",
            db_.url,
            "--name",
            name,
            "--exec",
            RecordingHandler(),
            "--batch",
            "10",
            "--backoff-initial",
            "20ms",
            "--backoff-max",
            "200ms",
            "--log-level",
            "debug"};
  }

  int64_t Count(const std::string& sql) const {
    auto rows = PgQuery(db_.url, sql);
    return rows.ok() && !rows->empty() ? std::atoll((*rows)[0].c_str()) : -1;
  }

  // Each event of the store applied once, in position order, and nothing else; the balances
  // equal the fold of the store.
  void ExpectTheFoldOfTheStore() {
    EXPECT_EQ(Count("SELECT count(*) FROM courier_events e LEFT JOIN applied a ON a.event_id = "
                    "e.event_id::text WHERE a.n IS DISTINCT FROM 1"),
              0)
        << "events not applied exactly once";
    EXPECT_EQ(Count("SELECT count(*) FROM applied"), Count("SELECT count(*) FROM courier_events"));
    EXPECT_EQ(Count("SELECT count(*) FROM (SELECT position < lag(position) OVER (ORDER BY seq) "
                    "AS back FROM applied) x WHERE back"),
              0)
        << "effects committed out of position order";
    EXPECT_EQ(PgQuery(db_.url,
                      "SELECT stream || '=' || sum(amount) FROM applied GROUP BY stream "
                      "ORDER BY stream")
                  .value(),
              PgQuery(db_.url,
                      "SELECT stream_id || '=' || sum((payload->>'amount')::bigint) "
                      "FROM courier_events GROUP BY stream_id ORDER BY stream_id")
                  .value());
  }

  bool CaughtUp() const {
    return Count("SELECT count(*) FROM applied") == Count("SELECT count(*) FROM courier_events");
  }

  TempDir dir_;
  TestDb db_ = TestDb::Make(true);
};

TEST_F(ProjectionStoreTest, LateCommitOfALowerPositionIsWaitedForNotSkipped) {
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  // Takes position 1 and holds its transaction open.
  auto holder = PgConnect(db_.url);
  ASSERT_OK(holder);
  ASSERT_OK(PgRun(holder->get(), "BEGIN; " + AppendSql("acct-late", 1, 5)));
  // Positions 2..6 commit.
  for (int v = 1; v <= 5; ++v) ASSERT_OK(PgQuery(db_.url, AppendSql("acct-on-time", v, 1)));
  // The projection does not pass position 1 while it may still commit.
  EXPECT_STATUS(WaitForPosition(db_.url, "balances", 6, std::chrono::milliseconds(1500)),
                StatusCode::kRetriable);
  EXPECT_EQ(Count("SELECT count(*) FROM applied"), 0);
  ASSERT_OK(PgRun(holder->get(), "COMMIT"));
  const Status caught_up =
      WaitForPosition(db_.url, "balances", 6, std::chrono::milliseconds(20000));
  EXPECT_TRUE(caught_up.ok()) << caught_up.ToString() << ReadFile(log);
  ExpectTheFoldOfTheStore();
  EXPECT_EQ(PgQuery(db_.url, "SELECT position FROM applied WHERE stream = 'acct-late'").value(),
            std::vector<std::string>{"1"});
}

TEST_F(ProjectionStoreTest, ConcurrentWritersHoldingTransactionsOpenNeverMakeItSkip) {
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  // Writers, each on its own stream, commit events while holding some transactions open for
  // up to 300 ms, so later positions commit before earlier ones.
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937 rng(static_cast<unsigned>(w + 1));
      auto conn = PgConnect(db_.url);
      if (!conn.ok()) {
        ++failures;
        return;
      }
      for (int v = 1; v <= 60; ++v) {
        const std::string stream = "acct-" + std::to_string(w);
        std::string sql = "BEGIN; " + AppendSql(stream, v, 1 + static_cast<int>(rng() % 9));
        if (!PgRun(conn->get(), sql).ok()) ++failures;
        if (rng() % 4 == 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));
        }
        if (!PgRun(conn->get(), "COMMIT").ok()) ++failures;
      }
    });
  }
  for (std::thread& t : writers) t.join();
  ASSERT_EQ(failures.load(), 0);
  ASSERT_TRUE(WaitUntil([&] { return CaughtUp(); })) << ReadFile(log);
  ExpectTheFoldOfTheStore();
}

TEST_F(ProjectionStoreTest, SigkilledRepeatedlyWhileEventsFlowAppliesEachEventOnce) {
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    auto conn = PgConnect(db_.url);
    ASSERT_OK(conn);
    int64_t v = 0;
    while (writing.load()) {
      std::string sql = "BEGIN";
      for (int i = 0; i < 5; ++i) {
        ++v;
        sql += "; " + AppendSql("acct-" + std::to_string(v % 3), (v + 2) / 3, 1 + v % 7);
      }
      EXPECT_OK(PgRun(conn->get(), sql + "; COMMIT"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const std::string log = dir_.File("project.log");
  std::mt19937 rng(11);
  int kills = 0;
  const TimePoint until = Clock::Real().Now() + std::chrono::seconds(6);
  while (Clock::Real().Now() < until) {
    auto projector = SpawnCourier(Args(), log);
    ASSERT_OK(projector);
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 400));
    projector->Signal(SIGKILL);
    projector->Wait(Duration(10000));
    ++kills;
  }
  writing.store(false);
  writer.join();
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  // A thousand events or more, each through a handler process: on a loaded machine catching
  // up takes longer than the usual deadline.
  ASSERT_TRUE(WaitUntil([&] { return CaughtUp(); }, Duration(180000))) << ReadFile(log);
  ExpectTheFoldOfTheStore();
  EXPECT_GE(kills, 8);
  EXPECT_GT(Count("SELECT count(*) FROM courier_events"), 100);
}

// Two projectors of one name (a standby): each batch checks the checkpoint it started from,
// so one applies it and the other resumes after it; nothing is applied twice.
TEST_F(ProjectionStoreTest, TwoProjectorsOfOneNameApplyEachEventOnce) {
  const std::string log = dir_.File("project.log");
  auto first = SpawnCourier(Args(), log);
  auto second = SpawnCourier(Args(), log);
  ASSERT_OK(first);
  ASSERT_OK(second);
  auto conn = PgConnect(db_.url);
  ASSERT_OK(conn);
  for (int v = 1; v <= 200; v += 5) {
    std::string sql = "BEGIN";
    for (int i = v; i < v + 5; ++i) {
      sql += "; " + AppendSql("acct-" + std::to_string(i % 4), (i + 3) / 4, i % 7 + 1);
    }
    ASSERT_OK(PgRun(conn->get(), sql + "; COMMIT"));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(WaitUntil([&] { return CaughtUp(); })) << ReadFile(log);
  ExpectTheFoldOfTheStore();
  EXPECT_TRUE(first->Running());
  EXPECT_TRUE(second->Running());
}

TEST_F(ProjectionStoreTest, RebuildGivesTheSameState) {
  for (int v = 1; v <= 30; ++v) {
    ASSERT_OK(PgQuery(db_.url, AppendSql("acct-" + std::to_string(v % 4), (v + 3) / 4, v % 7 + 1)));
  }
  const std::string log = dir_.File("project.log");
  {
    auto projector = SpawnCourier(Args(), log);
    ASSERT_OK(projector);
    ASSERT_TRUE(WaitUntil([&] { return CaughtUp(); })) << ReadFile(log);
  }
  const auto before = PgQuery(db_.url,
                              "SELECT stream || '=' || sum(amount) FROM applied GROUP "
                              "BY stream ORDER BY stream");
  ASSERT_OK(before);
  const int64_t last_seq = Count("SELECT max(seq) FROM applied");
  std::vector<std::string> args = Args();
  args.insert(args.end(), {"--rebuild", "--reset", "TRUNCATE applied"});
  auto rebuilding = SpawnCourier(args, log);
  ASSERT_OK(rebuilding);
  // Every event applied again into the truncated table (new seq values), once each.
  ASSERT_TRUE(WaitUntil([&] {
    return Count("SELECT count(*) FROM applied WHERE seq > " + std::to_string(last_seq)) == 30;
  })) << ReadFile(log);
  ExpectTheFoldOfTheStore();
  EXPECT_EQ(PgQuery(db_.url,
                    "SELECT stream || '=' || sum(amount) FROM applied GROUP BY stream "
                    "ORDER BY stream")
                .value(),
            *before);
}

// --to: a POST per event, Idempotency-Key = event_id, in position order; a 503 is retried
// (the checkpoint only follows a 2xx).
TEST_F(ProjectionStoreTest, ToUrlPostsEachEventInOrderRetryingUntil2xx) {
  auto webhook = WebhookServer::Start();
  ASSERT_OK(webhook);
  for (int v = 1; v <= 8; ++v) {
    ASSERT_OK(PgQuery(db_.url, AppendSql("acct-" + std::to_string(v % 3), (v + 2) / 3, v)));
  }
  const std::string log = dir_.File("project.log");
  auto projector =
      SpawnCourier({"project", "--event-store", "--db", db_.url, "--name", "hook", "--to",
                    (*webhook)->Url("flaky"), "--backoff-initial", "10ms", "--backoff-max", "50ms"},
                   log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitForPosition(db_.url, "hook", 8, std::chrono::milliseconds(30000)).ok())
      << ReadFile(log);
  std::vector<std::string> keys;
  std::stringstream lines(ReadFile((*webhook)->log()));
  for (std::string line; std::getline(lines, line);) {
    keys.push_back(nlohmann::json::parse(line)["headers"]["idempotency-key"].get<std::string>());
  }
  EXPECT_EQ(
      keys,
      PgQuery(db_.url, "SELECT event_id::text FROM courier_events ORDER BY position").value());
  EXPECT_NE(ReadFile(log).find("projection handler failed; retrying"), std::string::npos);
}

// The C++ API: the handler writes through the projection's connection inside the
// transaction; a failing handler leaves no effect and is retried.
TEST_F(ProjectionStoreTest, SubscribeInCxxAppliesOnceAndRetriesAFailure) {
  for (int v = 1; v <= 12; ++v) {
    ASSERT_OK(PgQuery(db_.url, AppendSql("acct-" + std::to_string(v % 2), (v + 1) / 2, v)));
  }
  ProjectionOptions o;
  o.db_url = db_.url;
  o.name = "cxx";
  o.batch_size = 5;
  o.backoff_initial = std::chrono::milliseconds(10);
  o.backoff_max = std::chrono::milliseconds(50);
  Projection projection(o);
  int calls = 0;
  std::thread run([&] {
    EXPECT_OK(projection.Subscribe(
        From::Checkpoint(), [&](pg_conn* conn, const ProjectedEvent& e) -> Status {
          ++calls;
          COURIER_RETURN_IF_ERROR(
              PgExec(
                  conn,
                  "INSERT INTO applied (event_id, stream, n, amount, position) VALUES ($1, "
                  "$2, 1, $3, $4) ON CONFLICT (event_id) DO UPDATE SET n = applied.n + 1",
                  {e.event_id, e.stream_id, std::to_string(e.version), std::to_string(e.position)})
                  .status());
          // The 8th call fails after writing: its write must roll back.
          if (calls == 8) return RetriableError("the handler failed once");
          return Status::Ok();
        }));
  });
  ASSERT_TRUE(WaitUntil([&] { return projection.applied() == 12; }));
  projection.RequestStop();
  run.join();
  EXPECT_EQ(Count("SELECT count(*) FROM applied WHERE n = 1"), 12);
  EXPECT_EQ(Count("SELECT position FROM courier_events_projections WHERE name = 'cxx'"), 12);
}

// A handler whose SQL ends the transaction and begins another would commit its effects
// without the checkpoint, again on every retry: the projection stops with one line instead,
// having applied nothing twice.
TEST_F(ProjectionStoreTest, HandlerThatEndsTheTransactionStopsTheProjection) {
  ASSERT_OK(PgQuery(db_.url, AppendSql("acct-1", 1, 5)));
  const std::vector<std::string> ends = {"ROLLBACK", "COMMIT", "END"};
  for (const std::string& end : ends) {
    std::vector<std::string> args = Args("ends-" + end);
    args[7] = "printf '" + end + "; BEGIN; '; " + RecordingHandler();
    const CommandResult r = RunCourier(args, Duration(60000));
    EXPECT_NE(r.exit_code, 0) << end;
    EXPECT_NE(r.err.find("the projection handler ended the transaction itself"), std::string::npos)
        << end << ": " << r.err;
    EXPECT_EQ(Count("SELECT count(*) FROM applied WHERE n > 1"), 0) << end;
  }
}

// A handler killed for running past --handler-timeout is killed with what it started: its
// children do not pile up as orphans, one per retry.
TEST_F(ProjectionStoreTest, HandlerPastItsTimeoutIsKilledWithItsChildren) {
  ASSERT_OK(PgQuery(db_.url, AppendSql("acct-1", 1, 5)));
  const std::string groups = dir_.File("groups");
  std::vector<std::string> args = Args("slow");
  args[7] = "echo $$ >> " + groups + "; sleep 30; echo never";
  args.insert(args.end(), {"--handler-timeout", "300ms"});
  auto projector = SpawnCourier(args, dir_.File("project.log"));
  ASSERT_OK(projector);
  // A second attempt has begun: the first one's time ran out.
  ASSERT_TRUE(WaitUntil([&] {
    const std::string seen = ReadFile(groups);
    return std::count(seen.begin(), seen.end(), '\n') >= 2;
  }));
  const pid_t first = static_cast<pid_t>(std::atoi(ReadFile(groups).c_str()));
  ASSERT_GT(first, 0);
  // The shell led its own process group; nothing of it (the sleep) is left running.
  EXPECT_TRUE(WaitUntil([&] { return LiveMembersOfGroup(first) == 0; }))
      << "process group " << first << " still has members";
  projector->Signal(SIGTERM);
  EXPECT_TRUE(projector->Wait(Duration(30000)).has_value());
}

}  // namespace
}  // namespace courier::test
