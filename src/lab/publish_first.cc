// publish-first: publish the event and wait for the broker's acknowledgement, then write and
// commit the order.
//
// What it promises and what breaks it: the event is out before the order exists, so anything
// that stops the order's commit after the ack leaves an event nobody committed (a ghost): a
// crash between the two writes, a crash with the order written but not committed, a COMMIT the
// database refuses, a dropped database connection. During a broker outage nothing is written
// at all: the command is refused, because the first write fails.
#include <memory>
#include <string>

#include "lab/lab_db.h"
#include "lab/lab_kafka.h"
#include "lab/strategy.h"

namespace courier::lab {
namespace {

class PublishFirst final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(db_, LabDb::Open(env.db_url, env.schema));
    // A send that gets no ack within a second fails: during an outage each command is refused
    // after a second instead of stalling the service.
    COURIER_ASSIGN_OR_RETURN(producer_, LabProducer::Open(env.bootstrap, env.topic, kTimeout));
    return Status::Ok();
  }

  Status Handle(const Command& c) override {
    // First write: the event, acknowledged by the broker. Refused here, nothing is written.
    COURIER_RETURN_IF_ERROR(producer_->Publish(OrderEvent(c)));
    // The event is out; the order does not exist yet.
    HitFault(c, Fault::kCrashBetween);
    // Second write: the order, in a transaction of its own.
    COURIER_RETURN_IF_ERROR(db_->Begin());
    if (Status st = db_->Exec(WriteOrderSql(c)); !st.ok()) {
      (void)db_->Rollback();  // best effort: a dropped connection rolled it back already
      return st;
    }
    // Written, not committed: the event is already out.
    HitFault(c, Fault::kCrashInside);
    // A refused COMMIT (commit_fails) is the broker-acked-but-commit-failed ghost.
    return db_->Commit();
  }

 private:
  static constexpr Duration kTimeout{1000};
  std::unique_ptr<LabDb> db_;
  std::unique_ptr<LabProducer> producer_;
};

}  // namespace

std::unique_ptr<Strategy> MakePublishFirst() { return std::make_unique<PublishFirst>(); }

}  // namespace courier::lab
