#include "sources/cdc/slot.h"

#include <algorithm>

#include "core/clock.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/url.h"

namespace courier {
namespace cdc {
namespace {

constexpr const char* kDuplicateObject = "42710";
constexpr const char* kUniqueViolation = "23505";

std::string BaseName(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

// Slot names may hold lower-case letters, digits and underscores, at most 63 of them.
std::string SlotSafe(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    out.push_back((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : '_');
  }
  return out.substr(0, kMaxIdentifier);
}

// A readable prefix cut to leave room for "_" and a StableHash.
std::string WithHash(const std::string& readable, const std::string& identity) {
  size_t keep = std::min(readable.size(), kMaxIdentifier - 9);
  // Never cut a UTF-8 character in two (publication names may hold any).
  while (keep > 0 && keep < readable.size() &&
         (static_cast<unsigned char>(readable[keep]) & 0xc0) == 0x80) {
    --keep;
  }
  return readable.substr(0, keep) + "_" + StableHash(identity);
}

// The consistent_lsn of a registry row whose slot is being created: a slot found with it was
// created by this outbox, whose relay or migrate stopped before recording its backfill.
constexpr const char* kCreating = "0/0";

// Another outbox's CDC registry (`<outbox>_cdc_slot`) in this database that lists `slot`, or
// "" when none does. Registries this user may not read are not looked at.
Result<std::string> OtherOwner(PGconn* conn, const TableNames& t, const std::string& slot) {
  COURIER_ASSIGN_OR_RETURN(
      PgResult tables,
      PgExec(conn,
             "SELECT c.oid::regclass::text FROM pg_class c"
             " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'slot_name'"
             " JOIN pg_attribute b ON b.attrelid = c.oid AND"
             " b.attname = 'consistent_lsn'"
             " WHERE c.relkind = 'r' AND c.relname LIKE '%\\_cdc\\_slot' AND"
             " c.oid <> $1::regclass AND has_table_privilege(c.oid, 'SELECT')",
             {QuoteIdent(t.CdcSlots())}));
  for (int i = 0; i < PQntuples(tables.get()); ++i) {
    const std::string table = PQgetvalue(tables.get(), i, 0);
    COURIER_ASSIGN_OR_RETURN(
        PgResult row, PgExec(conn, "SELECT 1 FROM " + table + " WHERE slot_name = $1", {slot}));
    if (PQntuples(row.get()) > 0) return table;
  }
  return std::string();
}

}  // namespace

// Derived names are unique per outbox: slot names are cluster-wide, so the slot is
// courier_<database>_<table> made slot-safe, cut, and followed by a hash of the exact
// database and schema-qualified table ("orders-outbox" and "orders_outbox" read alike but
// hash apart). Slots that earlier versions named without the hash keep their name while this
// outbox's registry, and no other's, lists them. The publication (per database) is the one
// registered with the slot, else the table's name in schema public, else schema_table with
// the hash.
Result<CdcNames> ResolveNames(PGconn* conn, const TableNames& t, const CdcOptions& cdc) {
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT current_database(), n.nspname, c.relname FROM"
                                  " pg_class c JOIN pg_namespace n ON n.oid ="
                                  " c.relnamespace WHERE c.oid = $1::regclass",
                                  {QuoteIdent(t.outbox)}));
  const std::string database = PQgetvalue(res.get(), 0, 0);
  const std::string schema = PQgetvalue(res.get(), 0, 1);
  const std::string table = PQgetvalue(res.get(), 0, 2);
  CdcNames names{cdc.slot, cdc.publication, schema + "." + table, schema, table};
  const std::string identity = database + '\0' + schema + '\0' + table;
  COURIER_ASSIGN_OR_RETURN(PgResult registry, PgExec(conn, "SELECT slot_name, publication FROM " +
                                                               QuoteIdent(t.CdcSlots())));
  auto registered = [&](const std::string& slot) -> const char* {
    for (int i = 0; i < PQntuples(registry.get()); ++i) {
      if (slot == PQgetvalue(registry.get(), i, 0)) return PQgetvalue(registry.get(), i, 1);
    }
    return nullptr;
  };
  if (names.slot.empty()) {
    std::string readable = table.rfind("courier_", 0) == 0 ? table.substr(8) : table;
    if (schema != "public") readable = schema + "_" + readable;
    names.slot = WithHash(SlotSafe("courier_" + database + "_" + readable), identity);
    std::string legacy = BaseName(t.outbox);
    if (legacy.rfind("courier_", 0) == 0) legacy = legacy.substr(8);
    legacy = SlotSafe("courier_" + database + "_" + legacy);
    if (registered(names.slot) == nullptr && registered(legacy) != nullptr) {
      COURIER_ASSIGN_OR_RETURN(const std::string other, OtherOwner(conn, t, legacy));
      if (other.empty()) {
        names.slot = legacy;
      } else {
        log::Warn(
            "this outbox's replication slot is listed by another outbox too (they shared it "
            "before slot names were made unique); moving to a slot of its own, re-reading "
            "un-acked events from the table. Drop the old slot once neither relay uses it",
            {{"old_slot", legacy}, {"other_registry", other}, {"slot", names.slot}});
      }
    }
  } else if (SlotSafe(names.slot) != names.slot) {
    return InvalidArgumentError("slot name '" + names.slot +
                                "' is invalid; use at most 63 lower-case letters, digits and _");
  }
  if (names.publication.empty()) {
    if (const char* publication = registered(names.slot)) {
      names.publication = publication;
    } else if (schema == "public") {
      names.publication = table;
    } else {
      names.publication = WithHash(schema + "_" + table, identity);
    }
  }
  return names;
}

Status CheckCdcTables(PGconn* conn, const TableNames& t) {
  COURIER_ASSIGN_OR_RETURN(
      PgResult res, PgExec(conn,
                           "SELECT current_setting('wal_level'), to_regclass($1) IS NOT NULL,"
                           " to_regclass($2) IS NOT NULL, to_regclass($3) IS NOT NULL,"
                           " to_regclass($4) IS NOT NULL",
                           {QuoteIdent(t.outbox), QuoteIdent(t.dead_letter),
                            QuoteIdent(t.CdcSlots()), QuoteIdent(t.CdcBackfill())}));
  if (std::string(PQgetvalue(res.get(), 0, 0)) != "logical") {
    return FailedPreconditionError(
        "PostgreSQL runs with wal_level = " + std::string(PQgetvalue(res.get(), 0, 0)) +
        "; CDC needs wal_level = logical (set it in postgresql.conf and restart the server), "
        "or use --mode poll");
  }
  const std::string names[] = {t.outbox, t.dead_letter, t.CdcSlots(), t.CdcBackfill()};
  for (int i = 0; i < 4; ++i) {
    if (std::string(PQgetvalue(res.get(), 0, i + 1)) != "t") {
      return NotFoundError("table " + QuoteIdent(names[i]) +
                           " does not exist; create the tables with: courier migrate " +
                           (t.event_store() ? "--event-store " : "") + "--mode cdc --source URL");
    }
  }
  return Status::Ok();
}

namespace {

// True when it had to create the publication.
Result<bool> EnsurePublication(PGconn* conn, const TableNames& t, const std::string& publication) {
  const std::string outbox = QuoteIdent(t.outbox);
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT p.pubinsert, p.puballtables OR EXISTS (SELECT 1"
                                  " FROM pg_publication_rel r WHERE r.prpubid = p.oid AND"
                                  " r.prrelid = $2::regclass)"
                                  " FROM pg_publication p WHERE p.pubname = $1",
                                  {publication, outbox}));
  if (PQntuples(res.get()) == 0) {
    const std::string create = "CREATE PUBLICATION " + QuoteIdent(publication) + " FOR TABLE " +
                               outbox + " WITH (publish = 'insert')";
    PgResult created(PQexec(conn, create.c_str()));
    const std::string state = PgSqlState(created.get());
    // Another relay or migrate created it since the query above: duplicate_object, or
    // unique_violation when both inserted into the catalog at once.
    if (PQresultStatus(created.get()) != PGRES_COMMAND_OK && state != kDuplicateObject &&
        state != kUniqueViolation) {
      const Status st = PgError(conn, created.get());
      return Status(st.code(), "cannot create publication " + QuoteIdent(publication) + ": " +
                                   st.message() +
                                   "; create it as the table's owner with: courier migrate "
                                   "--mode cdc --source URL");
    }
    log::Info("created publication", {{"publication", publication}, {"table", t.outbox}});
    return true;
  }
  if (std::string(PQgetvalue(res.get(), 0, 0)) != "t" ||
      std::string(PQgetvalue(res.get(), 0, 1)) != "t") {
    return FailedPreconditionError("publication " + QuoteIdent(publication) +
                                   " exists but does not publish inserts into " + outbox +
                                   "; run ALTER PUBLICATION " + QuoteIdent(publication) +
                                   " ADD TABLE " + outbox + ", or choose another --publication");
  }
  return false;
}

// Creates the slot with an exported snapshot and, inside that snapshot, records which outbox
// rows predate it. Both or neither: a slot without its registry row is dropped next time.
// CREATE_REPLICATION_SLOT waits until every transaction open when it started has ended (the
// slot needs a consistent starting point). Waits cancellably, saying who it waits for.
Result<PgResult> CreateSlotCommand(PGconn* conn, PGconn* repl, const std::string& slot,
                                   const StopSignal& stop) {
  const std::string cmd =
      "CREATE_REPLICATION_SLOT " + QuoteIdent(slot) + " LOGICAL pgoutput (SNAPSHOT 'export')";
  if (PQsendQuery(repl, cmd.c_str()) != 1) return PgError(repl, nullptr);
  const TimePoint start = Clock::Real().Now();
  TimePoint next_log = start + Duration(5000);
  while (true) {
    if (PQconsumeInput(repl) != 1) return PgError(repl, nullptr);
    if (PQisBusy(repl) == 0) break;
    if (stop.requested()) {
      if (PGcancel* cancel = PQgetCancel(repl)) {
        char err[256];
        (void)PQcancel(cancel, err, sizeof err);
        PQfreeCancel(cancel);
      }
      return CancelledError("stopped while creating replication slot " + slot);
    }
    if (Clock::Real().Now() >= next_log) {
      auto oldest = PgExec(conn,
                           "SELECT pid::text, extract(epoch FROM now() - xact_start)::int8::text"
                           " FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <>"
                           " pg_backend_pid() ORDER BY xact_start LIMIT 1");
      const bool known = oldest.ok() && PQntuples(oldest->get()) == 1;
      const char* message =
          "creating the replication slot waits for the transactions open when it began to end";
      if (known) {
        log::Warn(message,
                  {{"slot", slot},
                   {"oldest_pid", ParseInt64(PQgetvalue(oldest->get(), 0, 0)).value_or(0)},
                   {"open_for_s", ParseInt64(PQgetvalue(oldest->get(), 0, 1)).value_or(0)}});
      } else {
        log::Warn(message, {{"slot", slot}});
      }
      next_log = Clock::Real().Now() + Duration(30000);
    }
    PgWaitReadable(repl, 100);
  }
  PgResult res(PQgetResult(repl));
  while (PgResult extra{PQgetResult(repl)}) {
  }
  if (res == nullptr || PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
    return PgError(repl, res.get());
  }
  return res;
}

// Registers `names` in the bookkeeping table with `consistent_lsn` (the slot's starting
// point, or kCreating), forgetting any checkpoint_lsn of an earlier slot of the same name.
Status RegisterSlot(PGconn* conn, const TableNames& t, const CdcNames& names,
                    const std::string& consistent_lsn) {
  return PgExec(conn,
                "INSERT INTO " + QuoteIdent(t.CdcSlots()) +
                    " (slot_name, publication, consistent_lsn) VALUES ($1, $2, $3::pg_lsn)"
                    " ON CONFLICT (slot_name) DO UPDATE SET publication = excluded.publication,"
                    " consistent_lsn = excluded.consistent_lsn, created_at = now(),"
                    " checkpoint_lsn = NULL",
                {names.slot, names.publication, consistent_lsn})
      .status();
}

Status CreateSlot(PGconn* conn, const std::string& conninfo, const TableNames& t,
                  const CdcNames& names, const StopSignal& stop) {
  // Registered first, as being created: a slot found later with this mark is this outbox's,
  // left behind by a crash before the backfill was recorded, and is recreated.
  COURIER_RETURN_IF_ERROR(RegisterSlot(conn, t, names, kCreating));
  COURIER_ASSIGN_OR_RETURN(PgConn repl, PgConnect(conninfo, /*replication=*/true));
  COURIER_ASSIGN_OR_RETURN(PgResult created, CreateSlotCommand(conn, repl.get(), names.slot, stop));
  const std::string consistent = PQgetvalue(created.get(), 0, 1);
  const std::string snapshot = PQgetvalue(created.get(), 0, 2);
  // The exported snapshot lives until the replication connection's next command.
  Status st = PgRun(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT " +
                              QuoteLiteral(snapshot));
  if (!st.ok()) {
    // The snapshot went with the replication connection (ended under us): the slot is
    // dropped below and created again on the next try.
    st = RetriableError(st.message());
  }
  int64_t backfill = 0;
  if (st.ok()) {
    st = PgExec(conn, "DELETE FROM " + QuoteIdent(t.CdcBackfill()) + " WHERE slot_name = $1",
                {names.slot})
             .status();
  }
  // Debezium's outbox rows are the application's (it deletes them, or keeps them as a log):
  // as with Debezium's Outbox Event Router, only inserts after the slot exists are events.
  // An event store keeps every event: those not yet published (by a polling relay before,
  // or a slot lost) are its backfill, by position.
  if (st.ok() && t.outbox_format != TableNames::OutboxFormat::kDebezium) {
    auto res =
        PgExec(conn,
               "INSERT INTO " + QuoteIdent(t.CdcBackfill()) +
                   " (slot_name, outbox_id) SELECT $1, " + (t.event_store() ? "position" : "id") +
                   " FROM " + QuoteIdent(t.outbox) + " WHERE published_at IS NULL",
               {names.slot});
    st = res.status();
    if (st.ok()) backfill = ParseInt64(PQcmdTuples(res->get())).value_or(0);
  }
  if (st.ok()) st = RegisterSlot(conn, t, names, consistent);
  if (st.ok()) st = PgRun(conn, "COMMIT");
  if (!st.ok()) {
    (void)PgRun(conn, "ROLLBACK");
    repl.reset();
    (void)PgExec(conn, "SELECT pg_drop_replication_slot($1)", {names.slot});
    return st.WithContext("recording the rows that predate slot " + names.slot);
  }
  log::Info("created replication slot",
            {{"slot", names.slot}, {"consistent_lsn", consistent}, {"rows_to_backfill", backfill}});
  return Status::Ok();
}

// `stale`: the slot cannot decode with the current publication (it predates it). A slot this
// outbox did not create is never dropped nor used: another outbox's events would go unpublished
// while both relays look healthy.
Status EnsureSlot(PGconn* conn, const std::string& conninfo, const TableNames& t,
                  const CdcNames& names, bool stale, const StopSignal& stop) {
  COURIER_ASSIGN_OR_RETURN(
      PgResult slot,
      PgExec(conn,
             "SELECT s.slot_type = 'logical' AND s.plugin = 'pgoutput' AND"
             " s.database = current_database(), coalesce(s.wal_status, '') = 'lost',"
             " r.slot_name IS NOT NULL, r.consistent_lsn = $2::pg_lsn"
             " FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1"
             " LEFT JOIN " +
                 QuoteIdent(t.CdcSlots()) + " r ON r.slot_name = $1",
             {names.slot, kCreating}));
  const bool exists = !PQgetisnull(slot.get(), 0, 0);
  const bool here = exists && std::string(PQgetvalue(slot.get(), 0, 0)) == "t";
  const bool lost = exists && std::string(PQgetvalue(slot.get(), 0, 1)) == "t";
  const bool registered = std::string(PQgetvalue(slot.get(), 0, 2)) == "t";
  const bool interrupted = registered && std::string(PQgetvalue(slot.get(), 0, 3)) == "t";
  if (exists && !here) {
    return InvalidArgumentError("replication slot " + names.slot +
                                " exists but belongs to another database or plugin; choose "
                                "another --slot");
  }
  COURIER_ASSIGN_OR_RETURN(const std::string other, OtherOwner(conn, t, names.slot));
  if (!other.empty()) {
    return InvalidArgumentError("replication slot " + names.slot +
                                " is registered to another outbox (in " + other +
                                "); choose another --slot for " + names.outbox);
  }
  if (exists && !registered) {
    return InvalidArgumentError("replication slot " + names.slot +
                                " exists but was not created by courier for " + names.outbox +
                                "; choose another --slot, or drop it if nothing uses it: SELECT " +
                                "pg_drop_replication_slot('" + names.slot + "')");
  }
  if (exists && !lost && !stale && !interrupted) return Status::Ok();
  if (exists) {
    log::Warn(lost    ? "replication slot was invalidated (the WAL it needed is gone); recreating "
                        "it and re-reading un-acked events from the outbox table"
              : stale ? "replication slot predates its publication and cannot decode; recreating "
                        "it and re-reading un-acked events from the outbox table"
                      : "replication slot's creation was interrupted before its backfill was "
                        "recorded; recreating it so rows already in the outbox are not missed",
              {{"slot", names.slot}});
    COURIER_RETURN_IF_ERROR(
        PgExec(conn, "SELECT pg_drop_replication_slot($1)", {names.slot}).status());
  } else if (registered && !interrupted) {
    log::Warn(
        "replication slot is gone; recreating it and re-reading un-acked events from the outbox "
        "table (events that were never kept in the table cannot be recovered)",
        {{"slot", names.slot}});
  }
  return CreateSlot(conn, conninfo, t, names, stop);
}

}  // namespace

// Called only by the lease holder (stores/leadership.h guarantees the previous holder's lease
// ran out). A previous holder that froze (SIGSTOP, a stalled host) leaves its walsender attached
// to the slot until wal_sender_timeout, and the slot refuses every other stream meanwhile
// ("replication slot is active for PID"): end that walsender, and wait until it let go.
Status EndPreviousStream(PGconn* conn, const std::string& slot) {
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT active_pid::text, pg_terminate_backend(active_pid)"
                                  " FROM pg_replication_slots WHERE slot_name = $1 AND"
                                  " database = current_database() AND active_pid IS NOT NULL",
                                  {slot}));
  if (PQntuples(res.get()) == 0) return Status::Ok();
  const std::string pid = PQgetvalue(res.get(), 0, 0);
  log::Warn("a previous relay's stream still held the replication slot; ended it",
            {{"slot", slot}, {"pid", pid}});
  const TimePoint deadline = Clock::Real().Now() + Duration(10000);
  const StopSignal never;
  while (Clock::Real().Now() < deadline) {
    COURIER_ASSIGN_OR_RETURN(PgResult held,
                             PgExec(conn,
                                    "SELECT 1 FROM pg_replication_slots WHERE slot_name ="
                                    " $1 AND active_pid IS NOT NULL",
                                    {slot}));
    if (PQntuples(held.get()) == 0) return Status::Ok();
    Clock::Real().SleepFor(Duration(20), never);
  }
  return RetriableError("replication slot " + slot + " is still held by PID " + pid +
                        " after ending it");
}

Result<pgoutput::Lsn> ReadSlotConfirmed(PGconn* conn, const std::string& slot) {
  COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn,
                                                "SELECT confirmed_flush_lsn::text FROM"
                                                " pg_replication_slots WHERE slot_name = $1",
                                                {slot}));
  if (PQntuples(res.get()) != 1) return RetriableError("replication slot " + slot + " disappeared");
  return pgoutput::ParseLsn(PQgetvalue(res.get(), 0, 0));
}

Status EnsureCheckpointColumn(PGconn* conn, const TableNames& t, const std::string& source) {
  const std::string table = QuoteIdent(t.CdcSlots());
  COURIER_ASSIGN_OR_RETURN(PgResult has, PgExec(conn,
                                                "SELECT 1 FROM pg_attribute WHERE attrelid ="
                                                " $1::regclass AND attname = 'checkpoint_lsn' AND"
                                                " NOT attisdropped",
                                                {table}));
  if (PQntuples(has.get()) == 1) return Status::Ok();
  Status st =
      PgRun(conn, "ALTER TABLE " + table + " ADD COLUMN IF NOT EXISTS checkpoint_lsn pg_lsn");
  if (!st.ok()) {
    return NotFoundError("table " + table + " lacks the column checkpoint_lsn (" + st.message() +
                         "); add it with: courier migrate --mode cdc --source " + source);
  }
  return Status::Ok();
}

}  // namespace cdc

Status PrepareCdc(PGconn* conn, const std::string& conninfo, const TableNames& tables,
                  const CdcOptions& cdc, const StopSignal& stop, bool slot_stale) {
  COURIER_RETURN_IF_ERROR(cdc::CheckCdcTables(conn, tables));
  COURIER_ASSIGN_OR_RETURN(cdc::CdcNames names, cdc::ResolveNames(conn, tables, cdc));
  COURIER_ASSIGN_OR_RETURN(const bool created,
                           cdc::EnsurePublication(conn, tables, names.publication));
  return cdc::EnsureSlot(conn, conninfo, tables, names, created || slot_stale, stop);
}

}  // namespace courier
