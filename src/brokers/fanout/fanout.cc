// Fan-out: one relay, several sinks. An event is done (acked) only when every sink acked it.
//
// The sinks publish each batch in parallel. Which sinks already acked an event is remembered
// while the event is not done, so a retry goes only to the sinks that still owe an ack: a
// stopped sink delays the checkpoint (the rows stay in the outbox) but does not make the
// healthy sinks receive the same event again and again. A sink that refuses an event for good
// makes it a dead letter (with that sink's error) once the others have answered.
#include <thread>
#include <unordered_map>

#include "brokers/sink.h"

namespace courier {
namespace {

class FanOutSink final : public Sink {
 public:
  explicit FanOutSink(std::vector<std::unique_ptr<Sink>> sinks) : sinks_(std::move(sinks)) {}

  Status Configure() override {
    for (auto& sink : sinks_) COURIER_RETURN_IF_ERROR(sink->Configure());
    return Status::Ok();
  }

  Status Open() override {
    for (auto& sink : sinks_) COURIER_RETURN_IF_ERROR(sink->Open());
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    const size_t n = sinks_.size();
    // Per sink, the events of the batch it still owes an ack for (in batch order).
    std::vector<std::vector<size_t>> owed(n);
    for (size_t i = 0; i < batch.size(); ++i) {
      std::vector<bool>& acked = Acked(batch[i].event_id);
      for (size_t s = 0; s < n; ++s) {
        if (!acked[s]) owed[s].push_back(i);
      }
    }
    std::vector<std::vector<Status>> answers(n);
    std::vector<std::thread> threads;
    for (size_t s = 0; s < n; ++s) {
      threads.emplace_back([&, s] {
        std::vector<Event> events;
        events.reserve(owed[s].size());
        for (size_t i : owed[s]) events.push_back(batch[i]);
        answers[s] = events.empty() ? std::vector<Status>{} : sinks_[s]->Publish(events, stop);
      });
    }
    for (std::thread& t : threads) t.join();

    std::vector<Status> results(batch.size());
    std::vector<Status> rejected(batch.size());
    for (size_t s = 0; s < n; ++s) {
      for (size_t k = 0; k < owed[s].size(); ++k) {
        const size_t i = owed[s][k];
        const Status& st = answers[s][k];
        if (st.ok()) {
          Acked(batch[i].event_id)[s] = true;
        } else if (st.code() == StatusCode::kRejected) {
          if (rejected[i].ok()) rejected[i] = st;
        } else if (results[i].ok()) {
          results[i] = st;  // the first sink still owing an ack says why
        }
      }
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      // Not acked everywhere yet: retried later (only where still owed). Refused by one sink
      // and answered by all others: a dead letter. Otherwise: done.
      if (results[i].ok() && !rejected[i].ok()) results[i] = rejected[i];
      if (results[i].ok() || results[i].code() == StatusCode::kRejected) {
        acked_.erase(batch[i].event_id);
      }
    }
    return results;
  }

  std::string Describe() const override {
    std::string out;
    for (const auto& sink : sinks_) out += (out.empty() ? "" : " + ") + sink->Describe();
    return out;
  }

 private:
  std::vector<bool>& Acked(const std::string& event_id) {
    auto it = acked_.find(event_id);
    if (it == acked_.end()) it = acked_.emplace(event_id, std::vector<bool>(sinks_.size())).first;
    return it->second;
  }

  std::vector<std::unique_ptr<Sink>> sinks_;
  // Events published at least once and not done: which sinks acked them.
  std::unordered_map<std::string, std::vector<bool>> acked_;
};

}  // namespace

std::unique_ptr<Sink> MakeFanOutSink(std::vector<std::unique_ptr<Sink>> sinks) {
  return std::make_unique<FanOutSink>(std::move(sinks));
}

}  // namespace courier
