#include "audit/verdict.h"

#include <map>
#include <utility>

namespace courier {
namespace {

constexpr size_t kMaxExamples = 10;

void Example(Verdict& v, std::string line) {
  if (v.examples.size() < kMaxExamples) v.examples.push_back(std::move(line));
}

}  // namespace

Verdict Judge(const Expectation& expected, const std::vector<DeliveredRecord>& deliveries) {
  Verdict v;
  v.committed = static_cast<int64_t>(expected.committed.size());
  std::set<std::string> seen;
  // Per aggregate: the seq of the last first-delivery (order), of the newest event delivered,
  // and of the last record read (what a consumer applying records in order ends with).
  std::map<std::string, int64_t> last_first, newest, last_read;
  for (const DeliveredRecord& d : deliveries) {
    if (d.seq >= 0) {
      last_read[d.aggregate_id] = d.seq;
      auto [it, inserted] = newest.emplace(d.aggregate_id, d.seq);
      if (!inserted && d.seq > it->second) it->second = d.seq;
    }
    if (!seen.insert(d.event_id).second) {
      ++v.duplicates;
      continue;
    }
    if (expected.committed.count(d.event_id) == 0) {
      if (expected.in_doubt.count(d.event_id) > 0) {
        ++v.in_doubt_delivered;
      } else {
        ++v.ghosts;
        Example(v, "ghost " + d.event_id + " (aggregate " + d.aggregate_id + ")");
        continue;  // a ghost has no place in its aggregate's committed order
      }
    }
    if (d.seq < 0) continue;
    auto [it, inserted] = last_first.emplace(d.aggregate_id, d.seq);
    if (inserted) continue;
    if (d.seq <= it->second) {
      ++v.order_violations;
      Example(v, "order: aggregate " + d.aggregate_id + " got " + std::to_string(d.seq) +
                     " after " + std::to_string(it->second));
    } else {
      it->second = d.seq;
    }
  }
  for (const std::string& id : expected.committed) {
    if (seen.count(id) > 0) {
      ++v.delivered;
    } else {
      ++v.lost;
      Example(v, "lost " + id);
    }
  }
  for (const auto& [aggregate, seq] : last_read) {
    if (seq != newest[aggregate]) {
      ++v.stale_endings;
      Example(v, "stale: aggregate " + aggregate + " ends at " + std::to_string(seq) +
                     ", not its newest " + std::to_string(newest[aggregate]));
    }
  }
  return v;
}

}  // namespace courier
