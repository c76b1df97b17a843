// The fence a relay's publish path sees: a stop request, an abandonment, and the lease's
// deadline, which turns the signal abandoned by itself once the clock passes it.
#include "core/clock.h"

#include <gtest/gtest.h>

namespace courier::test {
namespace {

// A clock that moves only when told.
class ManualClock final : public Clock {
 public:
  TimePoint Now() const override { return now_; }
  bool SleepFor(Duration d, const StopSignal& stop) override {
    now_ += d;
    return !stop.requested();
  }
  void Advance(Duration d) { now_ += d; }

 private:
  TimePoint now_{std::chrono::seconds(1000)};
};

TEST(StopSignal, WithoutALeaseOnlyRequestsStopIt) {
  ManualClock clock;
  StopSignal stop(&clock);
  clock.Advance(std::chrono::hours(24));
  EXPECT_FALSE(stop.requested());
  EXPECT_FALSE(stop.abandoned());
  stop.Request();
  EXPECT_TRUE(stop.requested());
  EXPECT_FALSE(stop.abandoned()) << "a stop request keeps the grace for in-flight work";
}

// The frozen relay: no renewal arrived and nobody called Abandon(), yet once the clock is past
// the lease's deadline the publish path sees the fence.
TEST(StopSignal, PastTheLeaseDeadlineItIsAbandonedWithoutAnyoneSayingSo) {
  ManualClock clock;
  StopSignal fence(&clock);
  fence.BeginTerm(clock.Now() + Duration(1500));
  clock.Advance(Duration(1499));
  EXPECT_FALSE(fence.abandoned());
  EXPECT_FALSE(fence.requested());
  clock.Advance(Duration(1));
  EXPECT_TRUE(fence.abandoned()) << "the deadline itself is the fence";
  EXPECT_TRUE(fence.requested()) << "waits on the signal end at once";
}

TEST(StopSignal, EachRenewalMovesTheDeadline) {
  ManualClock clock;
  StopSignal fence(&clock);
  fence.BeginTerm(clock.Now() + Duration(1500));
  for (int i = 0; i < 10; ++i) {
    clock.Advance(Duration(500));
    fence.Extend(clock.Now() + Duration(1500));
    EXPECT_FALSE(fence.abandoned()) << "renewal " << i;
  }
  clock.Advance(Duration(1500));
  EXPECT_TRUE(fence.abandoned());
}

TEST(StopSignal, ANewTermStartsFreshAndIsCounted) {
  ManualClock clock;
  StopSignal fence(&clock);
  EXPECT_EQ(fence.term(), 0u);
  fence.BeginTerm(clock.Now() + Duration(1500));
  EXPECT_EQ(fence.term(), 1u);
  fence.Abandon();
  EXPECT_TRUE(fence.abandoned());
  fence.Reset();
  EXPECT_FALSE(fence.abandoned());
  clock.Advance(std::chrono::hours(1));
  EXPECT_FALSE(fence.abandoned()) << "between terms there is no deadline (nothing publishes)";
  fence.BeginTerm(clock.Now() + Duration(1500));
  EXPECT_EQ(fence.term(), 2u);
  EXPECT_FALSE(fence.abandoned());
  clock.Advance(Duration(2000));
  EXPECT_TRUE(fence.abandoned());
}

TEST(StopSignal, AbandonIsStickyWhateverTheDeadline) {
  ManualClock clock;
  StopSignal fence(&clock);
  fence.BeginTerm(clock.Now() + Duration(1500));
  fence.Abandon();
  fence.Extend(clock.Now() + Duration(1500));
  EXPECT_TRUE(fence.abandoned()) << "a lost lease is not found again by a late renewal";
}

}  // namespace
}  // namespace courier::test
