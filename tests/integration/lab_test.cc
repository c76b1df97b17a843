// `courier lab`'s parts: the strategies' database (LabDb on SQLite and PostgreSQL: a
// commit_fails command's COMMIT is refused, a terminated connection comes back) and Kafka
// producer (acks, and a refusal while the broker is down), and the default truth and delivery
// a strategy is judged on.
#include <gtest/gtest.h>

#include "brokers/dev/dev_broker.h"
#include "core/postgres.h"
#include "core/uuid.h"
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

}  // namespace
}  // namespace courier::test
