// in-memory-retry: commit the order, then put the event in a queue in the service's memory and
// send it; an event the broker did not acknowledge stays queued and is sent again (from Idle,
// and before each command), until the broker acks it.
//
// It fixes the naive strategy's broker outage: commands are accepted during one (their events
// wait in the queue) and delivered once the broker is back. What it cannot fix is the queue's
// home: a crash between the commit and the queueing, or with events still queued, loses them
// for good (committed, never delivered), and nothing after a restart knows they existed. And
// an event that failed is sent again after younger events of its order went through: a
// reader sees them out of order.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "lab/lab_db.h"
#include "lab/lab_kafka.h"
#include "lab/strategy.h"

namespace courier::lab {
namespace {

class InMemoryRetry final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    env_ = env;
    COURIER_ASSIGN_OR_RETURN(db_, LabDb::Open(env.db_url, env.schema));
    return OpenProducer();
  }

  Status Handle(const Command& c) override {
    // First write: the order, committed. A refused or failed commit refuses the command.
    COURIER_RETURN_IF_ERROR(db_->Begin());
    if (Status st = db_->Exec(WriteOrderSql(c)); !st.ok()) {
      (void)db_->Rollback();  // best effort: a dropped connection rolled it back already
      return st;
    }
    COURIER_RETURN_IF_ERROR(db_->Commit());
    // Committed, not queued yet: nobody will ever send this event.
    HitFault(c, Fault::kCrashBetween);
    // Second write: queued in memory and handed to the producer. The command is accepted
    // whatever the broker says: a failed send stays queued.
    queue_.push_back(Entry{OrderEvent(c), false, TimePoint{}});
    SendDue();
    // Sent, not acknowledged, and queued only in this process's memory.
    HitFault(c, Fault::kCrashInside);
    ServeReports(Duration(0));
    return Status::Ok();
  }

  void Idle() override {
    ServeReports(Duration(0));
    SendDue();
  }

  Status Finish(TimePoint deadline) override {
    while (!queue_.empty() && Clock::Real().Now() < deadline) {
      SendDue();
      ServeReports(Duration(100));
    }
    if (queue_.empty()) return Status::Ok();
    return RetriableError(std::to_string(queue_.size()) +
                          " events still queued when the service gave up: they are lost");
  }

 private:
  struct Entry {
    Event event;
    bool in_flight = false;  // handed to the producer, no report yet
    TimePoint retry_at{};    // a failed send is tried again from then on
  };

  Status OpenProducer() {
    // A send gets a second: a failed one is reported then, and sent again.
    COURIER_ASSIGN_OR_RETURN(producer_, LabProducer::Open(env_.bootstrap, env_.topic, kTimeout));
    return Status::Ok();
  }

  // Sends every queued event that is not in flight and is due, oldest first.
  void SendDue() {
    const TimePoint now = Clock::Real().Now();
    for (Entry& e : queue_) {
      if (e.in_flight || now < e.retry_at) continue;
      Status st = producer_->Send(e.event);
      if (st.ok()) {
        e.in_flight = true;
        continue;
      }
      e.retry_at = now + kRetryPause;
      if (st.code() == StatusCode::kInternal) {
        // The producer failed for good (librdkafka's fatal error): a new one sends the queue,
        // every event of it, since the old one's reports will never come.
        if (OpenProducer().ok()) {
          for (Entry& other : queue_) other.in_flight = false;
        }
        return;
      }
    }
  }

  // Drops acknowledged events from the queue; failed ones wait for their next attempt.
  void ServeReports(Duration timeout) {
    LabProducer::Reports r = producer_->Poll(timeout);
    for (const std::string& id : r.acked) {
      queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                  [&](const Entry& e) { return e.event.event_id == id; }),
                   queue_.end());
    }
    const TimePoint retry_at = Clock::Real().Now() + kRetryPause;
    for (const std::string& id : r.failed) {
      for (Entry& e : queue_) {
        if (e.event.event_id == id) {
          e.in_flight = false;
          e.retry_at = retry_at;
        }
      }
    }
  }

  static constexpr Duration kTimeout{1000};
  // Between a failed send and the next: the failure itself took kTimeout during an outage,
  // this only keeps a send that fails at once from spinning.
  static constexpr Duration kRetryPause{100};

  LabEnv env_;
  std::unique_ptr<LabDb> db_;
  std::unique_ptr<LabProducer> producer_;
  // The events committed and not acknowledged yet, oldest first: only in this process.
  std::vector<Entry> queue_;
};

}  // namespace

std::unique_ptr<Strategy> MakeInMemoryRetry() { return std::make_unique<InMemoryRetry>(); }

}  // namespace courier::lab
