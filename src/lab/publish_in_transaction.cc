// publish-in-transaction: BEGIN; write the order; publish the event and wait for the broker's
// acknowledgement while the transaction is still open; COMMIT.
//
// The hope is that the open transaction makes the two writes one ("a logical transaction"):
// if the publish fails, the order rolls back. It does not work the other way round: the broker
// cannot take its acknowledgement back, so a COMMIT that fails after the ack (commit_fails, a
// dropped connection) or a crash between the ack and the COMMIT leaves a ghost. During a
// broker outage the command is refused (and the order rolled back), after the send's timeout,
// with the order's row locked for that long.
#include <memory>
#include <string>

#include "lab/lab_db.h"
#include "lab/lab_kafka.h"
#include "lab/strategy.h"

namespace courier::lab {
namespace {

class PublishInTransaction final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(db_, LabDb::Open(env.db_url, env.schema));
    COURIER_ASSIGN_OR_RETURN(producer_, LabProducer::Open(env.bootstrap, env.topic, kTimeout));
    return Status::Ok();
  }

  Status Handle(const Command& c) override {
    COURIER_RETURN_IF_ERROR(db_->Begin());
    Status st = Transaction(c);
    if (!st.ok()) {
      (void)db_->Rollback();  // best effort: a dropped connection rolled it back already
      return st;
    }
    // The broker acked; a refused COMMIT (commit_fails) is the ghost of the "logical
    // transaction". Commit ends the transaction either way.
    return db_->Commit();
  }

 private:
  // Everything inside the open transaction, up to (not including) its COMMIT.
  Status Transaction(const Command& c) {
    // First write: the order, written but not committed.
    COURIER_RETURN_IF_ERROR(db_->Exec(WriteOrderSql(c)));
    // Nothing has left the process: the transaction dies with it.
    HitFault(c, Fault::kCrashBetween);
    // Second write: the event, acknowledged by the broker while the order is uncommitted.
    COURIER_RETURN_IF_ERROR(producer_->Publish(OrderEvent(c)));
    // Acked and not committed: the event is out for good, the order dies with the process.
    HitFault(c, Fault::kCrashInside);
    return Status::Ok();
  }

  static constexpr Duration kTimeout{1000};
  std::unique_ptr<LabDb> db_;
  std::unique_ptr<LabProducer> producer_;
};

}  // namespace

std::unique_ptr<Strategy> MakePublishInTransaction() {
  return std::make_unique<PublishInTransaction>();
}

}  // namespace courier::lab
