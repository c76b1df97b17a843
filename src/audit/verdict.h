// The verdict on a delivery: what a reader of the destination saw, judged against what the
// source committed. One definition of lost, ghost, duplicate and out-of-order, shared by
// `courier demo`, the tests and the chaos runs, so that they all count the same way.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace courier {

// One record as a reader of the destination saw it, in the order it was read. Records of one
// aggregate must come in arrival order (one key, one partition or stream).
struct DeliveredRecord {
  std::string event_id;
  std::string aggregate_id;
  // The event's position among its aggregate's committed events (a sequence or version that
  // grows with each commit); -1 when unknown, and then its order is not judged.
  int64_t seq = -1;
};

struct Expectation {
  std::set<std::string> committed;  // each must arrive
  // Committed or not, nobody knows (the connection dropped during COMMIT): may arrive, is never
  // a ghost, is never lost.
  std::set<std::string> in_doubt;
};

struct Verdict {
  int64_t committed = 0;           // events that had to arrive
  int64_t delivered = 0;           // of those, how many arrived (at least once)
  int64_t lost = 0;                // committed, never delivered
  int64_t ghosts = 0;              // delivered, never committed (a rolled-back change)
  int64_t duplicates = 0;          // deliveries of an event_id already seen
  int64_t order_violations = 0;    // first deliveries of an aggregate not in commit order
  int64_t stale_endings = 0;       // aggregates whose last record is not their newest
  int64_t in_doubt_delivered = 0;  // in-doubt events that arrived
  // The first few failures, one line each ("lost e17", "order: aggregate a3 got 4 after 5").
  std::vector<std::string> examples;
  // Every failure's event id (`courier audit` lists them): lost in the expectation's order,
  // the others in the order they were read; a duplicated event once.
  std::vector<std::string> lost_ids;
  std::vector<std::string> ghost_ids;
  std::vector<std::string> duplicate_ids;
  std::vector<std::string> order_violation_ids;  // the event that came after a newer one

  // Nothing lost, no ghost, order kept. Duplicates are allowed: delivery is at least once.
  bool Clean() const { return lost == 0 && ghosts == 0 && order_violations == 0; }
};

Verdict Judge(const Expectation& expected, const std::vector<DeliveredRecord>& deliveries);

// Judge, one delivery at a time, for readers that stream what they read (`courier audit`):
// what it keeps grows with the distinct events delivered and the aggregates, never with the
// records read. `expected` must outlive it.
class StreamingJudge {
 public:
  explicit StreamingJudge(const Expectation& expected) : expected_(expected) {}
  void Add(const DeliveredRecord& d);
  // The verdict on everything added; call once.
  Verdict Finish();

 private:
  const Expectation& expected_;
  Verdict v_;
  std::set<std::string> seen_;
  std::set<std::string> duplicated_;
  // Per aggregate: the seq of the last first-delivery (order), of the newest event delivered,
  // and of the last record read (what a consumer applying records in order ends with).
  std::map<std::string, int64_t> last_first_, newest_, last_read_;
};

}  // namespace courier
