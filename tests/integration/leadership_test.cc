// G7 with fencing: one active relay per outbox (or shard), and a relay that lost its lease
// stops publishing before another starts.
#include "stores/postgres_lease.h"

#include <future>
#include <thread>

#include "core/postgres.h"
#include "sources/source.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class LeadershipTest : public ::testing::Test {
 protected:
  void SetUp() override { db_ = std::make_unique<TestDb>(TestDb::Make(true)); }

  LeaseOptions Lease(Duration lease) const {
    return LeaseOptions{db_->url, db_->url, TableNames{}.Leases(), "courier relay courier_outbox",
                        lease};
  }

  // Ends the session holding the outbox's advisory lock, as a DBA or a network cut would.
  int64_t CutHolderSession() const {
    auto conn = PgConnect(db_->url);
    EXPECT_OK(conn);
    auto res = PgExec(conn->get(),
                      "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE"
                      " locktype = 'advisory' AND granted AND database = (SELECT oid FROM"
                      " pg_database WHERE datname = current_database())");
    EXPECT_OK(res);
    return res.ok() ? std::stoll(PQgetvalue(res->get(), 0, 0)) : 0;
  }

  std::unique_ptr<TestDb> db_;
};

using Steady = std::chrono::steady_clock;

TEST_F(LeadershipTest, CutSessionFencesTheHolderBeforeTheStandbyStarts) {
  PostgresLease a(Lease(Duration(2000)));
  StopSignal stop, fence_a, fence_b;
  ASSERT_OK(a.Acquire(stop, true, &fence_a));
  ASSERT_TRUE(a.held());
  const int64_t first_epoch = a.epoch();

  PostgresLease b(Lease(Duration(2000)));
  std::promise<Steady::time_point> b_started;
  std::thread standby([&] {
    EXPECT_OK(b.Acquire(stop, true, &fence_b));
    b_started.set_value(Steady::now());
  });
  // B stands by while A renews: well past A's lease.
  auto started = b_started.get_future();
  EXPECT_EQ(started.wait_for(std::chrono::milliseconds(3000)), std::future_status::timeout);
  ASSERT_TRUE(a.held());

  const Steady::time_point cut = Steady::now();
  ASSERT_EQ(CutHolderSession(), 1);
  ASSERT_TRUE(WaitUntil([&] { return fence_a.abandoned(); }, Duration(5000)));
  const Steady::time_point a_stopped = Steady::now();
  EXPECT_FALSE(a.held());
  ASSERT_EQ(started.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the standby takes over within a few seconds";
  const Steady::time_point b_at = started.get();
  standby.join();
  EXPECT_LT(a_stopped, b_at) << "the fenced relay stopped publishing before the standby began";
  EXPECT_LT(b_at - cut, std::chrono::seconds(5));
  EXPECT_TRUE(b.held());
  EXPECT_FALSE(fence_b.requested());
  EXPECT_GT(b.epoch(), first_epoch);
  b.Release();
}

TEST_F(LeadershipTest, CleanReleaseHandsOverAtOnce) {
  PostgresLease a(Lease(Duration(30000)));
  StopSignal stop, fence;
  ASSERT_OK(a.Acquire(stop, true, &fence));
  PostgresLease b(Lease(Duration(30000)));
  StopSignal fence_b;
  EXPECT_EQ(b.Acquire(stop, /*wait=*/false, &fence_b).code(), StatusCode::kFailedPrecondition);
  a.Release();
  const Steady::time_point released = Steady::now();
  ASSERT_OK(b.Acquire(stop, true, &fence_b));
  EXPECT_LT(Steady::now() - released, std::chrono::seconds(5))
      << "a released lease is not waited out (it is 30 s)";
  EXPECT_FALSE(fence.abandoned()) << "releasing is not losing";
}

// A holder whose session is alive but which stopped renewing (a frozen process) is cut off
// once its lease is a whole period overdue, and the standby takes over.
TEST_F(LeadershipTest, StandbyEndsTheSessionOfAHolderThatStoppedRenewing) {
  auto zombie = PgConnect(db_->url);
  ASSERT_OK(zombie);
  ASSERT_OK(
      PgExec(zombie->get(), "SELECT pg_advisory_lock(hashtext('courier relay courier_outbox'))"));
  ASSERT_OK(PgExec(zombie->get(),
                   "INSERT INTO courier_outbox_lease (name, holder, epoch, expires_at) VALUES"
                   " ('courier relay courier_outbox', 'frozen:1', 7, now())"));
  PostgresLease b(Lease(Duration(1000)));
  StopSignal stop, fence;
  const Steady::time_point start = Steady::now();
  ASSERT_OK(b.Acquire(stop, true, &fence));
  EXPECT_LT(Steady::now() - start, std::chrono::seconds(8));
  EXPECT_EQ(b.epoch(), 8);
  EXPECT_FALSE(PgExec(zombie->get(), "SELECT 1").ok()) << "the frozen holder's session is gone";
}

// G9: pg_locks is cluster-wide, and a relay of an outbox of the same name in another database
// holds the same advisory key. A standby ends only its own database's frozen holder.
TEST_F(LeadershipTest, StandbyEndsOnlyTheFrozenHolderOfItsOwnDatabase) {
  // A healthy relay of courier_outbox in this database.
  PostgresLease healthy(Lease(Duration(1000)));
  StopSignal stop, healthy_fence;
  ASSERT_OK(healthy.Acquire(stop, true, &healthy_fence));
  // In another database on the same server: a frozen holder, whose lease ran out, and a
  // standby.
  TestDb other = TestDb::Make(true);
  auto zombie = PgConnect(other.url);
  ASSERT_OK(zombie);
  ASSERT_OK(
      PgExec(zombie->get(), "SELECT pg_advisory_lock(hashtext('courier relay courier_outbox'))"));
  ASSERT_OK(PgExec(zombie->get(),
                   "INSERT INTO courier_outbox_lease (name, holder, epoch, expires_at) VALUES"
                   " ('courier relay courier_outbox', 'frozen:1', 7, now())"));
  PostgresLease standby(LeaseOptions{other.url, other.url, TableNames{}.Leases(),
                                     "courier relay courier_outbox", Duration(1000)});
  StopSignal standby_fence;
  ASSERT_OK(standby.Acquire(stop, true, &standby_fence));
  EXPECT_EQ(standby.epoch(), 8);
  EXPECT_FALSE(PgExec(zombie->get(), "SELECT 1").ok()) << "the frozen holder's session is gone";

  // The healthy relay of the first database keeps its session, its lock and its lease.
  EXPECT_FALSE(WaitUntil([&] { return healthy_fence.abandoned(); }, Duration(3000)))
      << "the other database's standby ended the healthy relay's session";
  EXPECT_TRUE(healthy.held());
  auto locks = PgQuery(db_->url,
                       "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND"
                       " database = (SELECT oid FROM pg_database WHERE datname ="
                       " current_database())");
  ASSERT_OK(locks);
  EXPECT_EQ((*locks)[0], "1");
  standby.Release();
  healthy.Release();
}

// `courier status` reports the active relay of its own database only.
TEST_F(LeadershipTest, StatusSeesOnlyTheRelayOfItsOwnDatabase) {
  PostgresLease active(Lease(Duration(30000)));
  StopSignal stop, fence;
  ASSERT_OK(active.Acquire(stop, true, &fence));
  TestDb other = TestDb::Make(true);  // same outbox name, never had a relay
  CommandResult idle = RunCourier({"status", "--source", other.url});
  ASSERT_EQ(idle.exit_code, 0) << idle.err;
  EXPECT_NE(idle.out.find("active relay       no"), std::string::npos) << idle.out;
  CommandResult busy = RunCourier({"status", "--source", db_->url});
  ASSERT_EQ(busy.exit_code, 0) << busy.err;
  EXPECT_NE(busy.out.find("active relay       yes"), std::string::npos) << busy.out;
  active.Release();
}

TEST_F(LeadershipTest, MissingLeaseTableSaysToMigrate) {
  auto conn = PgConnect(db_->url);
  ASSERT_OK(conn);
  ASSERT_OK(PgExec(conn->get(), "DROP TABLE courier_outbox_lease"));
  PostgresLease a(Lease(Duration(2000)));
  StopSignal stop, fence;
  const Status st = a.Acquire(stop, true, &fence);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("courier migrate"), std::string::npos) << st.message();
}

// MakeLeadership chooses by the source URL: the PostgreSQL lease (its lock excludes a second
// relay of the same outbox, and a shard has its own), or for SQLite the file lock.
TEST_F(LeadershipTest, MadeFromTheSourceUrlExcludesASecondRelay) {
  StopSignal stop, fence;
  auto a = MakeLeadership({db_->url, "courier_outbox", 0, 1, Duration(30000)});
  ASSERT_OK(a);
  ASSERT_NE(dynamic_cast<PostgresLease*>(a->get()), nullptr);
  ASSERT_OK((*a)->Acquire(stop, /*wait=*/false, &fence));
  EXPECT_TRUE((*a)->held());
  auto b = MakeLeadership({db_->url, "courier_outbox", 0, 1, Duration(30000)});
  ASSERT_OK(b);
  EXPECT_EQ((*b)->Acquire(stop, /*wait=*/false, &fence).code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*b)->held());
  (*a)->Release();
  EXPECT_FALSE((*a)->held());
  ASSERT_OK((*b)->Acquire(stop, /*wait=*/false, &fence));
  (*b)->Release();

  TestDb lite = TestDb::Make(false);
  auto c = MakeLeadership({lite.url, "courier_outbox", 0, 1, Duration(30000)});
  auto d = MakeLeadership({lite.url, "courier_outbox", 0, 1, Duration(30000)});
  ASSERT_OK(c);
  ASSERT_OK(d);
  EXPECT_EQ(dynamic_cast<PostgresLease*>(c->get()), nullptr);
  ASSERT_OK((*c)->Acquire(stop, /*wait=*/false, nullptr));
  const Status refused = (*d)->Acquire(stop, /*wait=*/false, nullptr);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("another relay is active on this outbox"), std::string::npos)
      << refused.message();
  (*c)->Release();
  ASSERT_OK((*d)->Acquire(stop, /*wait=*/false, nullptr));
  EXPECT_TRUE((*d)->held());
}

// G8 with Kafka: each batch is one transaction of the outbox's transactional.id, and the
// broker refusing it as fenced (another relay initialised the id: PRODUCER_FENCED on EndTxn)
// makes the relay stand down like a lost lease: the batch is not acked, the lease goes back,
// and a new term (epoch 2) with a new producer publishes it.
TEST_F(LeadershipTest, BrokerFencedKafkaProducerStandsDownAndNothingIsAcked) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("order", 1));
  RelayOptions o = TestRelayOptions(db_->url, "kafka://" + (*broker)->bootstrap() + "/order");
  o.lease = Duration(1000);
  int64_t seq = 1;
  std::set<std::string> ids = CommitEvents(*db_, 20, 4, &seq);
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  EXPECT_EQ(db_->Count("courier_outbox_lease WHERE epoch = 1"), 1);

  constexpr int16_t kEndTxn = 26;
  (*broker)->FailNextRequests(kEndTxn, RD_KAFKA_RESP_ERR_PRODUCER_FENCED, 1);
  const std::set<std::string> fenced = CommitEvents(*db_, 20, 4, &seq);
  ids.insert(fenced.begin(), fenced.end());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox_lease WHERE epoch = 2") == 1; }))
      << "the fenced relay stood down and took the lease again in a new term";
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  EXPECT_OK(relay.Stop());
  // The mock writes no abort markers, so the refused transaction's copies are read too:
  // duplicates, never losses or reordering.
  const int64_t duplicates = ExpectDelivered(ReadTopic(**broker, "order"), ids);
  EXPECT_LE(duplicates, 20);
}

// Without a lease to fence (transactional=false, or a SQLite outbox) the producer is the plain
// idempotent one: the broker is never asked to commit anything.
TEST_F(LeadershipTest, KafkaSinkWithoutTransactionsNeverCommits) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  RelayOptions o = TestRelayOptions(
      db_->url, "kafka://" + (*broker)->bootstrap() + "/order?transactional=false");
  o.once = true;
  constexpr int16_t kEndTxn = 26;
  (*broker)->FailNextRequests(kEndTxn, RD_KAFKA_RESP_ERR_PRODUCER_FENCED, 100);
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(*db_, 30, 3, &seq);
  auto relay = Relay::Create(o);
  ASSERT_OK(relay);
  ASSERT_OK((*relay)->Run());
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
  EXPECT_EQ(ExpectDelivered(ReadTopic(**broker, "order"), ids), 0);
}

}  // namespace
}  // namespace courier::test
