// naive: commit the order, then publish the event and wait for the broker's ack. A crash
// between the two (or a broker that does not answer) leaves a committed order whose event is
// never sent: lost.
#include <algorithm>

#include "lab/lab_db.h"
#include "lab/lab_kafka.h"
#include "lab/strategy.h"

namespace courier::lab {
namespace {

// How long a command waits for the broker's ack before the service gives up on it (and on
// the event: nobody sends it again).
constexpr Duration kAckTimeout{1000};

class Naive final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(db_, LabDb::Open(env.db_url, env.schema));
    COURIER_ASSIGN_OR_RETURN(producer_, LabProducer::Open(env.bootstrap, env.topic, kAckTimeout));
    return Status::Ok();
  }

  Status Handle(const Command& c) override {
    COURIER_RETURN_IF_ERROR(db_->Begin());
    if (Status st = db_->Exec(WriteOrderSql(c)); !st.ok()) {
      (void)db_->Rollback();  // the error said why; the rollback's own failure adds nothing
      return st;
    }
    COURIER_RETURN_IF_ERROR(db_->Commit());
    HitFault(c, Fault::kCrashBetween);  // committed, not sent: lost
    COURIER_RETURN_IF_ERROR(producer_->Send(OrderEvent(c)));
    HitFault(c, Fault::kCrashInside);  // sent, not acknowledged: lost unless it got out
    const TimePoint deadline = Clock::Real().Now() + kAckTimeout + Duration(5000);
    while (Clock::Real().Now() < deadline) {
      LabProducer::Reports r = producer_->Poll(Duration(50));
      if (std::find(r.acked.begin(), r.acked.end(), c.event_id) != r.acked.end()) {
        return Status::Ok();
      }
      if (std::find(r.failed.begin(), r.failed.end(), c.event_id) != r.failed.end()) {
        break;
      }
    }
    // The order is committed; the event is not published and nothing will publish it.
    return RetriableError("order committed, but the broker did not acknowledge its event");
  }

 private:
  std::unique_ptr<LabDb> db_;
  std::unique_ptr<LabProducer> producer_;
};

}  // namespace

std::unique_ptr<Strategy> MakeNaive() { return std::make_unique<Naive>(); }

}  // namespace courier::lab
