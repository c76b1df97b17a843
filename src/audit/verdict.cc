#include "audit/verdict.h"

#include <utility>

namespace courier {
namespace {

constexpr size_t kMaxExamples = 10;

void Example(Verdict& v, std::string line) {
  if (v.examples.size() < kMaxExamples) v.examples.push_back(std::move(line));
}

}  // namespace

void StreamingJudge::Add(const DeliveredRecord& d) {
  Verdict& v = v_;
  if (d.seq >= 0) {
    last_read_[d.aggregate_id] = d.seq;
    auto [it, inserted] = newest_.emplace(d.aggregate_id, d.seq);
    if (!inserted && d.seq > it->second) it->second = d.seq;
  }
  if (!seen_.insert(d.event_id).second) {
    ++v.duplicates;
    if (duplicated_.insert(d.event_id).second) v.duplicate_ids.push_back(d.event_id);
    return;
  }
  if (expected_.committed.count(d.event_id) == 0) {
    if (expected_.in_doubt.count(d.event_id) > 0) {
      ++v.in_doubt_delivered;
    } else {
      ++v.ghosts;
      v.ghost_ids.push_back(d.event_id);
      Example(v, "ghost " + d.event_id + " (aggregate " + d.aggregate_id + ")");
      return;  // a ghost has no place in its aggregate's committed order
    }
  }
  if (d.seq < 0) return;
  auto [it, inserted] = last_first_.emplace(d.aggregate_id, d.seq);
  if (inserted) return;
  if (d.seq <= it->second) {
    ++v.order_violations;
    v.order_violation_ids.push_back(d.event_id);
    Example(v, "order: aggregate " + d.aggregate_id + " got " + std::to_string(d.seq) + " after " +
                   std::to_string(it->second));
  } else {
    it->second = d.seq;
  }
}

Verdict StreamingJudge::Finish() {
  Verdict& v = v_;
  v.committed = static_cast<int64_t>(expected_.committed.size());
  for (const std::string& id : expected_.committed) {
    if (seen_.count(id) > 0) {
      ++v.delivered;
    } else {
      ++v.lost;
      v.lost_ids.push_back(id);
      Example(v, "lost " + id);
    }
  }
  for (const auto& [aggregate, seq] : last_read_) {
    if (seq != newest_[aggregate]) {
      ++v.stale_endings;
      Example(v, "stale: aggregate " + aggregate + " ends at " + std::to_string(seq) +
                     ", not its newest " + std::to_string(newest_[aggregate]));
    }
  }
  return std::move(v_);
}

Verdict Judge(const Expectation& expected, const std::vector<DeliveredRecord>& deliveries) {
  StreamingJudge judge(expected);
  for (const DeliveredRecord& d : deliveries) judge.Add(d);
  return judge.Finish();
}

}  // namespace courier
