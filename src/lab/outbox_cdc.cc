// Outbox with change data capture: the order and its event row (courier's OutboxWriter) commit
// in one transaction, so either both exist or neither; `courier relay --mode cdc` streams the
// committed rows from PostgreSQL's write-ahead log (a logical replication slot) to the topic and
// deletes each row once the broker acked it. A crash of the service between or inside the two
// writes rolls both back; a crash of the relay repeats at most what was not acked yet
// (duplicates, never a loss); a broker outage only delays the relay.
#include <libpq-fe.h>

#include <chrono>
#include <thread>

#include "core/postgres.h"
#include "core/url.h"
#include "courier/outbox.h"
#include "lab/lab_db.h"
#include "lab/strategy.h"
#include "relay/status_report.h"
#include "schema/migrate.h"
#include "sources/source.h"

namespace courier::lab {
namespace {

// The outbox's tables, in the strategy's schema (several strategies and lab runs share one
// database, each in a schema of its own).
TableNames OutboxTables(const std::string& schema) {
  TableNames t;
  t.outbox = schema + ".courier_outbox";
  t.dead_letter = schema + ".courier_dead_letter";
  t.inbox = schema + ".courier_inbox";
  return t;
}

// Replication slots are cluster-wide and publications database-wide: the names carry the
// database and the schema, so that no other lab run (another database on the same server) or
// strategy shares them, and a previous run's leftovers in this database are found by name.
struct CdcNames {
  std::string slot;
  std::string publication;
};

Result<CdcNames> NamesFor(const LabEnv& env) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(env.db_url));
  std::string readable = "courier_" + env.schema;
  for (char& c : readable) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) c = '_';
  }
  // "_" and eight hex digits after at most 50 readable bytes: within PostgreSQL's 63.
  readable = readable.substr(0, 50) + "_" + StableHash(url.path + '\0' + env.schema);
  return CdcNames{readable, readable + "_pub"};
}

class OutboxCdc final : public Strategy {
 public:
  Status Start(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(db_, LabDb::Open(env.db_url, env.schema));
    writer_ = std::make_unique<OutboxWriter>(OutboxTables(env.schema).outbox);
    return Status::Ok();
  }

  Status Handle(const Command& c) override {
    COURIER_RETURN_IF_ERROR(db_->Begin());
    Status st = Write(c);
    if (!st.ok()) {
      (void)db_->Rollback();  // the error to report is the write's
      return st;
    }
    // A commit_fails command's COMMIT is refused here, and both writes roll back together.
    return db_->Commit();
  }

  Status Prepare(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(const CdcNames names, NamesFor(env));
    COURIER_RETURN_IF_ERROR(DropSlotAndPublication(env, names));
    COURIER_RETURN_IF_ERROR(Strategy::Prepare(env));
    CdcOptions cdc;
    cdc.enabled = true;
    cdc.slot = names.slot;
    cdc.publication = names.publication;
    // What `courier migrate --mode cdc --table ... --slot ... --publication ...` does: the
    // outbox tables, then the publication, then the slot (created after the publication, as
    // pgoutput decodes only what was written once its publication existed).
    return Migrate(env.db_url, OutboxTables(env.schema), cdc);
  }

  std::vector<std::vector<std::string>> SideProcesses(const LabEnv& env) const override {
    const TableNames t = OutboxTables(env.schema);
    auto names = NamesFor(env);
    if (!names.ok()) return {};  // Prepare refused the same URL already
    return {{env.self, "relay", "--mode", "cdc", "--source", SideDbUrl(env), "--sink",
             "kafka://" + env.bootstrap + "/" + env.topic, "--table", t.outbox,
             "--dead-letter-table", t.dead_letter, "--slot", names->slot, "--publication",
             names->publication,
             // A SIGKILLed relay's successor takes over once the lease ran out: a short one
             // keeps the lab's run short. A short backoff catches up soon after an outage.
             "--lease", "2s", "--backoff-max", "1s"}};
  }

  // The slot would keep WAL on the server until the next run drops it.
  Status Cleanup(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(const CdcNames names, NamesFor(env));
    return DropSlotAndPublication(env, names);
  }

  // The relay deletes each row once the broker acked it: an empty outbox is a drained one.
  Result<bool> Drained(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(OutboxStatus s,
                             ReadOutboxStatus(env.db_url, OutboxTables(env.schema)));
    return s.pending == 0;
  }

 private:
  Status Write(const Command& c) {
    COURIER_RETURN_IF_ERROR(db_->Exec(WriteOrderSql(c)));
    HitFault(c, Fault::kCrashBetween);
    const Event e = OrderEvent(c);
    OutboxEvent row{.aggregate_type = e.aggregate_type,
                    .aggregate_id = e.aggregate_id,
                    .event_type = e.event_type,
                    .payload = e.payload,
                    .headers = e.headers,
                    .event_id = e.event_id};
    COURIER_RETURN_IF_ERROR(writer_->Append(db_->pg(), row).status());
    HitFault(c, Fault::kCrashInside);  // both rows written, not committed
    return Status::Ok();
  }

  // Before a run, a previous run's slot still holds WAL and its position, and its publication
  // still lists the table a dropped schema held: both go before this run makes its own of the
  // same names. After a run, the slot would hold WAL until the next one.
  static Status DropSlotAndPublication(const LabEnv& env, const CdcNames& names) {
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(env.db_url));
    // A walsender of a relay that outlived its run would keep the slot busy.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      COURIER_ASSIGN_OR_RETURN(PgResult r,
                               PgExec(conn.get(),
                                      "SELECT active_pid, pg_terminate_backend(active_pid) FROM "
                                      "pg_replication_slots WHERE slot_name = $1",
                                      {names.slot}));
      if (PQntuples(r.get()) == 0) break;
      if (PQgetisnull(r.get(), 0, 0)) {
        Result<PgResult> dropped =
            PgExec(conn.get(), "SELECT pg_drop_replication_slot($1)", {names.slot});
        if (dropped.ok()) break;
        // Taken again between the two statements: try again.
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return RetriableError("replication slot " + names.slot +
                              " is still in use by another process");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return PgRun(conn.get(), "DROP PUBLICATION IF EXISTS " + QuoteIdent(names.publication));
  }

  std::unique_ptr<LabDb> db_;
  std::unique_ptr<OutboxWriter> writer_;
};

}  // namespace

std::unique_ptr<Strategy> MakeOutboxCdc() { return std::make_unique<OutboxCdc>(); }

}  // namespace courier::lab
