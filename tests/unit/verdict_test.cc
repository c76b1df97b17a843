#include "audit/verdict.h"

#include <gtest/gtest.h>

namespace courier {
namespace {

Expectation Committed(std::set<std::string> ids) { return Expectation{std::move(ids), {}}; }

TEST(Verdict, EverythingOnceInOrderIsClean) {
  const Verdict v =
      Judge(Committed({"e1", "e2", "e3"}), {{"e1", "a", 1}, {"e3", "b", 1}, {"e2", "a", 2}});
  EXPECT_TRUE(v.Clean());
  EXPECT_EQ(v.committed, 3);
  EXPECT_EQ(v.delivered, 3);
  EXPECT_EQ(v.duplicates, 0);
  EXPECT_EQ(v.stale_endings, 0);
  EXPECT_TRUE(v.examples.empty());
}

TEST(Verdict, CountsLostGhostsAndDuplicates) {
  const Verdict v =
      Judge(Committed({"e1", "e2", "e3"}), {{"e1", "a", 1}, {"g1", "a", 2}, {"e1", "a", 1}});
  EXPECT_FALSE(v.Clean());
  EXPECT_EQ(v.delivered, 1);
  EXPECT_EQ(v.lost, 2);
  EXPECT_EQ(v.ghosts, 1);
  EXPECT_EQ(v.duplicates, 1);
  // The ghost is also the newest record of aggregate a, so the redelivered e1 ends it stale.
  EXPECT_EQ(v.stale_endings, 1);
  ASSERT_EQ(v.examples.size(), 4u);
  EXPECT_EQ(v.examples[0], "ghost g1 (aggregate a)");
  EXPECT_EQ(v.examples[1], "lost e2");
  EXPECT_EQ(v.examples[2], "lost e3");
}

TEST(Verdict, OrderIsJudgedPerAggregateOnFirstDeliveries) {
  // A redelivered older event (a duplicate) is not an order violation; a first delivery of an
  // older event after a newer one is.
  const Verdict dup = Judge(Committed({"e1", "e2"}),
                            {{"e1", "a", 1}, {"e2", "a", 2}, {"e1", "a", 1}, {"e2", "a", 2}});
  EXPECT_EQ(dup.order_violations, 0);
  EXPECT_EQ(dup.duplicates, 2);
  const Verdict swapped =
      Judge(Committed({"e1", "e2", "x1"}), {{"e2", "a", 2}, {"x1", "b", 1}, {"e1", "a", 1}});
  EXPECT_EQ(swapped.order_violations, 1);
  EXPECT_FALSE(swapped.Clean());
  EXPECT_EQ(swapped.examples.front(), "order: aggregate a got 1 after 2");
}

TEST(Verdict, AGhostDoesNotBreakTheCommittedOrder) {
  // A rolled-back change published version 2; the retry committed version 2 under another id.
  const Verdict v = Judge(Committed({"e1", "e2"}), {{"e1", "a", 1}, {"g", "a", 2}, {"e2", "a", 2}});
  EXPECT_EQ(v.ghosts, 1);
  EXPECT_EQ(v.order_violations, 0);
}

TEST(Verdict, InDoubtEventsAreNeitherLostNorGhosts) {
  const Verdict v = Judge(Expectation{{"e1"}, {"d1", "d2"}}, {{"e1", "a", 1}, {"d1", "a", 2}});
  EXPECT_TRUE(v.Clean());
  EXPECT_EQ(v.in_doubt_delivered, 1);
  EXPECT_EQ(v.lost, 0);
}

TEST(Verdict, AStaleEndingIsAnOlderCopyAfterTheNewest) {
  // A consumer applying records in order would end at seq 1 for aggregate a.
  const Verdict v =
      Judge(Committed({"e1", "e2"}), {{"e1", "a", 1}, {"e2", "a", 2}, {"e1", "a", 1}});
  EXPECT_EQ(v.stale_endings, 1);
  EXPECT_EQ(v.examples.front(), "stale: aggregate a ends at 1, not its newest 2");
}

TEST(Verdict, UnknownPositionsSkipOrder) {
  const Verdict v = Judge(Committed({"e1", "e2"}), {{"e2", "a", -1}, {"e1", "a", -1}});
  EXPECT_TRUE(v.Clean());
  EXPECT_EQ(v.stale_endings, 0);
}

TEST(Verdict, ExamplesAreBounded) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) ids.insert("e" + std::to_string(i));
  const Verdict v = Judge(Committed(ids), {});
  EXPECT_EQ(v.lost, 100);
  EXPECT_EQ(v.examples.size(), 10u);
}

}  // namespace
}  // namespace courier
