// G7/G8: the PostgreSQL lease's renewals and its expiry measured on a fake clock. The database
// is real; only time is not, so a lease period passes without waiting for it.
#include <thread>

#include "core/postgres.h"
#include "sources/source.h"
#include "stores/postgres_lease.h"
#include "support/fake_clock.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class LeaseClockTest : public ::testing::Test {
 protected:
  void SetUp() override { db_ = std::make_unique<TestDb>(TestDb::Make(true)); }

  LeaseOptions Lease() {
    LeaseOptions o{db_->url, db_->url, TableNames{}.Leases(), "courier relay courier_outbox",
                   kLease};
    o.clock = &clock_;
    return o;
  }
  std::string ExpiresInMs() {
    auto res = PgQuery(db_->url,
                       "SELECT (extract(epoch FROM expires_at - now()) * 1000)::bigint FROM"
                       " courier_outbox_lease");
    return res.ok() && !res->empty() ? (*res)[0] : "?";
  }

  static constexpr Duration kLease{2000};
  std::unique_ptr<TestDb> db_;
  FakeClock clock_;
};

// The holder renews every lease/4 of its clock; each renewal moves the fence's deadline, so
// across many lease periods it stays the holder.
TEST_F(LeaseClockTest, RenewalsEveryQuarterKeepTheLeaseAcrossManyPeriods) {
  PostgresLease a(Lease());
  StopSignal stop, fence(&clock_);
  ASSERT_OK(a.Acquire(stop, true, &fence));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(clock_.WaitForSleepers(1)) << "the renewer waits for its next renewal";
    EXPECT_EQ(clock_.AdvanceToNextWakeup(), kLease / 4) << "renewal " << i;
  }
  ASSERT_TRUE(clock_.WaitForSleepers(1)) << "the last renewal went through";
  EXPECT_TRUE(a.held()) << "five lease periods later";
  EXPECT_FALSE(fence.abandoned());
  EXPECT_GT(std::stoll(ExpiresInMs()), 0) << "the row was renewed in the database";
  EXPECT_EQ(a.epoch(), 1);
  a.Release();
}

// No renewal for 3/4 of the lease (the process was frozen, the renewer did not get to run):
// the fence is down as soon as the clock reaches the deadline, and the renewer, when it runs,
// gives the lease up instead of renewing it late.
TEST_F(LeaseClockTest, WithoutARenewalForThreeQuartersOfTheLeaseItIsLost) {
  PostgresLease a(Lease());
  StopSignal stop, fence(&clock_);
  ASSERT_OK(a.Acquire(stop, true, &fence));
  ASSERT_TRUE(clock_.WaitForSleepers(1));
  clock_.Advance(kLease * 3 / 4);
  EXPECT_TRUE(fence.abandoned()) << "at the deadline, whether the renewer ran or not";
  EXPECT_FALSE(a.held());
  EXPECT_FALSE(clock_.WaitForSleepers(1, Duration(500)))
      << "the renewer ended instead of waiting for another renewal";
  a.Release();
  EXPECT_FALSE(a.held());
  EXPECT_TRUE(fence.abandoned()) << "a lost lease stays lost";
}

}  // namespace
}  // namespace courier::test
