// Named fault points: absent unless given, and the CLI's hook kills the process only at the
// points it names.
#include "core/fault_points.h"

#include <gtest/gtest.h>

#include <csignal>

namespace courier::test {
namespace {

TEST(FaultPoints, NoNamesNoHook) {
  EXPECT_EQ(KillAtFaultPoints(""), nullptr);
  EXPECT_EQ(KillAtFaultPoints(",,"), nullptr);
  ReachFaultPoint(nullptr, "relay-after-publish");  // no hook: nothing happens
}

TEST(FaultPoints, OnlyTheNamedPointsKill) {
  const auto points = KillAtFaultPoints("relay-after-publish,consume-after-commit");
  ASSERT_NE(points, nullptr);
  ReachFaultPoint(points.get(), "relay-after-checkpoint");
  ReachFaultPoint(points.get(), "relay-after");  // a prefix is another name
  EXPECT_EXIT(ReachFaultPoint(points.get(), "consume-after-commit"),
              ::testing::KilledBySignal(SIGKILL), "");
  EXPECT_EXIT(ReachFaultPoint(points.get(), "relay-after-publish"),
              ::testing::KilledBySignal(SIGKILL), "");
}

}  // namespace
}  // namespace courier::test
