// The lab's naive strategies and two-phase commit, each driven directly (Prepare, Start,
// Handle, Finish in this process, against real PostgreSQL and the dev broker) and judged the
// lab's way (Committed vs Delivered, audit/verdict.h): each shows the failure its design
// predicts, or holds. A crash is a real SIGKILL at the strategy's fault point (HitFault), in a
// child process: this test binary again, running only LabServiceChild.DISABLED_Serve.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "brokers/dev/dev_broker.h"
#include "core/subprocess.h"
#include "core/uuid.h"
#include "lab/lab_db.h"
#include "lab/strategy.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

using lab::Command;
using lab::Fault;
using lab::LabEnv;
using lab::Strategy;

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t from = 0;
  for (size_t at; (at = text.find(sep, from)) != std::string::npos; from = at + 1) {
    parts.push_back(text.substr(from, at - from));
  }
  parts.push_back(text.substr(from));
  return parts;
}

// The child's arguments: the environment and the commands, in order.
std::string EnvArg(const LabEnv& env) {
  return "--lab-env=" + env.strategy + "|" + env.db_url + "|" + env.schema + "|" + env.bootstrap +
         "|" + env.topic + "|" + env.workdir;
}
std::string CommandArg(const Command& c) {
  return "--lab-command=" + c.order_id + "," + std::to_string(c.version) + "," + c.event_id + "," +
         (c.commit_fails ? "1" : "0") + "," + std::to_string(static_cast<int>(c.fault));
}

// The service process of the crash tests: starts the strategy (recovering, as after a
// SIGKILL), handles the commands its arguments carry (a fault point SIGKILLs it), finishes.
// Run only as a child (--gtest_also_run_disabled_tests).
TEST(LabServiceChild, DISABLED_Serve) {
  LabEnv env;
  std::vector<Command> commands;
  for (const std::string& arg : ::testing::internal::GetArgvs()) {
    if (arg.rfind("--lab-env=", 0) == 0) {
      const auto f = Split(arg.substr(10), '|');
      ASSERT_EQ(f.size(), 6u) << arg;
      env = LabEnv{.strategy = f[0],
                   .db_url = f[1],
                   .schema = f[2],
                   .bootstrap = f[3],
                   .topic = f[4],
                   .workdir = f[5]};
    } else if (arg.rfind("--lab-command=", 0) == 0) {
      const auto f = Split(arg.substr(14), ',');
      ASSERT_EQ(f.size(), 5u) << arg;
      Command c;
      c.order_id = f[0];
      c.version = std::stoll(f[1]);
      c.event_id = f[2];
      c.commit_fails = f[3] == "1";
      c.fault = static_cast<Fault>(std::stoi(f[4]));
      commands.push_back(c);
    }
  }
  const lab::StrategyInfo* info = lab::FindStrategy(env.strategy);
  ASSERT_NE(info, nullptr) << env.strategy;
  std::unique_ptr<Strategy> s = info->make();
  ASSERT_OK(s->Start(env));
  for (const Command& c : commands) {
    const Status st = s->Handle(c);
    std::cerr << "command " << c.event_id << ": " << st.ToString() << "\n";
  }
  ASSERT_OK(s->Finish(Clock::Real().Now() + Duration(30000)));
}

class LabStrategyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    auto url = SharedPostgres().NewDatabase("lab");
    ASSERT_OK(url);
    db_url_ = *url;
  }

  // The strategy's environment, prepared (its tables and topic), and its service started.
  std::unique_ptr<Strategy> Begin(const std::string& name) {
    const lab::StrategyInfo* info = lab::FindStrategy(name);
    EXPECT_NE(info, nullptr) << name;
    if (info == nullptr) return nullptr;
    std::string schema = "lab_" + name;
    std::replace(schema.begin(), schema.end(), '-', '_');
    env_ = LabEnv{.strategy = name,
                  .db_url = db_url_,
                  .schema = schema,
                  .bootstrap = broker_->bootstrap(),
                  .topic = "lab-" + name,
                  .workdir = dir_.path(),
                  .self = COURIER_BINARY,
                  .partitions = 4};
    EXPECT_OK(broker_->CreateTopic(env_.topic, env_.partitions));
    lab_side_ = info->make();
    EXPECT_OK(lab_side_->Prepare(env_));
    return StartService();
  }

  // A new service process's strategy, started (what the lab does after a SIGKILL).
  std::unique_ptr<Strategy> StartService() {
    std::unique_ptr<Strategy> s = lab::FindStrategy(env_.strategy)->make();
    EXPECT_OK(s->Start(env_));
    return s;
  }

  Command Next(const std::string& order_id, int64_t version, bool commit_fails = false) {
    Command c;
    c.seq = ++seq_;
    c.order_id = order_id;
    c.version = version;
    c.event_id = NewUuidV7();
    c.commit_fails = commit_fails;
    return c;
  }

  // The lab's verdict: what the strategy's truth committed against what its topic holds.
  Verdict Judged() {
    auto committed = lab_side_->Committed(env_);
    EXPECT_OK(committed);
    auto delivered = lab_side_->Delivered(env_);
    EXPECT_OK(delivered);
    if (!committed.ok() || !delivered.ok()) return {};
    return Judge(*committed, *delivered);
  }

  // Runs the strategy's service in a child process on `commands`; its exit code (137: the
  // SIGKILL of a fault point).
  int Serve(const std::vector<Command>& commands) {
    std::vector<std::string> argv = {"/proc/self/exe",
                                     "--gtest_filter=LabServiceChild.DISABLED_Serve",
                                     "--gtest_also_run_disabled_tests", EnvArg(env_)};
    for (const Command& c : commands) argv.push_back(CommandArg(c));
    const std::string log = dir_.File("service.log");
    auto child = Subprocess::Spawn(argv, log, log);
    EXPECT_OK(child);
    if (!child.ok()) return -1;
    const std::optional<int> code = child->Wait(Duration(120000));
    EXPECT_TRUE(code.has_value()) << "the service did not end\n" << ReadFile(log);
    return code.value_or(-1);
  }

  Command Crashing(const std::string& order_id, int64_t version, Fault where) {
    Command c = Next(order_id, version);
    c.fault = where;
    return c;
  }

  int64_t PreparedTransactions() {
    auto rows = PgQuery(db_url_,
                        "SELECT count(*) FROM pg_prepared_xacts WHERE database = "
                        "current_database()");
    EXPECT_OK(rows);
    return rows.ok() && !rows->empty() ? std::stoll((*rows)[0]) : -1;
  }

  TempDir dir_;
  std::unique_ptr<DevBroker> broker_;
  std::string db_url_;
  LabEnv env_;
  std::unique_ptr<Strategy> lab_side_;
  int64_t seq_ = 0;
};

// The broker acked, then the commit failed: a ghost. During the outage: refused.
TEST_F(LabStrategyTest, PublishFirstLeavesAGhostWhenTheCommitFailsAndRefusesDuringAnOutage) {
  auto service = Begin("publish-first");
  ASSERT_NE(service, nullptr);
  const Command ok1 = Next("o1", 1), fails = Next("o2", 1, true), ok2 = Next("o1", 2);
  ASSERT_OK(service->Handle(ok1));
  EXPECT_EQ(service->Handle(fails).code(), StatusCode::kAborted);
  ASSERT_OK(service->Handle(ok2));

  broker_->SetDown(true);
  const Command during = Next("o3", 1);
  EXPECT_FALSE(service->Handle(during).ok()) << "published to a broker that is down";
  broker_->SetDown(false);
  const Command after = Next("o3", 1);
  ASSERT_TRUE(WaitUntil([&] { return service->Handle(after).ok(); }, Duration(60000)));
  ASSERT_OK(service->Finish(Clock::Real().Now() + Duration(10000)));

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 3) << ExamplesOf(v);
  EXPECT_EQ(v.lost, 0) << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 1) << ExamplesOf(v);
  EXPECT_EQ(v.ghost_ids, std::vector<std::string>{fails.event_id});
}

// The "logical transaction": acked inside the open transaction, then COMMIT refused: a ghost.
// During the outage the order rolls back with the refused command.
TEST_F(LabStrategyTest, PublishInTransactionLeavesAGhostWhenTheCommitFailsAfterTheAck) {
  auto service = Begin("publish-in-transaction");
  ASSERT_NE(service, nullptr);
  const Command ok1 = Next("o1", 1), fails = Next("o2", 1, true), ok2 = Next("o1", 2);
  ASSERT_OK(service->Handle(ok1));
  EXPECT_EQ(service->Handle(fails).code(), StatusCode::kAborted);
  ASSERT_OK(service->Handle(ok2));

  broker_->SetDown(true);
  const Command during = Next("o3", 1);
  EXPECT_FALSE(service->Handle(during).ok()) << "published to a broker that is down";
  broker_->SetDown(false);
  const Command after = Next("o3", 1);
  ASSERT_TRUE(WaitUntil([&] { return service->Handle(after).ok(); }, Duration(60000)));

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 3) << "the refused command's order rolled back" << ExamplesOf(v);
  EXPECT_EQ(v.lost, 0) << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 1) << ExamplesOf(v);
  EXPECT_EQ(v.ghost_ids, std::vector<std::string>{fails.event_id});
}

// Accepted during the outage (queued in memory), delivered once the broker is back; a failed
// commit publishes nothing. (Lost after a crash with a queue: the lab's test.)
TEST_F(LabStrategyTest, InMemoryRetryAcceptsDuringAnOutageAndDeliversAfterIt) {
  auto service = Begin("in-memory-retry");
  ASSERT_NE(service, nullptr);
  ASSERT_OK(service->Handle(Next("o1", 1)));
  EXPECT_EQ(service->Handle(Next("o2", 1, true)).code(), StatusCode::kAborted);

  broker_->SetDown(true);
  for (int i = 0; i < 3; ++i) {
    EXPECT_OK(service->Handle(Next("o3-" + std::to_string(i), 1)));
    service->Idle();
  }
  broker_->SetDown(false);
  ASSERT_OK(service->Finish(Clock::Real().Now() + Duration(60000)));

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 4) << ExamplesOf(v);
  EXPECT_EQ(v.delivered, 4) << ExamplesOf(v);
  EXPECT_EQ(v.lost, 0) << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 0) << ExamplesOf(v);
}

// PREPARE votes no for a failing commit, the broker's absence votes no: refused, nothing sent,
// nothing left prepared; a later command goes through.
TEST_F(LabStrategyTest, TwoPhaseCommitRefusesWhatEitherSideCannotTake) {
  auto service = Begin("2pc");
  ASSERT_NE(service, nullptr);
  ASSERT_OK(service->Handle(Next("o1", 1)));
  EXPECT_EQ(service->Handle(Next("o2", 1, true)).code(), StatusCode::kAborted);

  broker_->SetDown(true);
  EXPECT_FALSE(service->Handle(Next("o3", 1)).ok()) << "committed with the broker down";
  EXPECT_EQ(PreparedTransactions(), 0);
  broker_->SetDown(false);
  const Command after = Next("o3", 1);
  ASSERT_TRUE(WaitUntil([&] { return service->Handle(after).ok(); }, Duration(60000)));
  ASSERT_OK(service->Handle(Next("o1", 2)));
  ASSERT_OK(service->Finish(Clock::Real().Now() + Duration(30000)));
  EXPECT_EQ(PreparedTransactions(), 0);

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 3) << ExamplesOf(v);
  EXPECT_TRUE(v.Clean()) << ExamplesOf(v);
}

// What a coordinator crash leaves: one transaction prepared with its decision logged, one
// prepared without. Until a restart both hold their order's row lock; the restart commits the
// decided one (its event sent then) and rolls back the other.
TEST_F(LabStrategyTest, TwoPhaseCommitRecoveryResolvesInDoubtTransactionsByTheLog) {
  auto service = Begin("2pc");
  ASSERT_NE(service, nullptr);
  ASSERT_OK(service->Handle(Next("o1", 1)));
  service.reset();  // the coordinator is gone

  // The decided one moves an existing order on: it holds that order's row.
  const Command decided = Next("o1", 2), undecided = Next("o2", 1);
  const std::string prefix = "courier-lab:" + env_.schema + ":";
  for (const Command& c : {decided, undecided}) {
    auto db = lab::LabDb::Open(db_url_, env_.schema);
    ASSERT_OK(db);
    ASSERT_OK((*db)->Begin());
    ASSERT_OK((*db)->Exec(lab::WriteOrderSql(c)));
    ASSERT_OK((*db)->Exec("PREPARE TRANSACTION '" + prefix + c.event_id + "'"));
  }
  {
    std::ofstream log(dir_.File("2pc-coordinator.log"), std::ios::app);
    log << "commit " << prefix << decided.event_id << " " << decided.order_id << " "
        << decided.version << " " << decided.event_id << "\n";
  }
  EXPECT_EQ(PreparedTransactions(), 2);
  // The cost: an in-doubt transaction keeps its order locked.
  {
    auto db = lab::LabDb::Open(db_url_, env_.schema);
    ASSERT_OK(db);
    const Status locked = (*db)->Exec(
        "SET lock_timeout = '200ms'; UPDATE lab_orders SET version = version WHERE order_id = "
        "'o1'");
    EXPECT_EQ(locked.code(), StatusCode::kRetriable) << "not locked: " << locked.ToString();
    EXPECT_NE(locked.message().find("lock"), std::string::npos) << locked.ToString();
  }

  service = StartService();
  EXPECT_EQ(PreparedTransactions(), 0);
  ASSERT_OK(service->Handle(Next("o1", 3)));  // its lock was released
  ASSERT_OK(service->Finish(Clock::Real().Now() + Duration(30000)));

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 3) << ExamplesOf(v);
  EXPECT_TRUE(v.Clean()) << ExamplesOf(v);
  auto truth = lab_side_->Committed(env_);
  ASSERT_OK(truth);
  EXPECT_TRUE(truth->committed.count(decided.event_id));
  EXPECT_FALSE(truth->committed.count(undecided.event_id));
}

constexpr int kKilled = 128 + 9;

// SIGKILLed after the broker's ack, before the order's transaction: a ghost.
TEST_F(LabStrategyTest, PublishFirstCrashBetweenTheWritesLeavesAGhost) {
  ASSERT_NE(Begin("publish-first"), nullptr);
  const Command crash = Crashing("o2", 1, Fault::kCrashBetween);
  ASSERT_EQ(Serve({Next("o1", 1), crash}), kKilled) << ReadFile(dir_.File("service.log"));

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 1) << ExamplesOf(v);
  EXPECT_EQ(v.ghost_ids, std::vector<std::string>{crash.event_id}) << ExamplesOf(v);
}

// SIGKILLed with the order written, before the publish: it rolls back with the process, and
// nothing was sent. SIGKILLed after the ack, before COMMIT: a ghost.
TEST_F(LabStrategyTest, PublishInTransactionCrashAfterTheAckLeavesAGhost) {
  ASSERT_NE(Begin("publish-in-transaction"), nullptr);
  const Command before_publish = Crashing("o1", 1, Fault::kCrashBetween);
  ASSERT_EQ(Serve({Next("o0", 1), before_publish}), kKilled) << ReadFile(dir_.File("service.log"));
  const Command after_ack = Crashing("o1", 1, Fault::kCrashInside);
  ASSERT_EQ(Serve({after_ack}), kKilled) << ReadFile(dir_.File("service.log"));

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 1) << ExamplesOf(v);
  EXPECT_EQ(v.ghost_ids, std::vector<std::string>{after_ack.event_id}) << ExamplesOf(v);
}

// SIGKILLed after the commit, before the queue: lost. SIGKILLed with a queue the broker's
// outage left: every queued event lost.
TEST_F(LabStrategyTest, InMemoryRetryLosesWhatOnlyItsMemoryHeld) {
  ASSERT_NE(Begin("in-memory-retry"), nullptr);
  // (A service of its own that finishes: an event still unacked when the next command
  // crashes the service would be lost as well.)
  ASSERT_EQ(Serve({Next("o0", 1)}), 0) << ReadFile(dir_.File("service.log"));
  const Command before_queue = Crashing("o1", 1, Fault::kCrashBetween);
  ASSERT_EQ(Serve({before_queue}), kKilled) << ReadFile(dir_.File("service.log"));

  broker_->SetDown(true);
  const Command queued1 = Next("o2", 1), queued2 = Next("o3", 1);
  const Command queued3 = Crashing("o2", 2, Fault::kCrashInside);
  ASSERT_EQ(Serve({queued1, queued2, queued3}), kKilled) << ReadFile(dir_.File("service.log"));
  broker_->SetDown(false);

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 5) << "accepted during the outage" << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 0) << ExamplesOf(v);
  EXPECT_EQ(std::set<std::string>(v.lost_ids.begin(), v.lost_ids.end()),
            (std::set<std::string>{before_queue.event_id, queued1.event_id, queued2.event_id,
                                   queued3.event_id}))
      << ExamplesOf(v);
}

// SIGKILLed prepared and undecided: rolled back by the next start. SIGKILLed decided, its
// event sent but the Kafka transaction not committed: the next start sends it again and
// commits. Nothing lost, no ghost.
TEST_F(LabStrategyTest, TwoPhaseCommitRecoversFromCrashesInsideItsProtocol) {
  ASSERT_NE(Begin("2pc"), nullptr);
  const Command undecided = Crashing("o1", 1, Fault::kCrashBetween);
  ASSERT_EQ(Serve({Next("o0", 1), undecided}), kKilled) << ReadFile(dir_.File("service.log"));
  EXPECT_EQ(PreparedTransactions(), 1);
  const Command decided = Crashing("o2", 1, Fault::kCrashInside);
  ASSERT_EQ(Serve({decided}), kKilled) << ReadFile(dir_.File("service.log"));
  EXPECT_EQ(PreparedTransactions(), 1) << "the first start rolled the undecided one back";
  ASSERT_EQ(Serve({Next("o1", 1)}), 0) << ReadFile(dir_.File("service.log"));
  EXPECT_EQ(PreparedTransactions(), 0);

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 3) << ExamplesOf(v);
  EXPECT_TRUE(v.Clean()) << ExamplesOf(v);
  auto truth = lab_side_->Committed(env_);
  ASSERT_OK(truth);
  EXPECT_TRUE(truth->committed.count(decided.event_id));
  EXPECT_FALSE(truth->committed.count(undecided.event_id));
}

// The lab's Cleanup after the verdict leaves nothing prepared on the server: what a killed
// service left is completed by the coordinator log.
TEST_F(LabStrategyTest, TwoPhaseCommitCleanupLeavesNothingPrepared) {
  ASSERT_NE(Begin("2pc"), nullptr);
  const Command decided = Crashing("o1", 1, Fault::kCrashInside);
  ASSERT_EQ(Serve({decided}), kKilled) << ReadFile(dir_.File("service.log"));
  EXPECT_EQ(PreparedTransactions(), 1);
  ASSERT_OK(lab_side_->Cleanup(env_));
  EXPECT_EQ(PreparedTransactions(), 0);

  const Verdict v = Judged();
  EXPECT_EQ(v.committed, 1) << ExamplesOf(v);
  EXPECT_TRUE(v.Clean()) << ExamplesOf(v);
}

// What an interrupted 2pc run leaves in its schema, a prepared transaction holding a row, does
// not make the next `courier lab` wait forever for its locks: rolled back with the schema.
TEST(LabRunAfterAnInterruptedRun, APreparedTransactionLeftInTheSchemaIsRolledBack) {
  auto url = SharedPostgres().NewDatabase("lab");
  ASSERT_OK(url);
  {
    auto db = lab::LabDb::Open(*url, "lab_2pc");
    ASSERT_OK(db);
    ASSERT_OK(
        (*db)->Exec("CREATE TABLE lab_orders (order_id TEXT PRIMARY KEY, version BIGINT NOT NULL);"
                    "INSERT INTO lab_orders VALUES ('order-01', 1)"));
    ASSERT_OK((*db)->Begin());
    ASSERT_OK((*db)->Exec("UPDATE lab_orders SET version = 2"));
    ASSERT_OK((*db)->Exec("PREPARE TRANSACTION 'left-by-an-interrupted-run'"));
  }
  TempDir dir;
  CommandResult r = RunCourier({"lab", "--strategy", "2pc", "--faults", "none", "--commands", "20",
                                "--source", *url, "--workdir", dir.File("work")},
                               Duration(180000));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("2pc"), std::string::npos) << r.out;
  auto left = PgQuery(*url, "SELECT count(*) FROM pg_prepared_xacts");
  ASSERT_OK(left);
  EXPECT_EQ((*left)[0], "0");
}

// Without max_prepared_transactions the strategy says so at once.
TEST_F(LabStrategyTest, TwoPhaseCommitNeedsPostgres) {
  LabEnv env{.strategy = "2pc",
             .db_url = "sqlite://" + dir_.File("lab.db"),
             .bootstrap = broker_->bootstrap(),
             .topic = "lab-2pc-sqlite",
             .workdir = dir_.path()};
  auto s = lab::MakeTwoPhaseCommit();
  const Status st = s->Start(env);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("PostgreSQL"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace courier::test
