// Listen to yourself: the command's only write is the event, published to the topic; the
// command is accepted once the broker acknowledged it, and refused while the broker is down.
// The log is the source of truth. The database is changed later by the service's own
// consumer, `courier project --from kafka://...`: it applies each partition's records in
// offset order and stores the next offsets in the same transaction as its writes
// (courier/projection.h), so a SIGKILL or a cut session repeats nothing and skips nothing.
//
// The lab's commit_fails fault does not apply here, and such a command is handled like any
// other. The fault is "the database refuses the command's COMMIT after the broker acked": a
// transaction of the command itself that fails after its publish. This strategy's command has
// no database transaction. The only database write is the consumer's, of an event that is
// already the truth. If every apply of that event were refused, no consumer could make the
// read side agree with the log: courier's projection retries it for ever (an event is never
// skipped), which stops its partition, and a consumer that parks or skips it (`courier
// consume`) loses it from the read side. Either way it would count as lost, but the loss
// would come from a poison message, not from this way of doing the dual write.
#include <libpq-fe.h>

#include <set>
#include <string>

#include "core/postgres.h"
#include "lab/lab_db.h"
#include "lab/lab_kafka.h"
#include "lab/strategy.h"

namespace courier::lab {
namespace {

// How long a command waits for the broker's acknowledgement before it is refused: the same
// as the other strategies that publish from the service, so that their latencies compare.
constexpr Duration kAckTimeout{1000};

// The consumer's handler (`courier project --exec`, run by /bin/sh): it gets the event as a
// JSON line on stdin and prints the SQL that applies it, which runs in the transaction that
// moves the offsets. The line goes into the SQL as a dollar-quoted literal and PostgreSQL
// reads its fields, so that nothing but cat parses it. Applying an event twice changes
// nothing (ON CONFLICT), and `applied` numbers the rows in the order they were applied.
std::string ApplyCommand(const std::string& schema) {
  const std::string log = QuoteIdent(schema + ".lab_order_log");
  const std::string orders = QuoteIdent(schema + ".lab_orders");
  const std::string head = "WITH e AS (SELECT $lab_event$";
  const std::string tail =
      "$lab_event$::jsonb AS j), o AS (INSERT INTO " + orders +
      " (order_id, version) SELECT j->'payload'->>'order_id', (j->'payload'->>'version')::int8 "
      "FROM e ON CONFLICT (order_id) DO UPDATE SET version = GREATEST(" +
      orders + ".version, EXCLUDED.version)) INSERT INTO " + log +
      " (event_id, order_id, version, ok) SELECT j->>'event_id', j->'payload'->>'order_id', "
      "(j->'payload'->>'version')::int8, 1 FROM e ON CONFLICT (event_id) DO NOTHING;";
  // Quoted here-documents: the shell takes the SQL as it is, quotes and dollars included.
  return "cat <<'LAB_SQL'\n" + head + "\nLAB_SQL\ncat\ncat <<'LAB_SQL'\n" + tail + "\nLAB_SQL\n";
}

class ListenToYourself final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(producer_, LabProducer::Open(env.bootstrap, env.topic, kAckTimeout));
    return Status::Ok();
  }

  Status Handle(const Command& c) override {
    const Event e = OrderEvent(c);
    if (c.fault == Fault::kCrashInside) {
      // Sent, not acknowledged: the broker may or may not hold it. Either way the log and
      // what the consumer applies from it agree.
      COURIER_RETURN_IF_ERROR(producer_->Send(e));
      (void)producer_->Poll(Duration(10));
      HitFault(c, Fault::kCrashInside);
    }
    COURIER_RETURN_IF_ERROR(producer_->Publish(e));
    HitFault(c, Fault::kCrashBetween);  // acknowledged, the client not told yet
    return Status::Ok();
  }

  // The default order tables, and the number that orders the consumer's applies.
  Status Prepare(const LabEnv& env) override {
    COURIER_RETURN_IF_ERROR(Strategy::Prepare(env));
    COURIER_ASSIGN_OR_RETURN(std::unique_ptr<LabDb> db, LabDb::Open(env.db_url, env.schema));
    return db->Exec("ALTER TABLE lab_order_log ADD COLUMN IF NOT EXISTS applied bigserial");
  }

  std::vector<std::vector<std::string>> SideProcesses(const LabEnv& env) const override {
    return {{env.self, "project", "--from", "kafka://" + env.bootstrap + "/" + env.topic, "--db",
             SideDbUrl(env), "--name", "lab-orders", "--offsets-table",
             env.schema + ".courier_projection_offsets", "--exec", ApplyCommand(env.schema),
             // Back at work soon after a database restart.
             "--backoff-max", "1s"}};
  }

  // The consumer applied every event of the topic.
  Result<bool> Drained(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(Expectation truth, Committed(env));
    COURIER_ASSIGN_OR_RETURN(std::vector<DeliveredRecord> applied, Delivered(env));
    std::set<std::string> seen;
    for (const DeliveredRecord& d : applied) seen.insert(d.event_id);
    for (const std::string& id : truth.committed) {
      if (seen.count(id) == 0) return false;
    }
    return true;
  }

  // The truth is the log: every event on the topic.
  Result<Expectation> Committed(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(std::vector<DeliveredRecord> on_topic, Strategy::Delivered(env));
    Expectation out;
    for (const DeliveredRecord& d : on_topic) out.committed.insert(d.event_id);
    return out;
  }

  // The other side: what the consumer applied to the orders tables, in the order it did.
  Result<std::vector<DeliveredRecord>> Delivered(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(std::unique_ptr<LabDb> db, LabDb::Open(env.db_url, env.schema));
    COURIER_ASSIGN_OR_RETURN(
        std::vector<std::optional<std::string>> rows,
        db->Column("SELECT event_id || chr(31) || order_id || chr(31) || version FROM "
                   "lab_order_log ORDER BY applied"));
    std::vector<DeliveredRecord> out;
    for (const std::optional<std::string>& row : rows) {
      if (!row) continue;
      const size_t a = row->find('\x1f');
      const size_t b = row->rfind('\x1f');
      if (a == std::string::npos || a == b) {
        return InternalError("lab_order_log row without its fields: " + *row);
      }
      out.push_back(
          {row->substr(0, a), row->substr(a + 1, b - a - 1), std::stoll(row->substr(b + 1))});
    }
    return out;
  }

 private:
  std::unique_ptr<LabProducer> producer_;
};

}  // namespace

std::unique_ptr<Strategy> MakeListenToYourself() { return std::make_unique<ListenToYourself>(); }

}  // namespace courier::lab
