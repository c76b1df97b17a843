// The tests' fake clock: a sleep ends when the fake time passes its deadline or on a stop,
// never because real time passed.
#include "support/fake_clock.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "core/backoff.h"

namespace courier::test {
namespace {

TEST(FakeClock, ASleepEndsWhenTheTimeIsAdvancedPastItsDeadline) {
  FakeClock clock;
  StopSignal stop;
  auto slept = std::async(std::launch::async, [&] { return clock.SleepFor(Duration(1000), stop); });
  ASSERT_TRUE(clock.WaitForSleepers(1));
  clock.Advance(Duration(999));
  EXPECT_EQ(slept.wait_for(std::chrono::milliseconds(20)), std::future_status::timeout)
      << "a millisecond short of its deadline";
  clock.Advance(Duration(1));
  EXPECT_TRUE(slept.get());
  EXPECT_EQ(clock.sleepers(), 0u);
}

TEST(FakeClock, AStopEndsASleepWithoutTimePassing) {
  FakeClock clock;
  StopSignal stop;
  const TimePoint start = clock.Now();
  auto slept =
      std::async(std::launch::async, [&] { return clock.SleepFor(std::chrono::hours(1), stop); });
  ASSERT_TRUE(clock.WaitForSleepers(1));
  stop.Request();
  EXPECT_FALSE(slept.get());
  EXPECT_EQ(clock.Now(), start);
}

TEST(FakeClock, AdvanceToNextWakeupWakesTheEarliestSleeperOnly) {
  FakeClock clock;
  StopSignal stop;
  auto early = std::async(std::launch::async, [&] { return clock.SleepFor(Duration(300), stop); });
  auto late = std::async(std::launch::async, [&] { return clock.SleepFor(Duration(700), stop); });
  ASSERT_TRUE(clock.WaitForSleepers(2));
  EXPECT_EQ(clock.AdvanceToNextWakeup(), Duration(300));
  EXPECT_TRUE(early.get());
  EXPECT_EQ(late.wait_for(std::chrono::milliseconds(20)), std::future_status::timeout);
  EXPECT_EQ(clock.AdvanceToNextWakeup(), Duration(400));
  EXPECT_TRUE(late.get());
  EXPECT_EQ(clock.AdvanceToNextWakeup(), Duration(0)) << "nobody sleeps";
}

// Backoff sleeps on the clock it was given.
TEST(FakeClock, BackoffWaitsOnTheInjectedClock) {
  FakeClock clock;
  StopSignal stop;
  Backoff backoff(Duration(100), Duration(1000), &clock, /*seed=*/3);
  auto waited = std::async(std::launch::async, [&] { return backoff.Wait(stop); });
  ASSERT_TRUE(clock.WaitForSleepers(1));
  const Duration moved = clock.AdvanceToNextWakeup();
  EXPECT_TRUE(waited.get());
  EXPECT_GE(moved, Duration(50));
  EXPECT_LE(moved, Duration(100));
  EXPECT_EQ(backoff.attempt(), 1);
}

}  // namespace
}  // namespace courier::test
