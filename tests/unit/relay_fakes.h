// In-memory stand-ins for what surrounds the relay loop (an outbox, its dead-letter table, a
// sink), for testing the loop's own logic with a FakeClock: no database, no broker, no sleeps.
//
// One World holds the state the fakes share, so a test can see at any moment what is still in
// the outbox, what the sink received and acked, and what each checkpoint contained.
//
// Thread-safety: the relay runs on its own thread, the test reads the World from another; every
// access goes through World::mu.
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "brokers/sink.h"
#include "relay/relay_internal.h"
#include "sources/source.h"
#include "stores/dead_letters.h"
#include "stores/leadership.h"
#include "support/fake_clock.h"

namespace courier::test {

struct World {
  std::mutex mu;
  std::vector<Event> outbox;  // pending rows, id order
  std::vector<DeadLetter> dead_letters;
  int64_t next_id = 1;
  // What the sink was handed, in order (event ids), and which of those it acked.
  std::vector<std::string> sent;
  std::set<int64_t> acked;
  // Each Checkpoint's acked ids; an id the sink had not acked at that moment is a violation.
  std::vector<std::vector<int64_t>> checkpoints;
  std::vector<int64_t> checkpointed_unacked;
  // Decides the sink's answer for one hand-off of an event (attempt counts from 1).
  std::function<Status(const Event&, int attempt)> answer = [](const Event&, int) {
    return Status::Ok();
  };
  std::map<std::string, int> attempts;  // per event_id
  // When set, the sink calls it (without holding mu) before answering a batch.
  std::function<void()> on_publish;

  // Appends an outbox row and returns its id.
  int64_t Add(const std::string& aggregate_id, const std::string& payload = "{}") {
    std::lock_guard<std::mutex> lock(mu);
    Event e;
    e.id = next_id++;
    e.event_id = "e" + std::to_string(e.id);
    e.aggregate_type = "order";
    e.aggregate_id = aggregate_id;
    e.event_type = "changed";
    e.payload = payload;
    outbox.push_back(e);
    return e.id;
  }
  size_t pending() {
    std::lock_guard<std::mutex> lock(mu);
    return outbox.size();
  }
  // The payloads the sink was handed for `aggregate_id`'s events, in order.
  std::vector<std::string> SentOf(const std::string& aggregate_id) {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> out;
    for (const std::string& id : sent) {
      if (aggregate_of.at(id) == aggregate_id) out.push_back(id);
    }
    return out;
  }
  std::map<std::string, std::string> aggregate_of;  // event_id -> aggregate_id (sent ones)
};

class FakeSource final : public Source {
 public:
  FakeSource(World& world, FakeClock& clock, Duration poll)
      : w_(world), clock_(clock), poll_(poll) {}
  Status Open() override { return Status::Ok(); }
  Status Activate(const StopSignal&) override { return Status::Ok(); }
  Result<FetchedBatch> Fetch(size_t max) override {
    std::lock_guard<std::mutex> lock(w_.mu);
    FetchedBatch batch;
    for (size_t i = 0; i < w_.outbox.size() && i < max; ++i) batch.events.push_back(w_.outbox[i]);
    return batch;
  }
  void Wait(const StopSignal& stop) override { clock_.SleepFor(poll_, stop); }
  Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                    const std::string& sink_name) override {
    std::lock_guard<std::mutex> lock(w_.mu);
    w_.checkpoints.emplace_back(acked.begin(), acked.end());
    for (int64_t id : acked) {
      if (w_.acked.count(id) == 0) w_.checkpointed_unacked.push_back(id);
    }
    for (const Rejected& r : rejected) {
      const auto row = std::find_if(w_.outbox.begin(), w_.outbox.end(),
                                    [&](const Event& e) { return e.id == r.id; });
      if (row == w_.outbox.end()) continue;
      DeadLetter d;
      d.event = *row;
      d.status = r.status;
      d.error = r.error;
      d.sink = sink_name;
      d.attempts = 1;
      w_.dead_letters.push_back(d);
    }
    std::erase_if(w_.outbox, [&](const Event& e) {
      return std::find(acked.begin(), acked.end(), e.id) != acked.end() ||
             std::any_of(rejected.begin(), rejected.end(),
                         [&](const Rejected& r) { return r.id == e.id; });
    });
    return Status::Ok();
  }
  Result<int64_t> DeletePublishedBefore(Duration) override { return int64_t{0}; }
  void Close() override {}
  std::string Describe() const override { return "fake source"; }

 private:
  World& w_;
  FakeClock& clock_;
  Duration poll_;
};

// Answers as World::answer says; like every sink, once an event of an aggregate failed in a
// batch it hands none of that aggregate's later events over, and checks the fence first.
class FakeSink final : public Sink {
 public:
  explicit FakeSink(World& world) : w_(world) {}
  Status Configure() override { return Status::Ok(); }
  Status Open() override { return Status::Ok(); }
  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    if (w_.on_publish) w_.on_publish();
    std::lock_guard<std::mutex> lock(w_.mu);
    std::vector<Status> results;
    HeldBack held;
    for (const Event& e : batch) {
      Status r;
      if (held.Holds(e, &r)) {
        results.push_back(r);
        continue;
      }
      r = CheckFence(stop);
      if (r.ok()) {
        w_.sent.push_back(e.event_id);
        w_.aggregate_of[e.event_id] = e.aggregate_id;
        r = w_.answer(e, ++w_.attempts[e.event_id]);
        if (r.ok()) w_.acked.insert(e.id);
      }
      if (!r.ok()) held.Failed(e);
      results.push_back(r);
    }
    return results;
  }
  std::string Describe() const override { return "fake sink"; }

 private:
  World& w_;
};

// The dead-letter table of World: parked and held rows block their aggregate; rows queued for
// retry (or held behind a row no longer parked) are ready, in id order.
class FakeDeadLetterStore final : public DeadLetterStore {
 public:
  explicit FakeDeadLetterStore(World& world) : w_(world) {}
  Result<std::vector<AggregateKey>> Blocking() override {
    std::lock_guard<std::mutex> lock(w_.mu);
    std::vector<AggregateKey> keys;
    for (const DeadLetter& d : w_.dead_letters) {
      if (d.status == kSkipped) continue;
      keys.emplace_back(d.event.aggregate_type, d.event.aggregate_id);
    }
    return keys;
  }
  Result<std::vector<DeadLetter>> Ready(size_t max, bool park) override {
    std::lock_guard<std::mutex> lock(w_.mu);
    std::vector<DeadLetter> ready;
    std::set<std::string> parked;
    for (const DeadLetter& d : w_.dead_letters) {
      if (d.status == kParked && park) parked.insert(d.event.aggregate_id);
      if (d.status != kRetry && d.status != kHeld) continue;
      if (parked.count(d.event.aggregate_id) > 0) continue;
      if (ready.size() < max) ready.push_back(d);
    }
    return ready;
  }
  Status Resolve(std::span<const int64_t> published, std::span<const Rejected> failed) override {
    std::lock_guard<std::mutex> lock(w_.mu);
    std::erase_if(w_.dead_letters, [&](const DeadLetter& d) {
      return std::find(published.begin(), published.end(), d.event.id) != published.end();
    });
    for (const Rejected& r : failed) {
      for (DeadLetter& d : w_.dead_letters) {
        if (d.event.id != r.id) continue;
        d.status = r.status;
        d.error = r.error;
        ++d.attempts;
      }
    }
    return Status::Ok();
  }
  Result<std::vector<DeadLetter>> List(size_t) override {
    std::lock_guard<std::mutex> lock(w_.mu);
    return w_.dead_letters;
  }
  Result<std::vector<DeadLetter>> Find(std::span<const int64_t>) override {
    return InternalError("not used by the relay");
  }
  Result<std::vector<int64_t>> Retry(std::span<const int64_t> ids) override {
    std::lock_guard<std::mutex> lock(w_.mu);
    std::vector<int64_t> queued;
    for (DeadLetter& d : w_.dead_letters) {
      if (d.status != kParked && d.status != kSkipped) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), d.event.id) == ids.end()) continue;
      d.status = kRetry;
      queued.push_back(d.event.id);
    }
    return queued;
  }
  Result<std::vector<int64_t>> Drop(std::span<const int64_t>) override {
    return InternalError("not used by the relay");
  }

 private:
  World& w_;
};

// Always the leader: the relay loop's own logic does not depend on how leadership is won.
class FakeLeadership final : public Leadership {
 public:
  Status Acquire(const StopSignal&, bool, StopSignal*) override {
    held_ = true;
    return Status::Ok();
  }
  bool held() const override { return held_; }
  void Release() override { held_ = false; }

 private:
  bool held_ = false;
};

// A relay over World's outbox, sink and dead letters; `options.clock` must be a FakeClock.
inline std::unique_ptr<Relay> MakeTestRelay(const RelayOptions& options, World& world) {
  auto& clock = *static_cast<FakeClock*>(options.clock);
  RelayParts parts;
  parts.source = std::make_unique<FakeSource>(world, clock, options.poll_interval);
  parts.sink = std::make_unique<FakeSink>(world);
  parts.leadership = std::make_unique<FakeLeadership>();
  parts.dead_letters = [&world]() -> Result<std::unique_ptr<DeadLetterStore>> {
    return std::unique_ptr<DeadLetterStore>(std::make_unique<FakeDeadLetterStore>(world));
  };
  return MakeRelay(options, std::move(parts));
}

}  // namespace courier::test
