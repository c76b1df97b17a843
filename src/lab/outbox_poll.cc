// outbox-poll: the order and its event row (courier's outbox, OutboxWriter) in one
// transaction; `courier relay` polls the outbox and publishes what committed. Whatever kills
// the service, both writes commit or neither does, and the relay publishes at least once.
#include "courier/outbox.h"
#include "lab/lab_db.h"
#include "lab/strategy.h"
#include "relay/status_report.h"
#include "schema/migrate.h"
#include "sources/source.h"

namespace courier::lab {
namespace {

// The outbox's tables, in the strategy's schema on PostgreSQL (the relay and migrate connect
// without its search_path).
TableNames OutboxTables(const LabEnv& env) {
  TableNames t;
  if (!env.schema.empty()) {
    t.outbox = env.schema + "." + t.outbox;
    t.dead_letter = env.schema + "." + t.dead_letter;
    t.inbox = env.schema + "." + t.inbox;
  }
  return t;
}

class OutboxPoll final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(db_, LabDb::Open(env.db_url, env.schema));
    writer_ = std::make_unique<OutboxWriter>(OutboxTables(env).outbox);
    return Status::Ok();
  }

  Status Handle(const Command& c) override {
    COURIER_RETURN_IF_ERROR(db_->Begin());
    Status st = db_->Exec(WriteOrderSql(c));
    if (st.ok()) {
      HitFault(c, Fault::kCrashBetween);  // the order written, the event row not yet
      const Event e = OrderEvent(c);
      const OutboxEvent row{e.aggregate_type, e.aggregate_id, e.event_type, e.payload, {},
                            e.event_id};
      st = db_->pg() != nullptr       ? writer_->Append(db_->pg(), row).status()
           : db_->sqlite() != nullptr ? writer_->Append(db_->sqlite(), row).status()
                                      : RetriableError("no database connection");
    }
    if (!st.ok()) {
      (void)db_->Rollback();  // the error said why; the rollback's own failure adds nothing
      return st;
    }
    HitFault(c, Fault::kCrashInside);  // both rows written, not committed: neither counts
    return db_->Commit();
  }

  Status Prepare(const LabEnv& env) override {
    COURIER_RETURN_IF_ERROR(Strategy::Prepare(env));
    return Migrate(env.db_url, OutboxTables(env));
  }

  std::vector<std::vector<std::string>> SideProcesses(const LabEnv& env) const override {
    const TableNames t = OutboxTables(env);
    std::vector<std::string> relay = {env.self,
                                      "relay",
                                      "--source",
                                      SideDbUrl(env),
                                      "--sink",
                                      "kafka://" + env.bootstrap + "/" + env.topic,
                                      "--table",
                                      t.outbox,
                                      "--dead-letter-table",
                                      t.dead_letter,
                                      "--poll-interval",
                                      "20ms",
                                      "--backoff-max",
                                      "1s"};
    if (!env.schema.empty()) {
      // A SIGKILLed relay's lease ends this long after it died: the restarted one waits it
      // out before publishing.
      relay.insert(relay.end(), {"--lease", "2s"});
    }
    return {relay};
  }

  Result<bool> Drained(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(OutboxStatus s, ReadOutboxStatus(env.db_url, OutboxTables(env)));
    return s.pending == 0;
  }

 private:
  std::unique_ptr<LabDb> db_;
  std::unique_ptr<OutboxWriter> writer_;
};

}  // namespace

std::unique_ptr<Strategy> MakeOutboxPoll() { return std::make_unique<OutboxPoll>(); }

}  // namespace courier::lab
