// What operators of projections meet: `courier status` showing every projection and its
// distance to the store's newest event, read-your-writes over HTTP (`courier project
// --metrics-port`: /wait, /metrics, /healthz), `project wait`'s messages, and the exit codes
// and stops of `courier project`.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "courier/event_store.h"

#include "support/fixtures.h"
#include "support/projection.h"

namespace courier::test {
namespace {

std::string AppendSql(const std::string& stream, int64_t version, int amount) {
  return "INSERT INTO courier_events (stream_type, stream_id, version, event_type, payload) "
         "VALUES ('account', '" +
         stream + "', " + std::to_string(version) +
         ", 'FundsDeposited', '{\"amount\":" + std::to_string(amount) + "}')";
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
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

class ProjectionOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const CommandResult migrated = RunCourier({"migrate", "--event-store", "--source", db_.url});
    ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
    ASSERT_OK(CreateAppliedTable(db_.url));
  }

  std::vector<std::string> Args(const std::string& name = "balances") const {
    return {
        "project",         "--event-store",     "--db", db_.url,         "--name", name, "--exec",
        CountingHandler(), "--backoff-initial", "20ms", "--backoff-max", "200ms"};
  }

  int64_t Count(const std::string& sql) const {
    auto rows = PgQuery(db_.url, sql);
    return rows.ok() && !rows->empty() ? std::atoll((*rows)[0].c_str()) : -1;
  }

  TempDir dir_;
  TestDb db_ = TestDb::Make(true);
};

// Every projection's row, how far behind the newest position it is and how long ago it
// moved; Kafka-sourced projections' stored offsets; the same in --json.
TEST_F(ProjectionOpsTest, StatusShowsEveryProjectionAndKafkaOffsets) {
  for (int v = 1; v <= 7; ++v) ASSERT_OK(PgQuery(db_.url, AppendSql("acct-1", v, v)));
  ASSERT_OK(PgQuery(db_.url,
                    "INSERT INTO courier_events_projections (name, position, updated_at) VALUES "
                    "('balances', 7, now()), ('audit', 3, now() - interval '90 seconds')"));
  // Before any Kafka-sourced projection: no offsets table, no such lines.
  CommandResult status = RunCourier({"status", "--event-store", "--source", db_.url});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  std::vector<std::string> lines = Lines(status.out);
  std::vector<std::string> projections;
  for (const std::string& l : lines) {
    if (l.rfind("projection", 0) == 0 || l.rfind("kafka projection", 0) == 0) {
      projections.push_back(l);
    }
  }
  ASSERT_EQ(projections.size(), 2u) << status.out;
  // "<prefix>S s ago" with S in [low, high): the age is the only part that moves.
  auto updated_within = [](const std::string& line, const std::string& prefix, double low,
                           double high) {
    const std::string suffix = " s ago";
    if (line.rfind(prefix, 0) != 0 || line.size() < prefix.size() + suffix.size() ||
        line.compare(line.size() - suffix.size(), suffix.size(), suffix) != 0) {
      return false;
    }
    const std::string age = line.substr(prefix.size(), line.size() - prefix.size() - suffix.size());
    char* end = nullptr;
    const double seconds = std::strtod(age.c_str(), &end);
    return end != age.c_str() && *end == '\0' && seconds >= low && seconds < high;
  };
  EXPECT_TRUE(updated_within(projections[0],
                             "projection         audit  position 3  behind 4  updated ", 90, 100))
      << projections[0];
  EXPECT_TRUE(updated_within(projections[1],
                             "projection         balances  position 7  behind 0  updated ", 0, 10))
      << projections[1];
  // A Kafka-sourced projection's offsets, as the projector stores them.
  ASSERT_OK(PgQuery(db_.url,
                    "CREATE TABLE courier_projection_offsets (name text NOT NULL, topic text NOT "
                    "NULL, partition integer NOT NULL, next_offset bigint NOT NULL, updated_at "
                    "timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, topic, partition))"));
  ASSERT_OK(PgQuery(db_.url,
                    "INSERT INTO courier_projection_offsets (name, topic, partition, next_offset) "
                    "VALUES ('bank', 'acct', 1, 12), ('bank', 'acct', 0, 5)"));
  status = RunCourier({"status", "--event-store", "--source", db_.url});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  lines = Lines(status.out);
  std::vector<std::string> kafka;
  for (const std::string& l : lines) {
    if (l.rfind("kafka projection", 0) == 0) kafka.push_back(l);
  }
  EXPECT_EQ(kafka, (std::vector<std::string>{"kafka projection   bank  acct[0]  next offset 5",
                                             "kafka projection   bank  acct[1]  next offset 12"}))
      << status.out;
  // An outbox's status shows the offsets too (a listen-to-yourself service has no store).
  ASSERT_EQ(RunCourier({"migrate", "--source", db_.url}).exit_code, 0);
  status = RunCourier({"status", "--source", db_.url});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("kafka projection   bank  acct[1]  next offset 12\n"),
            std::string::npos)
      << status.out;
  EXPECT_EQ(status.out.find("projection         "), std::string::npos) << status.out;

  status = RunCourier({"status", "--event-store", "--source", db_.url, "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const nlohmann::json j = nlohmann::json::parse(status.out);
  ASSERT_EQ(j["projections"].size(), 2u) << status.out;
  EXPECT_EQ(j["projections"][0]["name"], "audit");
  EXPECT_EQ(j["projections"][0]["position"], 3);
  EXPECT_EQ(j["projections"][0]["behind"], 4);
  EXPECT_GE(j["projections"][0]["updated_ago_s"].get<double>(), 90.0);
  EXPECT_EQ(j["projections"][1]["name"], "balances");
  EXPECT_EQ(j["projections"][1]["behind"], 0);
  EXPECT_EQ(j["projection_offsets"],
            nlohmann::json::parse(R"([{"name":"bank","topic":"acct","partition":0,"next_offset":5},
                                      {"name":"bank","topic":"acct","partition":1,"next_offset":12}])"));
}

// GET /wait answers once the projection applied the position (read-your-writes), 504 after
// its timeout, 400 with one line on bad parameters; /metrics and /healthz beside it.
TEST_F(ProjectionOpsTest, HttpWaitAnswersOnceAppliedOrTimesOut) {
  const int port = FreePort();
  std::vector<std::string> args = Args();
  args.insert(args.end(), {"--metrics-port", std::to_string(port)});
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(args, log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return HttpGet(port, "/healthz").status == 200; })) << ReadFile(log);
  EXPECT_EQ(HttpGet(port, "/healthz").body, "ok\n");
  for (int v = 1; v <= 3; ++v) ASSERT_OK(PgQuery(db_.url, AppendSql("acct-1", v, v)));
  Got got = HttpGet(port, "/wait?position=3&timeout=20s");
  EXPECT_EQ(got.status, 200) << got.body << ReadFile(log);
  EXPECT_EQ(got.body, "{\"name\":\"balances\",\"position\":3}\n");
  // Read-your-writes: the effect is there once /wait answered.
  EXPECT_EQ(Count("SELECT count(*) FROM applied"), 3);

  got = HttpGet(port, "/wait?position=9&timeout=300ms");
  EXPECT_EQ(got.status, 504);
  EXPECT_EQ(got.body,
            "projection 'balances' has not applied position 9 within 300ms (it is at 3)\n");
  // A wait in progress answers when the event arrives.
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_OK(PgQuery(db_.url, AppendSql("acct-1", 4, 4)));
  });
  got = HttpGet(port, "/wait?position=4&timeout=20s");
  later.join();
  EXPECT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.body, "{\"name\":\"balances\",\"position\":4}\n");

  const std::string usage = ": /wait?position=N[&timeout=5s] (an event-store projection)\n";
  for (const auto& [query, body] : std::vector<std::pair<std::string, std::string>>{
           {"/wait", "missing position=N" + usage},
           {"/wait?position=-5", "position must be >= 0, not -5" + usage},
           {"/wait?position=abc", "position must be a whole number, not 'abc'" + usage},
           {"/wait?position=1&timeout=soon",
            "timeout: 'soon' is not a duration; write e.g. 250ms, 5s, 2m, 7d\n"},
           {"/wait?position=1&timeout=11m", "timeout must be at most 10m\n"},
           {"/wait?offset=1",
            "unknown parameter 'offset': /wait?position=N[&timeout=5s] (an event-store "
            "projection)\n"}}) {
    got = HttpGet(port, query);
    EXPECT_EQ(got.status, 400) << query;
    EXPECT_EQ(got.body, body) << query;
  }
  EXPECT_EQ(HttpGet(port, "/nothing").status, 404);

  // 4 applied by this process, at position 4, nothing left. The counter moves just after the
  // checkpoint commits, which is what /wait answered on: wait for it too.
  std::string metrics;
  WaitUntil([&] {
    metrics = HttpGet(port, "/metrics").body;
    return metrics.find("courier_projection_events_applied_total{projection=\"balances\"} 4\n") !=
           std::string::npos;
  });
  EXPECT_NE(metrics.find("courier_projection_events_applied_total{projection=\"balances\"} 4\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("courier_projection_position{projection=\"balances\"} 4\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("courier_projection_lag_events{projection=\"balances\"} 0\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("courier_projection_status_up{projection=\"balances\"} 1\n"),
            std::string::npos)
      << metrics;

  // SIGTERM while a /wait is in progress: the wait ends (503) and the process exits at once.
  std::optional<Got> pending;
  std::thread waiting([&] { pending = HttpGet(port, "/wait?position=100&timeout=60s"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  projector->Signal(SIGTERM);
  EXPECT_EQ(projector->Wait(Duration(10000)), 0) << ReadFile(log);
  waiting.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_TRUE(pending.has_value());
  EXPECT_EQ(pending->status, 503);
  EXPECT_EQ(pending->body,
            "stopped while waiting: projection 'balances' has not applied position 100 yet (it "
            "is at 4)\n");
}

// project wait: a negative value is refused as such (not as missing); a SIGTERM ends the
// wait without claiming a timeout.
TEST_F(ProjectionOpsTest, WaitMessagesForANegativeValueAndAnInterruption) {
  CommandResult r =
      RunCourier({"project", "wait", "--db", db_.url, "--name", "balances", "--position", "-5"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "courier: error: --position must be >= 0, not -5\n");
  r = RunCourier({"project", "wait", "--db", db_.url, "--name", "balances", "--partition", "0",
                  "--offset", "-1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "courier: error: --offset must be >= 0, not -1\n");
  r = RunCourier({"project", "wait", "--db", db_.url, "--name", "balances", "--partition", "-2",
                  "--offset", "3"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "courier: error: --partition must be >= 0, not -2\n");

  const std::string err = dir_.File("wait.err");
  auto wait = SpawnCourier({"project", "wait", "--db", db_.url, "--name", "balances", "--position",
                            "5", "--timeout", "60s"},
                           err);
  ASSERT_OK(wait);
  // Listening: the wait is under way.
  ASSERT_TRUE(WaitUntil([&] {
    return Count(
               "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT position "
               "FROM %'") >= 1;
  }));
  const auto start = std::chrono::steady_clock::now();
  wait->Signal(SIGTERM);
  EXPECT_EQ(wait->Wait(Duration(10000)), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(ReadFile(err),
            "stopped while waiting: projection 'balances' has not applied position 5 yet (it "
            "has applied nothing)\n");
}

// A URL that can never work exits 2 with one line saying what is wrong and how to fix it, as
// `courier relay` does on the same URL; a server that is down is waited for.
TEST_F(ProjectionOpsTest, UrlsThatCanNeverWorkExitWith2AndADownServerIsWaitedFor) {
  const std::string bad_port = "postgres://postgres@127.0.0.1:99999/app";
  std::vector<std::string> args = Args();
  args[3] = bad_port;
  CommandResult r = RunCourier(args, Duration(20000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "courier: error: bad PostgreSQL URL (--db): 'postgres://postgres@127.0.0.1:99999/app' "
            "has a bad port '99999'; a port is a number from 1 to 65535\n");
  const CommandResult relay = RunCourier(
      {"relay", "--event-store", "--source", bad_port, "--sink", "file://" + dir_.File("x")});
  EXPECT_EQ(relay.exit_code, 2) << relay.err;

  r = RunCourier({"project", "--from", "kafka:///acct", "--db", db_.url, "--name", "balances",
                  "--exec", CountingHandler()},
                 Duration(20000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "courier: error: --from kafka:///acct has no broker; write kafka://host:port/TOPIC\n");

  args = Args();
  args.insert(args.end(), {"--events-table", "no_such_events"});
  r = RunCourier(args, Duration(20000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  // After the log line saying it starts, the error in one line.
  ASSERT_FALSE(Lines(r.err).empty());
  EXPECT_EQ(Lines(r.err).back(), "courier: error: no event store \"no_such_events\" in " + db_.url +
                                     " (courier migrate --event-store creates it)");
  EXPECT_EQ(Count("SELECT count(*) FROM pg_tables WHERE tablename = "
                  "'no_such_events_projections'"),
            0);

  // Nothing listens there: a server that is down, retried with backoff until stopped.
  args = Args();
  args[3] = "postgres://postgres@127.0.0.1:" + std::to_string(FreePort()) + "/app";
  const std::string log = dir_.File("down.log");
  auto projector = SpawnCourier(args, log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] {
    const std::string text = ReadFile(log);
    size_t n = 0;
    for (size_t at = 0;
         (at = text.find("projection database unavailable; retrying", at)) != std::string::npos;
         ++at) {
      ++n;
    }
    return n >= 3;
  })) << ReadFile(log);
  EXPECT_TRUE(projector->Running());
  projector->Signal(SIGTERM);
  EXPECT_EQ(projector->Wait(Duration(10000)), 0);
}

// SIGTERM while a handler runs: the handler's process group is killed at once (not after
// --handler-timeout), the batch rolls back with its checkpoint, the process exits 0; the
// restart applies the batch once.
TEST_F(ProjectionOpsTest, SigtermDuringAHandlerExitsPromptlyAndTheRestartAppliesTheBatchOnce) {
  for (int v = 1; v <= 3; ++v) ASSERT_OK(PgQuery(db_.url, AppendSql("acct-1", v, v)));
  const std::string slow = dir_.File("slow");
  const std::string groups = dir_.File("groups");
  { std::ofstream(slow) << "on\n"; }
  std::vector<std::string> args = Args();
  // While `slow` exists: record the shell's process group, then sleep a minute.
  args[7] =
      "if [ -e " + slow + " ]; then echo $$ >> " + groups + "; sleep 60; fi; " + CountingHandler();
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(args, log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return !ReadFile(groups).empty(); })) << ReadFile(log);
  const pid_t group = static_cast<pid_t>(std::atoi(ReadFile(groups).c_str()));
  const auto start = std::chrono::steady_clock::now();
  projector->Signal(SIGTERM);
  EXPECT_EQ(projector->Wait(Duration(10000)), 0) << ReadFile(log);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // The handler and its sleep are gone; nothing applied, the checkpoint untouched.
  EXPECT_TRUE(WaitUntil([&] { return LiveMembersOfGroup(group) == 0; }, Duration(5000)))
      << "the handler's process group " << group << " still has members";
  EXPECT_EQ(Count("SELECT count(*) FROM applied"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM courier_events_projections WHERE position > 0"), 0);
  EXPECT_NE(ReadFile(log).find("projection stopping: the batch in hand rolled back"),
            std::string::npos)
      << ReadFile(log);

  std::filesystem::remove(slow);
  auto again = SpawnCourier(args, log);
  ASSERT_OK(again);
  ASSERT_TRUE(WaitForPosition(db_.url, "balances", 3, std::chrono::milliseconds(20000)).ok())
      << ReadFile(log);
  EXPECT_EQ(Count("SELECT count(*) FROM applied WHERE n = 1"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM applied"), 3);
}

// A frozen projector (SIGSTOP) holding the checkpoint's row lock: the server ends its
// transaction once idle past --handler-timeout plus a margin, the standby takes over, and
// after SIGCONT every event is still applied exactly once.
TEST_F(ProjectionOpsTest, AFrozenProjectorLosesItsTransactionAndTheStandbyTakesOver) {
  for (int v = 1; v <= 30; ++v) {
    ASSERT_OK(PgQuery(db_.url, AppendSql("acct-" + std::to_string(v % 3), (v + 2) / 3, v)));
  }
  const std::string pids = dir_.File("pids");
  std::vector<std::string> args = Args();
  // Each call records which projector runs it ($PPID: the courier that started the shell).
  args[7] = "echo $PPID >> " + pids + "; sleep 0.5; " + CountingHandler();
  args.insert(args.end(), {"--batch", "5", "--handler-timeout", "1s"});
  const std::string first_log = dir_.File("first.log");
  const std::string second_log = dir_.File("second.log");
  auto first = SpawnCourier(args, first_log);
  auto second = SpawnCourier(args, second_log);
  ASSERT_OK(first);
  ASSERT_OK(second);
  // Freeze the projector whose handler has just started: it is inside its batch transaction,
  // holding the checkpoint's row lock.
  size_t seen = 0;
  ASSERT_TRUE(WaitUntil([&] {
    seen = Lines(ReadFile(pids)).size();
    return seen >= 2;
  }));
  ASSERT_TRUE(WaitUntil([&] { return Lines(ReadFile(pids)).size() > seen; }, Duration(5000)));
  const pid_t frozen = static_cast<pid_t>(std::atoi(Lines(ReadFile(pids)).back().c_str()));
  const bool first_frozen = frozen == first->pid();
  Subprocess& frozen_process = first_frozen ? *first : *second;
  Subprocess& standby = first_frozen ? *second : *first;
  const std::string frozen_log = first_frozen ? first_log : second_log;
  ASSERT_EQ(frozen_process.pid(), frozen);
  frozen_process.Signal(SIGSTOP);
  const int64_t applied_when_frozen = Count("SELECT count(*) FROM applied");
  // The standby applies every event while the other is still frozen (the server ends the
  // frozen one's session --handler-timeout + 10 s after its last statement).
  EXPECT_TRUE(
      WaitUntil([&] { return Count("SELECT count(*) FROM applied") == 30; }, Duration(60000)))
      << "applied " << Count("SELECT count(*) FROM applied") << " (" << applied_when_frozen
      << " when frozen)\n"
      << ReadFile(first_log) << ReadFile(second_log);
  frozen_process.Signal(SIGCONT);
  // Thawed, it finds its session gone, reconnects and resumes from the checkpoint.
  auto resumes = [&] {
    const std::string text = ReadFile(frozen_log);
    size_t n = 0;
    for (size_t at = 0;
         (at = text.find("projection resuming after its checkpoint", at)) != std::string::npos;
         ++at) {
      ++n;
    }
    return n;
  };
  EXPECT_TRUE(WaitUntil([&] { return resumes() >= 2; })) << ReadFile(frozen_log);
  for (int v = 31; v <= 40; ++v) {
    ASSERT_OK(PgQuery(db_.url, AppendSql("acct-" + std::to_string(v % 3), (v + 2) / 3, v)));
  }
  ASSERT_TRUE(
      WaitUntil([&] { return Count("SELECT count(*) FROM applied") == 40; }, Duration(60000)))
      << ReadFile(first_log) << ReadFile(second_log);
  EXPECT_EQ(Count("SELECT count(*) FROM applied WHERE n <> 1"), 0)
      << ReadFile(first_log) << ReadFile(second_log);
  EXPECT_EQ(Count("SELECT position FROM courier_events_projections WHERE name = 'balances'"), 40);
  EXPECT_TRUE(standby.Running());
  EXPECT_TRUE(frozen_process.Running());
}

// Headers: new rows must be NULL or a JSON object without the envelope's keys (a CHECK added
// NOT VALID, so rows already there do not make migrate fail); such an old row is delivered
// without its headers, with a warning naming its position, instead of stopping every
// projection; the C++ Append refuses the envelope's keys.
TEST_F(ProjectionOpsTest, HeadersCheckAddedNotValidAndOldBadRowsAreDeliveredWithoutThem) {
  // A store from before the check, with rows that break it.
  ASSERT_OK(
      PgQuery(db_.url, "ALTER TABLE courier_events DROP CONSTRAINT courier_events_headers_check"));
  ASSERT_OK(PgQuery(db_.url, "DELETE FROM courier_events_schema WHERE version = 5"));
  ASSERT_OK(PgQuery(db_.url,
                    "INSERT INTO courier_events (stream_type, stream_id, version, event_type, "
                    "payload, headers) VALUES ('account', 'acct-1', 1, 'FundsDeposited', "
                    "'{\"amount\":1}', '[1]'), ('account', 'acct-1', 2, 'FundsDeposited', "
                    "'{\"amount\":2}', '{\"version\":\"9\"}'), ('account', 'acct-1', 3, "
                    "'FundsDeposited', '{\"amount\":3}', '{\"k\":\"v\"}')"));
  const CommandResult migrated = RunCourier({"migrate", "--event-store", "--source", db_.url});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  EXPECT_NE(migrated.out.find("applied 5 event_store_headers_check"), std::string::npos)
      << migrated.out;
  EXPECT_NE(migrated.err.find("events written before the headers check break it; they are kept "
                              "and read without their headers (the check is NOT VALID: it holds "
                              "for new rows only)"),
            std::string::npos)
      << migrated.err;
  EXPECT_NE(migrated.err.find("events=2"), std::string::npos) << migrated.err;
  EXPECT_NE(migrated.err.find("first_position=1"), std::string::npos) << migrated.err;
  // New rows are checked.
  for (const char* headers : {"'\"text\"'", "'{\"position\":\"1\"}'", "'[]'"}) {
    const Status refused =
        PgQuery(db_.url,
                std::string("INSERT INTO courier_events (stream_type, stream_id, version, "
                            "event_type, payload, headers) VALUES ('account', 'acct-2', 1, "
                            "'FundsDeposited', '{\"amount\":1}', ") +
                    headers + ")")
            .status();
    EXPECT_NE(refused.message().find("courier_events_headers_check"), std::string::npos)
        << headers << ": " << refused.ToString();
  }
  // Every event reaches the projection; the one whose headers are not an object without them.
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitForPosition(db_.url, "balances", 3, std::chrono::milliseconds(20000)).ok())
      << ReadFile(log);
  EXPECT_EQ(Count("SELECT count(*) FROM applied WHERE n = 1"), 3);
  EXPECT_NE(ReadFile(log).find("event delivered without its headers, which are not a JSON "
                               "object position=1"),
            std::string::npos)
      << ReadFile(log);
  // The C++ API refuses the envelope's keys.
  auto conn = PgConnect(db_.url);
  ASSERT_OK(conn);
  ASSERT_OK(PgRun(conn->get(), "BEGIN"));
  const EventStore store;
  for (const char* key : {"version", "position"}) {
    NewEvent e{.event_type = "FundsDeposited",
               .payload = "{\"amount\":1}",
               .headers = {{key, "1"}},
               .event_id = ""};
    auto appended = store.Append(conn->get(), "account", "acct-3", kNoStream, {e});
    EXPECT_STATUS(appended.status(), StatusCode::kInvalidArgument);
    EXPECT_EQ(appended.status().message(),
              std::string("append: header '") + key +
                  "' is courier's (the envelope sets it from the row); name yours otherwise");
  }
  ASSERT_OK(PgRun(conn->get(), "ROLLBACK"));
}

}  // namespace
}  // namespace courier::test
