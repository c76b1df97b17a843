// `courier lab`: its parts (the strategies' database, LabDb on SQLite and PostgreSQL: a
// commit_fails command's COMMIT is refused, a terminated connection comes back; their Kafka
// producer: acks, and a refusal while the broker is down; the default truth and delivery a
// strategy is judged on), then whole runs: every strategy under the fault schedule on
// PostgreSQL, judged from the JSON the lab writes; `courier demo`; bad input.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "brokers/dev/dev_broker.h"
#include "core/postgres.h"
#include "core/uuid.h"
#include "lab/lab.h"
#include "lab/lab_db.h"
#include "lab/lab_kafka.h"
#include "lab/strategy.h"
#include "support/harness.h"
#include "support/matchers.h"

namespace courier::test {
namespace {

using lab::Command;
using lab::LabDb;
using lab::LabEnv;
using lab::LabProducer;

Command MakeCommand(int64_t seq, const std::string& order, int64_t version, bool fails = false) {
  Command c;
  c.seq = seq;
  c.order_id = order;
  c.version = version;
  c.event_id = NewUuidV7();
  c.commit_fails = fails;
  return c;
}

// A strategy's environment on SQLite (a file of its own) or PostgreSQL (a schema of its own).
LabEnv MakeEnv(bool postgres, const TempDir& dir, const std::string& bootstrap = "") {
  LabEnv env;
  env.strategy = "naive";
  env.workdir = dir.path();
  env.bootstrap = bootstrap;
  env.topic = "lab-" + NewUuidV7().substr(24);
  if (postgres) {
    auto url = SharedPostgres().NewDatabase("lab");
    EXPECT_OK(url);
    env.db_url = url.ok() ? *url : "";
    env.schema = "lab_naive";
  } else {
    env.db_url = "sqlite://" + dir.File("naive.db");
  }
  return env;
}

class LabDbTest : public ::testing::TestWithParam<bool> {};

TEST_P(LabDbTest, ACommitFailsCommandIsAbortedAtCommitAndLeavesNoTrace) {
  TempDir dir;
  LabEnv env = MakeEnv(GetParam(), dir);
  std::unique_ptr<lab::Strategy> strategy = lab::MakeNaive();
  ASSERT_OK(strategy->Prepare(env));
  auto db = LabDb::Open(env.db_url, env.schema);
  ASSERT_OK(db);

  const Command refused = MakeCommand(1, "o-1", 1, /*fails=*/true);
  ASSERT_OK((*db)->Begin());
  ASSERT_OK((*db)->Exec(lab::WriteOrderSql(refused)));
  Status st = (*db)->Commit();
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st.ToString();

  // The transaction is over: the next one starts and commits.
  const Command accepted = MakeCommand(2, "o-1", 1);
  ASSERT_OK((*db)->Begin());
  ASSERT_OK((*db)->Exec(lab::WriteOrderSql(accepted)));
  ASSERT_OK((*db)->Commit());

  auto committed = strategy->Committed(env);
  ASSERT_OK(committed);
  EXPECT_EQ(committed->committed, std::set<std::string>{accepted.event_id});
  auto versions = (*db)->Column("SELECT version FROM lab_orders WHERE order_id = 'o-1'");
  ASSERT_OK(versions);
  ASSERT_EQ(versions->size(), 1u);
  EXPECT_EQ((*versions)[0], std::optional<std::string>("1"));
}

INSTANTIATE_TEST_SUITE_P(Engines, LabDbTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Postgres" : "Sqlite"; });

TEST(LabDbPostgres, ATerminatedConnectionFailsOnceAndThenReconnects) {
  TempDir dir;
  LabEnv env = MakeEnv(true, dir);
  auto db = LabDb::Open(env.db_url, env.schema);
  ASSERT_OK(db);
  ASSERT_OK((*db)->Exec("CREATE TABLE t (x int)"));
  // What the lab's "database restart" does: its connections, found by application_name.
  auto killed = PgQuery(env.db_url,
                        "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE "
                        "application_name = 'courier-lab-lab_naive'");
  ASSERT_OK(killed);
  ASSERT_EQ(killed->size(), 1u);
  Status st = (*db)->Exec("INSERT INTO t VALUES (1)");
  EXPECT_EQ(st.code(), StatusCode::kRetriable) << st.ToString();
  // Reconnected, in the same schema.
  ASSERT_OK((*db)->Exec("INSERT INTO t VALUES (2)"));
  auto rows = (*db)->Column("SELECT x FROM t");
  ASSERT_OK(rows);
  EXPECT_EQ(rows->size(), 1u);
}

TEST(LabProducerTest, PublishWaitsForTheAckAndIsRefusedWhileTheBrokerIsDown) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  TempDir dir;
  LabEnv env = MakeEnv(false, dir, (*broker)->bootstrap());
  ASSERT_OK((*broker)->CreateTopic(env.topic, env.partitions));
  auto producer = LabProducer::Open(env.bootstrap, env.topic, Duration(1000));
  ASSERT_OK(producer);
  const Command first = MakeCommand(1, "o-1", 1);
  const Command second = MakeCommand(2, "o-1", 2);
  ASSERT_OK((*producer)->Publish(lab::OrderEvent(first)));

  (*broker)->SetDown(true);
  const TimePoint start = Clock::Real().Now();
  Status st = (*producer)->Publish(lab::OrderEvent(MakeCommand(3, "o-2", 1)));
  EXPECT_EQ(st.code(), StatusCode::kRetriable) << st.ToString();
  EXPECT_LT(Clock::Real().Now() - start, Duration(8000));
  (*broker)->SetDown(false);

  // Send without waiting; Poll reports it (sent again while the producer still reconnects
  // and the send times out).
  ASSERT_OK((*producer)->Send(lab::OrderEvent(second)));
  std::vector<std::string> acked;
  ASSERT_TRUE(WaitUntil([&] {
    auto r = (*producer)->Poll(Duration(100));
    acked.insert(acked.end(), r.acked.begin(), r.acked.end());
    for (const std::string& id : r.failed) {
      EXPECT_EQ(id, second.event_id);
      EXPECT_OK((*producer)->Send(lab::OrderEvent(second)));
    }
    return !acked.empty();
  }));
  EXPECT_EQ(acked, std::vector<std::string>{second.event_id});

  std::unique_ptr<lab::Strategy> strategy = lab::MakeNaive();
  auto delivered = strategy->Delivered(env);
  ASSERT_OK(delivered);
  // Order o-1's records, in the order of its partition: the first event, then the second at
  // least once (a send that timed out may have been written all the same).
  std::vector<DeliveredRecord> o1;
  for (const DeliveredRecord& d : *delivered) {
    if (d.aggregate_id == "o-1") o1.push_back(d);
  }
  ASSERT_GE(o1.size(), 2u);
  EXPECT_EQ(o1[0].event_id, first.event_id);
  EXPECT_EQ(o1[0].seq, 1);
  for (size_t i = 1; i < o1.size(); ++i) {
    EXPECT_EQ(o1[i].event_id, second.event_id);
    EXPECT_EQ(o1[i].seq, 2);
  }
}

// The lab's results by strategy, from its --json file.
std::map<std::string, nlohmann::json> ReadResults(const std::string& path) {
  std::map<std::string, nlohmann::json> out;
  const nlohmann::json list = nlohmann::json::parse(ReadFile(path), nullptr, false);
  EXPECT_TRUE(list.is_array()) << ReadFile(path);
  if (!list.is_array()) return out;
  for (const nlohmann::json& o : list) out[o.at("strategy").get<std::string>()] = o;
  return out;
}

// A strategy that ran; one that was skipped or failed to run fails the test.
bool Ran(const std::map<std::string, nlohmann::json>& results, const std::string& name) {
  auto it = results.find(name);
  if (it == results.end()) {
    ADD_FAILURE() << name << " missing from the results";
    return false;
  }
  const nlohmann::json& o = it->second;
  EXPECT_FALSE(o.contains("error")) << name << ": " << o.dump();
  EXPECT_FALSE(o.contains("skipped")) << name << ": " << o.dump();
  if (o.contains("skipped")) return false;
  for (const char* key :
       {"committed", "delivered", "lost", "ghosts", "duplicates", "order_violations",
        "accepted_during_outage", "latency_p50_ms", "latency_p99_ms"}) {
    EXPECT_TRUE(o.contains(key)) << name << " has no " << key;
  }
  return !o.contains("error");
}

int64_t Count(const std::map<std::string, nlohmann::json>& results, const std::string& name,
              const char* key) {
  return results.at(name).at(key).get<int64_t>();
}

TEST(LabRun, EveryStrategyUnderTheSameFaultsOnPostgres) {
  auto url = SharedPostgres().NewDatabase("lab");
  ASSERT_OK(url);
  TempDir dir;
  const TimePoint start = Clock::Real().Now();
  CommandResult r = RunCourier(
      {"lab", "--strategy", "all", "--source", *url, "--json", dir.File("lab.json"), "--chart",
       dir.File("lab.svg"), "--markdown", dir.File("lab.md"), "--workdir", dir.File("work")},
      Duration(900000));
  const double seconds = std::chrono::duration<double>(Clock::Real().Now() - start).count();
  std::printf("%s[lab] %.0f s\n", r.out.c_str(), seconds);
  // The outbox (and, where they ran, CDC and event sourcing) held: exit 0.
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto results = ReadResults(dir.File("lab.json"));
  ASSERT_EQ(results.size(), lab::Strategies().size());

  for (const char* name : {"outbox-poll", "outbox-cdc", "event-sourcing"}) {
    ASSERT_TRUE(Ran(results, name)) << name;
    EXPECT_EQ(Count(results, name, "lost"), 0) << name;
    EXPECT_EQ(Count(results, name, "ghosts"), 0) << name;
    EXPECT_EQ(Count(results, name, "order_violations"), 0) << name;
    EXPECT_GT(Count(results, name, "delivered"), 20) << name;
    // They write the database only and take commands while the broker is down: only the one
    // that crashed fails.
    EXPECT_GT(results.at(name).at("accepted_during_outage").get<double>(), 0.5) << name;
  }
  // Listen-to-yourself: what its consumer applied agrees with the log, but its command is the
  // publish, so none is accepted while the broker is down.
  ASSERT_TRUE(Ran(results, "listen-to-yourself"));
  EXPECT_EQ(Count(results, "listen-to-yourself", "lost"), 0);
  EXPECT_EQ(Count(results, "listen-to-yourself", "ghosts"), 0);
  EXPECT_EQ(Count(results, "listen-to-yourself", "order_violations"), 0);
  EXPECT_GT(Count(results, "listen-to-yourself", "delivered"), 20);
  EXPECT_EQ(results.at("listen-to-yourself").at("accepted_during_outage").get<double>(), 0.0);
  // Its command has no transaction: the commit-fails fault is not applied to it.
  EXPECT_EQ(results.at("listen-to-yourself").at("faults").at("commit_fails"), 0);
  EXPECT_GT(results.at("naive").at("faults").at("commit_fails").get<int64_t>(), 0);

  ASSERT_TRUE(Ran(results, "naive"));
  EXPECT_GT(Count(results, "naive", "lost"), 0);
  EXPECT_EQ(Count(results, "naive", "ghosts"), 0);
  // Publish first, or inside the open transaction: the broker acked what the database then did
  // not commit (a refused COMMIT, a crash after the ack). Both refuse while the broker is down.
  for (const char* name : {"publish-first", "publish-in-transaction"}) {
    ASSERT_TRUE(Ran(results, name)) << name;
    EXPECT_GT(Count(results, name, "ghosts"), 0) << name;
    EXPECT_EQ(Count(results, name, "lost"), 0) << name;
    EXPECT_EQ(results.at(name).at("accepted_during_outage").get<double>(), 0.0) << name;
  }
  // The in-memory queue takes commands while the broker is down, and a crash loses it.
  ASSERT_TRUE(Ran(results, "in-memory-retry"));
  EXPECT_GT(Count(results, "in-memory-retry", "lost"), 0);
  EXPECT_EQ(Count(results, "in-memory-retry", "ghosts"), 0);
  EXPECT_GT(results.at("in-memory-retry").at("accepted_during_outage").get<double>(), 0.5);
  // Two-phase commit holds, and pays for it: no writes while the broker is down.
  ASSERT_TRUE(Ran(results, "2pc"));
  EXPECT_EQ(Count(results, "2pc", "lost"), 0);
  EXPECT_EQ(Count(results, "2pc", "ghosts"), 0);
  EXPECT_EQ(Count(results, "2pc", "order_violations"), 0);
  EXPECT_GT(Count(results, "2pc", "delivered"), 20);
  EXPECT_LT(results.at("2pc").at("accepted_during_outage").get<double>(),
            results.at("outbox-poll").at("accepted_during_outage").get<double>());

  // The chart and the page name every strategy that ran.
  const std::string svg = ReadFile(dir.File("lab.svg"));
  const std::string md = ReadFile(dir.File("lab.md"));
  EXPECT_EQ(svg.rfind("<svg", 0), 0u) << svg.substr(0, 200);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  for (const auto& [name, o] : results) {
    EXPECT_NE(md.find("### " + name), std::string::npos) << name;
    if (!o.contains("skipped")) {
      EXPECT_NE(svg.find(">" + name + "<"), std::string::npos) << name;
    }
  }
}

TEST(LabRun, DemoIsNaiveVersusOutboxOnSqliteAndTheOutboxHolds) {
  const TimePoint start = Clock::Real().Now();
  CommandResult r = RunCourier({"demo", "--seed", "7"}, Duration(300000));
  std::printf("%s", r.out.c_str());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // About 20 s on an idle machine, under a minute on a loaded one; the bound catches a demo
  // that drifted to minutes, with room for the sanitizers' build.
  EXPECT_LT(Clock::Real().Now() - start, Duration(120000)) << "the demo stays short";
  EXPECT_NE(r.out.find("outbox: nothing lost, no ghosts"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("relay SIGKILLs"), std::string::npos);
  // The naive service lost what it committed before a crash.
  const size_t naive = r.out.find("\nnaive ");
  ASSERT_NE(naive, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("naive: lost "), std::string::npos) << r.out;
}

// Where a running lab said its files are (its first line on stderr: "files in DIR)").
std::string LabFilesIn(const std::string& log) {
  const std::string text = ReadFile(log);
  const size_t at = text.find("files in ");
  if (at == std::string::npos) return "";
  const size_t end = text.find(')', at);
  return end == std::string::npos ? "" : text.substr(at + 9, end - at - 9);
}

TEST(LabRun, ASecondLabOnTheSameDatabaseRefusesAndAnInterruptedLabLeavesNoFiles) {
  auto url = SharedPostgres().NewDatabase("lab");
  ASSERT_OK(url);
  TempDir dir;
  // Enough commands to be still running when it is interrupted.
  auto first = SpawnCourier(
      {"lab", "--strategy", "naive", "--faults", "none", "--source", *url, "--commands", "100000"},
      dir.File("first.log"));
  ASSERT_OK(first);
  std::string files;
  ASSERT_TRUE(WaitUntil([&] { return !(files = LabFilesIn(dir.File("first.log"))).empty(); },
                        Duration(60000)))
      << ReadFile(dir.File("first.log"));
  EXPECT_TRUE(std::filesystem::is_directory(files)) << files;

  // The first holds the database: the second neither runs nor touches its schemas.
  const TimePoint start = Clock::Real().Now();
  CommandResult second = RunCourier(
      {"lab", "--strategy", "naive", "--faults", "none", "--source", *url, "--commands", "20"});
  EXPECT_EQ(second.exit_code, 2) << second.out << second.err;
  EXPECT_EQ(std::count(second.err.begin(), second.err.end(), '\n'), 1) << second.err;
  EXPECT_NE(second.err.find("another courier lab is running against this database"),
            std::string::npos)
      << second.err;
  EXPECT_LT(Clock::Real().Now() - start, Duration(20000)) << "it refuses at once";

  // Interrupted, the first removes its temporary folder and lets the database go.
  first->Signal(SIGTERM);
  ASSERT_TRUE(first->Wait(Duration(60000)).has_value());
  EXPECT_FALSE(std::filesystem::exists(files)) << files;
  CommandResult third = RunCourier(
      {"lab", "--strategy", "naive", "--faults", "none", "--source", *url, "--commands", "20"},
      Duration(120000));
  EXPECT_EQ(third.exit_code, 0) << third.out << third.err;
}

TEST(LabRun, AWorkdirWhoseStrategyFolderHoldsFilesIsRefusedAndLeftAlone) {
  TempDir dir;
  std::filesystem::create_directories(dir.File("work/naive"));
  std::ofstream(dir.File("work/naive/mine.txt")) << "the user's\n";
  for (const std::string command : {"lab", "demo"}) {
    std::vector<std::string> args = {command, "--workdir", dir.File("work")};
    if (command == "lab") args.insert(args.end(), {"--strategy", "naive", "--commands", "20"});
    CommandResult r = RunCourier(args);
    EXPECT_EQ(r.exit_code, 2) << command << ": " << r.out << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("already holds naive/"), std::string::npos) << r.err;
    EXPECT_EQ(ReadFile(dir.File("work/naive/mine.txt")), "the user's\n");
  }
}

TEST(LabRun, JsonDashIsStdoutWithTheTableOnStderr) {
  CommandResult r = RunCourier(
      {"lab", "--strategy", "naive", "--faults", "none", "--commands", "20", "--json", "-"},
      Duration(120000));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json list = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(list.is_array()) << r.out;
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].at("strategy"), "naive");
  EXPECT_EQ(list[0].at("committed"), 20);
  EXPECT_NE(r.err.find("p99 ms"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists("-"));
}

TEST(LabReport, ACommitFailsFaultThatDoesNotApplyIsSaidSoNotCounted) {
  lab::LabReport report;
  report.faults = {"commit-fails"};
  lab::StrategyResult r;
  r.strategy = "listen-to-yourself";
  r.commit_fails_applies = false;
  report.results.push_back(r);
  const std::string why = "no failed commits (the fault does not apply";
  EXPECT_NE(lab::FormatTable(report).find("listen-to-yourself: 0, 0, 0, " + why), std::string::npos)
      << lab::FormatTable(report);
  EXPECT_NE(lab::FormatMarkdown(report, "courier lab", "").find("0 database restarts, " + why),
            std::string::npos);
}

TEST(LabRun, BadInputIsOneLineAndExit2) {
  const std::vector<std::vector<std::string>> cases = {
      {"lab", "--strategy", "naive,bogus"},
      {"lab", "--faults", "outage,earthquake"},
      {"lab", "--source", "sqlite:///tmp/x.db"},
      {"lab", "--source", "postgres://a:b@c@host/db"},
      {"lab", "--sink", "redis://127.0.0.1:6379"},
      {"lab", "--sink", "kafka://127.0.0.1:9092/topic"},
      {"lab", "--commands", "5"},
      {"demo", "--orders", "5"},
      {"lab", "--strategy", "naive,,outbox-poll"},
      {"lab", "--faults", "outage,"},
      // Every strategy named needs PostgreSQL: nothing would run.
      {"lab", "--strategy", "2pc,outbox-cdc"},
      // Outputs that cannot be written are found before the run, not after it.
      {"lab", "--json", "/nonexistent-courier-dir/lab.json"},
      {"lab", "--chart", "/"},
      {"lab", "--json", "-", "--markdown", "-"},
  };
  for (const auto& args : cases) {
    CommandResult r = RunCourier(args);
    EXPECT_EQ(r.exit_code, 2) << args[1] << " " << args[2] << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.find("b@c"), std::string::npos) << "the password is not repeated: " << r.err;
  }
}

}  // namespace
}  // namespace courier::test
