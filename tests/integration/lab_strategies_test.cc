// The lab's naive strategies and two-phase commit, each driven directly (Prepare, Start,
// Handle, Finish in this process, against real PostgreSQL and the dev broker) and judged the
// lab's way (Committed vs Delivered, audit/verdict.h): each shows the failure its design
// predicts, or holds. Crashes inside Handle are the lab's (tests/integration/lab_test.cc);
// 2pc's recovery is driven here from what a crash leaves behind.
#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "brokers/dev/dev_broker.h"
#include "core/uuid.h"
#include "lab/lab_db.h"
#include "lab/strategy.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

using lab::Command;
using lab::LabEnv;
using lab::Strategy;

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
