// Event sourcing: the event is the only write. The command appends OrderPlaced or
// OrderUpdated to the order's stream in courier's EventStore, expecting the stream at the
// version it loaded, and commits; the event store is the source of truth, kept forever.
// `courier relay --event-store` publishes each committed event in position order and stamps
// published_at once the broker acked it. The orders tables are a read model written in the
// same transaction (so that a commit_fails command fails at COMMIT after its append, like
// every strategy's); nothing is judged from them.
#include <libpq-fe.h>

#include <cstdint>

#include "core/postgres.h"
#include "courier/event_store.h"
#include "lab/lab_db.h"
#include "lab/strategy.h"
#include "relay/status_report.h"
#include "schema/migrate.h"
#include "sources/source.h"

namespace courier::lab {
namespace {

// The event store's tables, in the strategy's schema (several strategies and lab runs share
// one database, each in a schema of its own).
TableNames StoreTables(const std::string& schema) {
  TableNames t = EventStoreTables(schema + ".courier_events");
  t.dead_letter = schema + ".courier_dead_letter";
  t.inbox = schema + ".courier_inbox";
  return t;
}

class EventSourcing final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(db_, LabDb::Open(env.db_url, env.schema));
    store_ = std::make_unique<EventStore>(StoreTables(env.schema).outbox);
    return Status::Ok();
  }

  Status Handle(const Command& c) override {
    COURIER_RETURN_IF_ERROR(db_->Begin());
    Status st = Write(c);
    if (!st.ok()) {
      (void)db_->Rollback();  // the error to report is the append's
      return st;
    }
    // A commit_fails command's COMMIT is refused here: its append rolls back with it.
    return db_->Commit();
  }

  Status Prepare(const LabEnv& env) override {
    COURIER_RETURN_IF_ERROR(Strategy::Prepare(env));
    // What `courier migrate --event-store --table SCHEMA.courier_events` does.
    return Migrate(env.db_url, StoreTables(env.schema));
  }

  std::vector<std::vector<std::string>> SideProcesses(const LabEnv& env) const override {
    const TableNames t = StoreTables(env.schema);
    return {{env.self, "relay", "--event-store", "--source", SideDbUrl(env), "--sink",
             "kafka://" + env.bootstrap + "/" + env.topic, "--table", t.outbox,
             "--dead-letter-table", t.dead_letter,
             // A SIGKILLed relay's successor takes over once the lease ran out: a short one
             // keeps the lab's run short. A short backoff catches up soon after an outage.
             "--lease", "2s", "--backoff-max", "1s"}};
  }

  // Every committed event stamped published_at (only after the broker's ack).
  Result<bool> Drained(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(OutboxStatus s, ReadOutboxStatus(env.db_url, StoreTables(env.schema)));
    return s.pending == 0;
  }

  // The truth: every event the store holds. An append whose COMMIT's outcome the service never
  // learned is there or not, and the store says which.
  Result<Expectation> Committed(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(env.db_url));
    const EventStore store(StoreTables(env.schema).outbox);
    Expectation out;
    int64_t after = 0;
    for (;;) {
      COURIER_ASSIGN_OR_RETURN(std::vector<RecordedEvent> events,
                               store.ReadAll(conn.get(), after, 1000));
      if (events.empty()) break;
      for (const RecordedEvent& e : events) out.committed.insert(e.event_id);
      after = events.back().position;
    }
    return out;
  }

 private:
  Status Write(const Command& c) {
    const Event e = OrderEvent(c);
    NewEvent event{.event_type = e.event_type, .payload = e.payload, .event_id = e.event_id};
    // The envelope's own headers come from the row; the store refuses them from the caller.
    for (const auto& [key, value] : e.headers) {
      if (key != "version" && key != "position") event.headers.emplace_back(key, value);
    }
    // The event-sourced command: load the stream, decide, append expecting the version loaded,
    // so that a writer that appended in between makes this one kAborted (refused). Expected is
    // the stream's version, not c.version - 1: the lab numbers an order's commands whatever
    // became of the earlier ones, and one refused or killed leaves the stream a version
    // behind, which would refuse every later command of that order.
    COURIER_ASSIGN_OR_RETURN(LoadedStream stream,
                             store_->Load(db_->pg(), e.aggregate_type, e.aggregate_id));
    COURIER_RETURN_IF_ERROR(
        store_->Append(db_->pg(), e.aggregate_type, e.aggregate_id, stream.version, {event})
            .status());
    HitFault(c, Fault::kCrashBetween);  // appended, not committed
    COURIER_RETURN_IF_ERROR(db_->Exec(WriteOrderSql(c)));
    HitFault(c, Fault::kCrashInside);  // everything written, COMMIT not sent
    return Status::Ok();
  }

  std::unique_ptr<LabDb> db_;
  std::unique_ptr<EventStore> store_;
};

}  // namespace

std::unique_ptr<Strategy> MakeEventSourcing() { return std::make_unique<EventSourcing>(); }

}  // namespace courier::lab
