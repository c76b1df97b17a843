#include "core/backoff.h"

#include <gtest/gtest.h>

namespace courier {
namespace {

TEST(Backoff, GrowsExponentiallyWithJitterAndIsCapped) {
  Backoff b(Duration(100), Duration(5000), /*seed=*/42);
  int64_t cap = 100;
  for (int i = 0; i < 12; ++i) {
    const Duration d = b.Next();
    EXPECT_GE(d.count(), cap / 2) << "attempt " << i;
    EXPECT_LE(d.count(), cap) << "attempt " << i;
    cap = std::min<int64_t>(cap * 2, 5000);
  }
}

TEST(Backoff, ResetStartsOver) {
  Backoff b(Duration(100), Duration(5000), 7);
  for (int i = 0; i < 5; ++i) (void)b.Next();
  b.Reset();
  EXPECT_LE(b.Next().count(), 100);
}

TEST(Backoff, JitterSpreadsDelays) {
  Backoff a(Duration(1000), Duration(1000), 1);
  Backoff b(Duration(1000), Duration(1000), 2);
  int differ = 0;
  for (int i = 0; i < 10; ++i) differ += a.Next() != b.Next();
  EXPECT_GT(differ, 5);
}

TEST(StopSignal, InterruptsSleep) {
  StopSignal stop;
  stop.Request();
  const TimePoint start = Clock::Real().Now();
  EXPECT_FALSE(Clock::Real().SleepFor(Duration(60000), stop));
  EXPECT_LT(Clock::Real().Now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace courier
