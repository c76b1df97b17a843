// PostgreSQL change data capture source: the outbox's inserts (and `courier` logical
// messages) read from the write-ahead log through a logical replication slot and the
// built-in pgoutput plugin.
//
// The slot's confirmed position only moves past a transaction once every event of it has
// been acked by the sink (or parked as a dead letter) and its rows were deleted (or stamped)
// in the outbox; a restart resumes there, so a crash duplicates and never loses. Rows stay in
// the outbox until acked, which is what lets a lost slot be recreated without loss: the new
// slot is created with an exported snapshot, the rows visible in it are recorded in the
// backfill table, and those are published (by the polling source, filtered to them) before
// the stream of everything committed after the snapshot.
//
// Threads: the relay thread drives the source; a keepalive thread reports the confirmed
// position every status interval, so the server neither times out the stream nor keeps WAL
// while a sink holds the relay thread in a long wait. `repl_mu_` serialises libpq calls on
// the replication connection.
#include <sys/select.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <unordered_map>

#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/url.h"
#include "core/uuid.h"
#include "sources/pgoutput.h"
#include "sources/postgres_common.h"
#include "sources/row_codec.h"
#include "sources/source.h"
#include "sources/table_shape.h"

namespace courier {
namespace {

using pgoutput::Lsn;

constexpr uint32_t kByteaOid = 17;
constexpr const char* kMessagePrefix = "courier";

int64_t NowUnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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

struct CdcNames {
  std::string slot;
  std::string publication;
  std::string outbox;  // schema-qualified, for messages
};

// The consistent_lsn of a registry row whose slot is being created: a slot found with it was
// created by this outbox, whose relay or migrate stopped before recording its backfill.
constexpr const char* kCreating = "0/0";

// Another outbox's CDC registry (`<outbox>_cdc_slot`) in this database that lists `slot`, or
// "" when none does. Registries this user may not read are not looked at.
Result<std::string> OtherOwner(PGconn* conn, const TableNames& t, const std::string& slot) {
  ASSIGN_OR_RETURN(PgResult tables,
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
    ASSIGN_OR_RETURN(PgResult row,
                     PgExec(conn, "SELECT 1 FROM " + table + " WHERE slot_name = $1", {slot}));
    if (PQntuples(row.get()) > 0) return table;
  }
  return std::string();
}

// Derived names are unique per outbox: slot names are cluster-wide, so the slot is
// courier_<database>_<table> made slot-safe, cut, and followed by a hash of the exact
// database and schema-qualified table ("orders-outbox" and "orders_outbox" read alike but
// hash apart). Slots that earlier versions named without the hash keep their name while this
// outbox's registry, and no other's, lists them. The publication (per database) is the one
// registered with the slot, else the table's name in schema public, else schema_table with
// the hash.
Result<CdcNames> ResolveNames(PGconn* conn, const TableNames& t, const CdcOptions& cdc) {
  ASSIGN_OR_RETURN(PgResult res, PgExec(conn,
                                        "SELECT current_database(), n.nspname, c.relname FROM"
                                        " pg_class c JOIN pg_namespace n ON n.oid ="
                                        " c.relnamespace WHERE c.oid = $1::regclass",
                                        {QuoteIdent(t.outbox)}));
  const std::string database = PQgetvalue(res.get(), 0, 0);
  const std::string schema = PQgetvalue(res.get(), 0, 1);
  const std::string table = PQgetvalue(res.get(), 0, 2);
  CdcNames names{cdc.slot, cdc.publication, schema + "." + table};
  const std::string identity = database + '\0' + schema + '\0' + table;
  ASSIGN_OR_RETURN(PgResult registry,
                   PgExec(conn, "SELECT slot_name, publication FROM " + QuoteIdent(t.CdcSlots())));
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
      ASSIGN_OR_RETURN(const std::string other, OtherOwner(conn, t, legacy));
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
  ASSIGN_OR_RETURN(PgResult res,
                   PgExec(conn,
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
                           " does not exist; create the tables with: courier migrate --mode cdc "
                           "--source URL");
    }
  }
  return Status::Ok();
}

// True when it had to create the publication.
Result<bool> EnsurePublication(PGconn* conn, const TableNames& t, const std::string& publication) {
  const std::string outbox = QuoteIdent(t.outbox);
  ASSIGN_OR_RETURN(PgResult res, PgExec(conn,
                                        "SELECT p.pubinsert, p.puballtables OR EXISTS (SELECT 1"
                                        " FROM pg_publication_rel r WHERE r.prpubid = p.oid AND"
                                        " r.prrelid = $2::regclass)"
                                        " FROM pg_publication p WHERE p.pubname = $1",
                                        {publication, outbox}));
  if (PQntuples(res.get()) == 0) {
    Status st = PgRun(conn, "CREATE PUBLICATION " + QuoteIdent(publication) + " FOR TABLE " +
                                outbox + " WITH (publish = 'insert')");
    if (!st.ok() && st.message().find("already exists") == std::string::npos) {
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
      log::Warn(
          "creating the replication slot waits for the transactions open when it began to end",
          {{"slot", slot},
           {"oldest_pid", known ? PQgetvalue(oldest->get(), 0, 0) : "?"},
           {"open_for_s", known ? PQgetvalue(oldest->get(), 0, 1) : "?"}});
      next_log = Clock::Real().Now() + Duration(30000);
    }
    const int fd = PQsocket(repl);
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fd, &set);
    timeval tv{0, 100000};
    (void)select(fd + 1, &set, nullptr, nullptr, &tv);
  }
  PgResult res(PQgetResult(repl));
  while (PgResult extra{PQgetResult(repl)}) {
  }
  if (res == nullptr || PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
    return PgError(repl, res.get());
  }
  return res;
}

Status CreateSlot(PGconn* conn, const std::string& conninfo, const TableNames& t,
                  const CdcNames& names, const StopSignal& stop) {
  // Registered first, as being created: a slot found later with this mark is this outbox's,
  // left behind by a crash before the backfill was recorded, and is recreated.
  RETURN_IF_ERROR(PgExec(conn,
                         "INSERT INTO " + QuoteIdent(t.CdcSlots()) +
                             " (slot_name, publication, consistent_lsn) VALUES ($1, $2, $3)"
                             " ON CONFLICT (slot_name) DO UPDATE SET publication ="
                             " excluded.publication, consistent_lsn = excluded.consistent_lsn,"
                             " checkpoint_lsn = NULL",
                         {names.slot, names.publication, kCreating})
                      .status());
  ASSIGN_OR_RETURN(PgConn repl, PgConnect(conninfo, /*replication=*/true));
  ASSIGN_OR_RETURN(PgResult created, CreateSlotCommand(conn, repl.get(), names.slot, stop));
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
  if (st.ok()) {
    auto res = PgExec(conn,
                      "INSERT INTO " + QuoteIdent(t.CdcBackfill()) +
                          " (slot_name, outbox_id) SELECT $1, id FROM " + QuoteIdent(t.outbox) +
                          " WHERE published_at IS NULL",
                      {names.slot});
    st = res.status();
    if (st.ok()) backfill = ParseInt64(PQcmdTuples(res->get())).value_or(0);
  }
  if (st.ok()) {
    st = PgExec(conn,
                "INSERT INTO " + QuoteIdent(t.CdcSlots()) +
                    " (slot_name, publication, consistent_lsn) VALUES ($1, $2, $3::pg_lsn)"
                    " ON CONFLICT (slot_name) DO UPDATE SET publication = excluded.publication,"
                    " consistent_lsn = excluded.consistent_lsn, created_at = now(),"
                    " checkpoint_lsn = NULL",
                {names.slot, names.publication, consistent})
             .status();
  }
  if (st.ok()) st = PgRun(conn, "COMMIT");
  if (!st.ok()) {
    (void)PgRun(conn, "ROLLBACK");
    repl.reset();
    (void)PgExec(conn, "SELECT pg_drop_replication_slot($1)", {names.slot});
    return st.WithContext("recording the rows that predate slot " + names.slot);
  }
  log::Info("created replication slot", {{"slot", names.slot},
                                         {"consistent_lsn", consistent},
                                         {"rows_to_backfill", std::to_string(backfill)}});
  return Status::Ok();
}

// `stale`: the slot cannot decode with the current publication (it predates it). A slot this
// outbox did not create is never dropped nor used: another outbox's events would go unpublished
// while both relays look healthy.
Status EnsureSlot(PGconn* conn, const std::string& conninfo, const TableNames& t,
                  const CdcNames& names, bool stale, const StopSignal& stop) {
  ASSIGN_OR_RETURN(
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
  ASSIGN_OR_RETURN(const std::string other, OtherOwner(conn, t, names.slot));
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
    RETURN_IF_ERROR(PgExec(conn, "SELECT pg_drop_replication_slot($1)", {names.slot}).status());
  } else if (registered && !interrupted) {
    log::Warn(
        "replication slot is gone; recreating it and re-reading un-acked events from the outbox "
        "table (events that were never kept in the table cannot be recovered)",
        {{"slot", names.slot}});
  }
  return CreateSlot(conn, conninfo, t, names, stop);
}

// Called only by the lease holder (relay/leadership.h guarantees the previous holder's lease
// ran out). A previous holder that froze (SIGSTOP, a stalled host) leaves its walsender attached
// to the slot until wal_sender_timeout, and the slot refuses every other stream meanwhile
// ("replication slot is active for PID"): end that walsender, and wait until it let go.
Status EndPreviousStream(PGconn* conn, const std::string& slot) {
  ASSIGN_OR_RETURN(PgResult res, PgExec(conn,
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
    ASSIGN_OR_RETURN(PgResult held, PgExec(conn,
                                           "SELECT 1 FROM pg_replication_slots WHERE slot_name ="
                                           " $1 AND active_pid IS NOT NULL",
                                           {slot}));
    if (PQntuples(held.get()) == 0) return Status::Ok();
    Clock::Real().SleepFor(Duration(20), never);
  }
  return RetriableError("replication slot " + slot + " is still held by PID " + pid +
                        " after ending it");
}

// A deterministic event id for a logical message without one: its LSN and the cluster's
// system identifier in a version-8 UUID, so a redelivered message keeps its id.
std::string MessageEventId(Lsn lsn, uint64_t system_id) {
  uint8_t b[16];
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(lsn >> (56 - 8 * i));
  b[6] = static_cast<uint8_t>(0x80 | ((system_id >> 60) & 0x0f));
  b[7] = static_cast<uint8_t>(lsn >> 8);
  b[8] = static_cast<uint8_t>(0x80 | ((system_id >> 54) & 0x3f));
  b[9] = static_cast<uint8_t>(lsn);
  for (int i = 10; i < 16; ++i) b[i] = static_cast<uint8_t>(system_id >> (8 * (15 - i)));
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0x0f]);
  }
  return out;
}

std::string Hex(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char ch : bytes) {
    out.push_back(kHex[ch >> 4]);
    out.push_back(kHex[ch & 0x0f]);
  }
  return out;
}

// The outbox columns the source reads, by position in the relation as the stream sends it.
struct OutboxColumns {
  int id = -1, event_id = -1, aggregate_type = -1, aggregate_id = -1, event_type = -1, payload = -1,
      headers = -1, created_at = -1;
  bool payload_bytea = false;
};

class PostgresCdcSource final : public Source {
 public:
  PostgresCdcSource(SourceOptions options, std::string conninfo)
      : options_(std::move(options)), conninfo_(std::move(conninfo)) {}
  ~PostgresCdcSource() override { Close(); }

  Status Open() override {
    Close();
    ASSIGN_OR_RETURN(conn_, PgConnect(conninfo_));
    RETURN_IF_ERROR(CheckCdcTables(conn_.get(), options_.tables));
    RETURN_IF_ERROR(CheckTableShapes(conn_.get(), options_.tables));
    RETURN_IF_ERROR(CheckRelayPrivileges(conn_.get(), options_.tables, options_.mode));
    ASSIGN_OR_RETURN(names_, ResolveNames(conn_.get(), options_.tables, options_.cdc));
    ASSIGN_OR_RETURN(
        PgResult res,
        PgExec(conn_.get(),
               "SELECT n.nspname, c.relname,"
               " (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
               "  attrelid = $2::regclass AND attname = 'payload'),"
               " (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
               "  attrelid = $2::regclass AND attname = 'headers')"
               " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
               " WHERE c.oid = $1::regclass",
               {QuoteIdent(options_.tables.outbox), QuoteIdent(options_.tables.dead_letter)}));
    outbox_schema_ = PQgetvalue(res.get(), 0, 0);
    outbox_name_ = PQgetvalue(res.get(), 0, 1);
    const std::string dead_payload = PQgetvalue(res.get(), 0, 2);
    dead_payload_bytea_ = dead_payload == "bytea";
    const std::string outbox = QuoteIdent(options_.tables.outbox);
    checkpoint_sql_ = options_.mode == CheckpointMode::kDelete
                          ? "DELETE FROM " + outbox + " WHERE id = ANY($1::int8[]) RETURNING id"
                          : "UPDATE " + outbox +
                                " SET published_at = now() WHERE id = ANY($1::int8[])"
                                " RETURNING id";
    dead_letter_sql_ =
        "INSERT INTO " + QuoteIdent(options_.tables.dead_letter) +
        " (outbox, outbox_id, event_id, aggregate_type, aggregate_id, event_type, payload,"
        " headers, created_at, error, sink, status) VALUES (" +
        QuoteLiteral(options_.tables.outbox) + ", $1::int8, $2::uuid, $3, $4, $5, " +
        (dead_payload == "bytea" ? "decode($6, 'hex')" : "$6::" + dead_payload) +
        ", $7::" + std::string(PQgetvalue(res.get(), 0, 3)) +
        ", to_timestamp($8::float8 / 1000000), $9, $10, $11)";
    record_sql_ = "UPDATE " + QuoteIdent(options_.tables.CdcSlots()) +
                  " SET checkpoint_lsn = $2::pg_lsn WHERE slot_name = $1";
    cleanup_sql_ = "DELETE FROM " + outbox + " WHERE id IN (SELECT id FROM " + outbox +
                   " WHERE published_at < now() - make_interval(secs => $1::float8 / 1000)"
                   " LIMIT 10000)";
    RETURN_IF_ERROR(EnsureCheckpointColumn());
    state_ = State::kSetUp;
    return Status::Ok();
  }

  // Once the one relay of the outbox, sets up the publication and slot (they are ours now).
  // The relay calls this only while it holds the outbox's lease, so a stream still attached to
  // the slot is a previous holder's, which must let go.
  Status AcquireLeadership(const StopSignal& stop, bool /*wait*/) override {
    RETURN_IF_ERROR(EndPreviousStream(conn_.get(), names_.slot));
    RETURN_IF_ERROR(
        PrepareCdc(conn_.get(), conninfo_, options_.tables, options_.cdc, stop, slot_stale_));
    slot_stale_ = false;
    RETURN_IF_ERROR(OpenBackfill());
    state_ = State::kBackfill;
    return Status::Ok();
  }

  Result<FetchedBatch> Fetch(size_t max) override {
    if (state_ == State::kSetUp) {
      return FailedPreconditionError("CDC source fetched from before AcquireLeadership");
    }
    if (state_ == State::kBackfill) {
      ASSIGN_OR_RETURN(FetchedBatch batch, backfill_->Fetch(max));
      if (!batch.empty()) return batch;
      // Drained: every row that predates the slot is published; the stream has the rest.
      RETURN_IF_ERROR(PgExec(conn_.get(),
                             "DELETE FROM " + QuoteIdent(options_.tables.CdcBackfill()) +
                                 " WHERE slot_name = $1",
                             {names_.slot})
                          .status());
      backfill_.reset();
      RETURN_IF_ERROR(StartStreaming());
      state_ = State::kStreaming;
    }
    return ReadStream(max);
  }

  void Wait(const StopSignal& stop) override {
    if (state_ != State::kStreaming) return;
    if (!redeliver_.empty() || !stash_.empty()) return;
    const TimePoint deadline = Clock::Real().Now() + options_.poll_interval;
    while (!stop.requested() && Clock::Real().Now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(repl_mu_);
        if (!repl_ || PQconsumeInput(repl_.get()) == 0) return;  // Fetch reports the error
        char* buf = nullptr;
        const int n = PQgetCopyData(repl_.get(), &buf, /*async=*/1);
        if (n > 0) {
          stash_.assign(buf, static_cast<size_t>(n));
          PQfreemem(buf);
          return;
        }
        if (n < 0) return;
      }
      WaitReadable(Duration(20));  // re-check `stop` every 20 ms
    }
  }

  Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                    const std::string& sink_name) override {
    if (state_ == State::kBackfill) return backfill_->Checkpoint(acked, rejected, sink_name);
    std::vector<int64_t> rows;
    std::vector<int64_t> xids;  // of the transactions that inserted `rows`
    for (int64_t pos : acked) {
      auto it = inflight_.find(pos);
      if (it != inflight_.end() && it->second.row_id > 0) {
        rows.push_back(it->second.row_id);
        xids.push_back(it->second.xid);
      }
    }
    std::vector<std::pair<const Rejected*, Inflight>> dead;
    for (const Rejected& r : rejected) {
      auto it = inflight_.find(r.id);
      if (it != inflight_.end()) dead.emplace_back(&r, it->second);
    }
    // The events count as done once the transaction below commits; should it fail, the relay
    // closes the source, and with it this state.
    for (int64_t pos : acked) Done(pos);
    for (const Rejected& r : rejected) Done(r.id);
    // The position past every transaction whose events are now all done is stored in the
    // same transaction as the rows it deletes: a restart skips exactly what this made done,
    // even after a server crash, which sets the slot back to its last server checkpoint.
    const Lsn done_lsn = ConfirmableLsn();
    const bool record = done_lsn > persisted_;
    if (!rows.empty() || !dead.empty() || record) {
      RETURN_IF_ERROR(PgRun(conn_.get(), "BEGIN"));
      Status st = rows.empty() ? Status::Ok() : CheckpointRows(checkpoint_sql_, rows, xids);
      for (size_t i = 0; st.ok() && i < dead.size(); ++i) {
        st = DeadLetter(*dead[i].first, dead[i].second, sink_name);
      }
      if (st.ok() && record) {
        st =
            PgExec(conn_.get(), record_sql_, {names_.slot, pgoutput::FormatLsn(done_lsn)}).status();
      }
      if (st.ok()) st = PgRun(conn_.get(), "COMMIT");
      if (!st.ok()) {
        (void)PgRun(conn_.get(), "ROLLBACK");
        return ExplainCheckpointFailure(conn_.get(), options_.tables, options_.mode, st);
      }
      if (record) persisted_ = done_lsn;
    }
    // The rows are gone (or stamped): the slot may move past every transaction whose events
    // are all done.
    for (int64_t pos : handed_) {
      if (inflight_.count(pos) > 0) redeliver_.push_back(pos);
    }
    handed_.clear();
    AdvanceConfirmed();
    SendStatus(/*force=*/false);
    return Status::Ok();
  }

  Result<int64_t> DeletePublishedBefore(Duration retention) override {
    return DeletePublishedRows(conn_.get(), cleanup_sql_, retention);
  }

  void Close() override {
    StopKeepalive();
    {
      std::lock_guard<std::mutex> lock(repl_mu_);
      if (repl_ && state_ == State::kStreaming && PQstatus(repl_.get()) == CONNECTION_OK) {
        // Report the final position so a restart repeats as little as possible.
        SendStatusLocked(/*reply=*/false);
        (void)PQputCopyEnd(repl_.get(), nullptr);
        (void)PQflush(repl_.get());
      }
      repl_.reset();
    }
    backfill_.reset();
    conn_.reset();
    inflight_.clear();
    redeliver_.clear();
    handed_.clear();
    txs_.clear();
    columns_.clear();
    stash_.clear();
    in_tx_ = false;
    state_ = State::kClosed;
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  enum class State { kClosed, kSetUp, kBackfill, kStreaming };

  // A transaction of the stream whose events are not all done yet.
  struct Tx {
    uint64_t seq = 0;
    Lsn end_lsn = 0;
    bool committed = false;
    int64_t open = 0;  // events handed out and not yet done
    int64_t commit_time_us = 0;
  };
  struct Inflight {
    int64_t row_id = 0;  // 0 for logical messages
    uint64_t tx = 0;     // Tx::seq
    Event event;
    uint32_t xid = 0;  // of the transaction that inserted the row
  };

  // Runs `sql` (an UPDATE or DELETE of ids $1 RETURNING id) on `rows` and waits until it
  // found them all. The server streams a transaction once its commit record is flushed, which
  // is before the transaction is visible to other sessions (and, under synchronous
  // replication, before the standbys confirmed it): a row deleted in that window is not found,
  // and the checkpoint would silently leave it in the outbox forever, its transaction
  // confirmed. A row not found is deleted again once its transaction is visible, which is
  // when the inserting transaction no longer holds the lock on its own xid. One still not
  // found then is gone already (deleted by hand, or this is a redelivery after a crash).
  Status CheckpointRows(const std::string& sql, const std::vector<int64_t>& rows,
                        const std::vector<int64_t>& xids) {
    std::vector<int64_t> missing = rows;
    const TimePoint deadline = Clock::Real().Now() + kVisibleWait;
    const StopSignal never;
    bool settled = false;
    while (true) {
      ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), sql, {IdArray(missing)}));
      std::set<int64_t> found;
      for (int i = 0; i < PQntuples(res.get()); ++i) {
        found.insert(ParseInt64(PQgetvalue(res.get(), i, 0)).value_or(0));
      }
      std::vector<int64_t> still;
      std::vector<int64_t> waiting;
      for (int64_t id : missing) {
        if (found.count(id) > 0) continue;
        still.push_back(id);
        const size_t at =
            static_cast<size_t>(std::find(rows.begin(), rows.end(), id) - rows.begin());
        waiting.push_back(xids[at]);
      }
      if (still.empty() || settled) return Status::Ok();
      missing = std::move(still);
      // Wait until none of their transactions is still committing.
      while (true) {
        ASSIGN_OR_RETURN(PgResult held,
                         PgExec(conn_.get(),
                                "SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND"
                                " transactionid::text::int8 = ANY($1::int8[]) LIMIT 1",
                                {IdArray(waiting)}));
        if (PQntuples(held.get()) == 0) break;
        if (Clock::Real().Now() >= deadline) {
          return RetriableError("outbox rows " + IdArray(missing) +
                                " were streamed but are not visible yet: their transaction is "
                                "still committing (waiting for a synchronous standby?)");
        }
        Clock::Real().SleepFor(Duration(2), never);
      }
      settled = true;
    }
  }

  // Bookkeeping tables of earlier versions lack the relay's checkpoint position: added when
  // this relay's user may (it owns the table), otherwise `courier migrate --mode cdc` does.
  Status EnsureCheckpointColumn() {
    const std::string table = QuoteIdent(options_.tables.CdcSlots());
    ASSIGN_OR_RETURN(PgResult has, PgExec(conn_.get(),
                                          "SELECT 1 FROM pg_attribute WHERE attrelid ="
                                          " $1::regclass AND attname = 'checkpoint_lsn' AND"
                                          " NOT attisdropped",
                                          {table}));
    if (PQntuples(has.get()) == 1) return Status::Ok();
    Status st = PgRun(conn_.get(),
                      "ALTER TABLE " + table + " ADD COLUMN IF NOT EXISTS checkpoint_lsn pg_lsn");
    if (!st.ok()) {
      return NotFoundError("table " + table + " lacks the column checkpoint_lsn (" + st.message() +
                           "); add it with: courier migrate --mode cdc --source " + Describe());
    }
    return Status::Ok();
  }

  Status OpenBackfill() {
    SourceOptions o = options_;
    o.cdc = CdcOptions{};
    o.filter = "o.id IN (SELECT outbox_id FROM " + QuoteIdent(options_.tables.CdcBackfill()) +
               " WHERE slot_name = $2)";
    o.filter_arg = names_.slot;
    backfill_ = MakePostgresPollSource(o, conninfo_);
    return backfill_->Open();
  }

  Status StartStreaming() {
    ASSIGN_OR_RETURN(PgConn repl, PgConnect(conninfo_, /*replication=*/true));
    ASSIGN_OR_RETURN(PgResult id, PgSimple(repl.get(), "IDENTIFY_SYSTEM"));
    system_id_ = std::stoull(PQgetvalue(id.get(), 0, 0));
    ASSIGN_OR_RETURN(PgResult slot, PgExec(conn_.get(),
                                           "SELECT confirmed_flush_lsn::text FROM"
                                           " pg_replication_slots WHERE slot_name = $1",
                                           {names_.slot}));
    if (PQntuples(slot.get()) != 1) {
      return RetriableError("replication slot " + names_.slot + " disappeared");
    }
    ASSIGN_OR_RETURN(Lsn start, pgoutput::ParseLsn(PQgetvalue(slot.get(), 0, 0)));
    // After a server crash the slot is back at its position of the last server checkpoint;
    // the relay's own position, committed with the rows it deleted, is exact. Asking to start
    // there makes the server skip every transaction that committed before it.
    ASSIGN_OR_RETURN(PgResult mine, PgExec(conn_.get(),
                                           "SELECT checkpoint_lsn::text FROM " +
                                               QuoteIdent(options_.tables.CdcSlots()) +
                                               " WHERE slot_name = $1 AND checkpoint_lsn IS NOT"
                                               " NULL",
                                           {names_.slot}));
    persisted_ = 0;
    if (PQntuples(mine.get()) == 1) {
      ASSIGN_OR_RETURN(persisted_, pgoutput::ParseLsn(PQgetvalue(mine.get(), 0, 0)));
      if (persisted_ > start) {
        log::Info("resuming after the slot's position, where this relay last checkpointed",
                  {{"slot", names_.slot},
                   {"slot_lsn", pgoutput::FormatLsn(start)},
                   {"checkpoint_lsn", pgoutput::FormatLsn(persisted_)}});
        start = persisted_;
      }
    }
    // The server streams up to its flushed WAL, which holds every (synchronous) commit.
    ASSIGN_OR_RETURN(PgResult end, PgExec(conn_.get(), "SELECT pg_current_wal_flush_lsn()::text"));
    ASSIGN_OR_RETURN(catch_up_lsn_, pgoutput::ParseLsn(PQgetvalue(end.get(), 0, 0)));
    catch_up_deadline_ = Clock::Real().Now() + kCatchUpWait;
    const std::string cmd = "START_REPLICATION SLOT " + QuoteIdent(names_.slot) + " LOGICAL " +
                            pgoutput::FormatLsn(start) + " (proto_version '1', publication_names " +
                            QuoteLiteral(QuoteIdent(names_.publication)) + ", messages 'true')";
    PgResult res(PQexec(repl.get(), cmd.c_str()));
    if (PQresultStatus(res.get()) != PGRES_COPY_BOTH) {
      // A slot dropped or taken since EnsureSlot: the reconnect sorts it out.
      return RetriableError(PgError(repl.get(), res.get()).message())
          .WithContext("start streaming from slot " + names_.slot);
    }
    {
      std::lock_guard<std::mutex> lock(repl_mu_);
      repl_ = std::move(repl);
      confirmed_ = start;
      received_ = start;
      last_status_ = Clock::Real().Now();
    }
    log::Info("streaming from replication slot", {{"slot", names_.slot},
                                                  {"publication", names_.publication},
                                                  {"from_lsn", pgoutput::FormatLsn(start)}});
    StartKeepalive();
    return Status::Ok();
  }

  // The next CopyData message, without blocking; false when none is buffered.
  Result<bool> NextCopyData(std::string* out) {
    if (!stash_.empty()) {
      out->swap(stash_);
      stash_.clear();
      return true;
    }
    std::lock_guard<std::mutex> lock(repl_mu_);
    char* buf = nullptr;
    int n = PQgetCopyData(repl_.get(), &buf, /*async=*/1);
    if (n == 0) {
      if (PQconsumeInput(repl_.get()) == 0) return PgError(repl_.get(), nullptr);
      n = PQgetCopyData(repl_.get(), &buf, /*async=*/1);
    }
    if (n > 0) {
      out->assign(buf, static_cast<size_t>(n));
      PQfreemem(buf);
      return true;
    }
    if (n == 0) return false;
    // The stream ended: the server says why in the result that follows.
    PgResult res(PQgetResult(repl_.get()));
    Status st = res != nullptr && PQresultStatus(res.get()) == PGRES_FATAL_ERROR
                    ? PgError(repl_.get(), res.get())
                    : RetriableError("replication stream ended");
    // Whatever the class, the stream restarts from the slot after reconnecting (a dropped
    // slot is recreated then). A publication dropped and created again under the slot makes
    // every restart fail the same way: the slot is recreated then too.
    if (st.message().find("publication \"") != std::string::npos &&
        st.message().find("does not exist") != std::string::npos) {
      slot_stale_ = true;
    }
    return RetriableError(st.message()).WithContext("replication stream of slot " + names_.slot);
  }

  Result<FetchedBatch> ReadStream(size_t max) {
    FetchedBatch batch;
    handed_.clear();
    while (!redeliver_.empty() && batch.size() < max) {
      const int64_t pos = redeliver_.front();
      redeliver_.pop_front();
      batch.events.push_back(inflight_.at(pos).event);
      handed_.push_back(pos);
    }
    std::string buf;
    while (batch.size() < max) {
      ASSIGN_OR_RETURN(bool got, NextCopyData(&buf));
      if (!got && batch.empty() && received_ < catch_up_lsn_ &&
          Clock::Real().Now() < catch_up_deadline_) {
        // Just started: an empty answer must mean "nothing committed is left" (what --once
        // relies on), so wait for the stream to reach the WAL position seen at the start,
        // unless it stalls for kCatchUpWait.
        WaitReadable(Duration(50));
        continue;
      }
      if (!got) break;
      catch_up_deadline_ = Clock::Real().Now() + kCatchUpWait;
      ASSIGN_OR_RETURN(pgoutput::CopyMessage copy, pgoutput::ParseCopyMessage(buf));
      if (copy.kind == pgoutput::CopyMessage::Kind::kKeepalive) {
        OnKeepalive(copy.keepalive);
        continue;
      }
      if (copy.kind != pgoutput::CopyMessage::Kind::kXLogData) continue;
      received_ = std::max<Lsn>(received_, copy.data.start);
      ASSIGN_OR_RETURN(pgoutput::Message m, pgoutput::ParseMessage(copy.data.payload));
      RETURN_IF_ERROR(OnMessage(m, &batch));
    }
    SendStatus(/*force=*/false);
    return batch;
  }

  void WaitReadable(Duration timeout) {
    int fd;
    {
      std::lock_guard<std::mutex> lock(repl_mu_);
      fd = PQsocket(repl_.get());
    }
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fd, &set);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
    timeval tv{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
    (void)select(fd + 1, &set, nullptr, nullptr, &tv);
  }

  void OnKeepalive(const pgoutput::Keepalive& k) {
    received_ = std::max<Lsn>(received_, k.wal_end);
    // Nothing of ours is in flight: everything up to the server's position is done, even if
    // it was other tables' traffic. This is what keeps an idle outbox from pinning WAL.
    if (!in_tx_ && txs_.empty() && inflight_.empty()) {
      confirmed_ = std::max<Lsn>(confirmed_, k.wal_end);
    }
    SendStatus(/*force=*/k.reply_requested);
  }

  Status OnMessage(const pgoutput::Message& m, FetchedBatch* batch) {
    using Kind = pgoutput::Message::Kind;
    switch (m.kind) {
      case Kind::kBegin:
        txs_.push_back(Tx{next_tx_++, 0, false, 0, m.commit_time_us});
        xid_ = m.xid;
        in_tx_ = true;
        return Status::Ok();
      case Kind::kCommit:
        if (!txs_.empty()) {
          txs_.back().end_lsn = m.end_lsn;
          txs_.back().committed = true;
        }
        in_tx_ = false;
        AdvanceConfirmed();
        return Status::Ok();
      case Kind::kRelation:
        OnRelation(m.relation);
        return Status::Ok();
      case Kind::kInsert: {
        auto rel = columns_.find(m.relation_id);
        if (rel == columns_.end()) return Status::Ok();  // another table of the publication
        Hand(InsertToEvent(rel->second, m.values), batch);
        return Status::Ok();
      }
      case Kind::kLogicalMessage:
        if (m.prefix != kMessagePrefix) return Status::Ok();
        if (!m.transactional) {
          // Written even if its transaction rolled back: publishing it could be a ghost.
          txs_.push_back(Tx{next_tx_++, m.message_lsn, true, 0, NowUnixMicros()});
          Decoded d = MessageToEvent(m);
          d.error =
              "non-transactional logical message: it is written even when its transaction "
              "rolls back; emit it with pg_logical_emit_message(true, 'courier', ...)";
          Hand(std::move(d), batch);
          return Status::Ok();
        }
        Hand(MessageToEvent(m), batch);
        return Status::Ok();
      case Kind::kOther:
        return Status::Ok();
    }
    return Status::Ok();
  }

  void OnRelation(const pgoutput::Relation& r) {
    if (r.schema != outbox_schema_ || r.name != outbox_name_) {
      columns_.erase(r.id);
      return;
    }
    OutboxColumns c;
    for (size_t i = 0; i < r.columns.size(); ++i) {
      const std::string& n = r.columns[i].name;
      const int idx = static_cast<int>(i);
      if (n == "id") c.id = idx;
      if (n == "event_id") c.event_id = idx;
      if (n == "aggregate_type") c.aggregate_type = idx;
      if (n == "aggregate_id") c.aggregate_id = idx;
      if (n == "event_type") c.event_type = idx;
      if (n == "headers") c.headers = idx;
      if (n == "created_at") c.created_at = idx;
      if (n == "payload") {
        c.payload = idx;
        c.payload_bytea = r.columns[i].type_oid == kByteaOid;
      }
    }
    columns_[r.id] = c;
  }

  struct Decoded {
    int64_t row_id = 0;
    Event event;
    std::string error;  // non-empty: malformed, to be parked
  };

  // The row as the stream sends it, through the row codec every source uses.
  Decoded InsertToEvent(const OutboxColumns& c, const std::vector<pgoutput::Value>& values) {
    auto column = [&values](int idx) -> std::optional<std::string> {
      if (idx < 0 || static_cast<size_t>(idx) >= values.size()) return std::nullopt;
      const pgoutput::Value& v = values[static_cast<size_t>(idx)];
      if (v.kind != pgoutput::Value::Kind::kText) return std::nullopt;
      return std::string(v.text);
    };
    OutboxRow row{column(c.id),           column(c.event_id),   column(c.aggregate_type),
                  column(c.aggregate_id), column(c.event_type), column(c.payload),
                  column(c.headers),      std::nullopt};
    if (c.payload_bytea && row.payload) row.payload = UnescapeBytea(*row.payload);
    if (c.created_at < 0) {
      row.created_at_us = std::to_string(CurrentCommitTime());  // an outbox without the column
    } else if (std::optional<std::string> text = column(c.created_at)) {
      const std::optional<int64_t> us = pgoutput::ParseTimestamp(*text);
      row.created_at_us = us ? std::to_string(*us) : QuoteLiteral(*text);
    }
    DecodedRow decoded = DecodeOutboxRow(row);
    Decoded d;
    d.row_id = decoded.event.row_id;
    d.event = std::move(decoded.event);
    d.error = std::move(decoded.error);
    // The dead letter's created_at when the row's own is unusable.
    if (!d.error.empty() && d.event.created_at_us == 0) d.event.created_at_us = CurrentCommitTime();
    return d;
  }

  // The documented message format: a JSON object with aggregate_type, aggregate_id,
  // event_type, payload (any JSON value) and optional event_id and headers.
  Decoded MessageToEvent(const pgoutput::Message& m) {
    Decoded d;
    d.event.event_id = MessageEventId(m.message_lsn, system_id_);
    d.event.created_at_us = CurrentCommitTime();
    // Its payload and headers are serialized again, recursively: bound the depth first.
    if (!JsonDepthWithin(m.content)) {
      d.error = "logical message nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return d;
    }
    const nlohmann::json j = nlohmann::json::parse(m.content, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) {
      d.error = "logical message is not a JSON object: " + std::string(m.content.substr(0, 200));
      return d;
    }
    auto field = [&](const char* name, std::string* out) {
      auto it = j.find(name);
      if (it != j.end() && it->is_string()) {
        *out = it->get<std::string>();
      } else if (d.error.empty()) {
        d.error = std::string("logical message lacks the string field \"") + name + "\"";
      }
    };
    field("aggregate_type", &d.event.aggregate_type);
    field("aggregate_id", &d.event.aggregate_id);
    field("event_type", &d.event.event_type);
    if (auto it = j.find("event_id"); it != j.end()) {
      if (it->is_string() && IsUuid(it->get<std::string>())) {
        d.event.event_id = it->get<std::string>();
      } else if (d.error.empty()) {
        d.error = "logical message has an event_id that is not a UUID";
      }
    }
    if (auto it = j.find("payload"); it != j.end()) d.event.payload = it->dump();
    if (auto it = j.find("headers"); it != j.end() && !it->is_null()) {
      auto headers = HeadersFromJson(it->dump());
      if (headers.ok()) {
        d.event.headers = std::move(headers).value();
      } else if (d.error.empty()) {
        d.error = headers.status().message();
      }
    }
    return d;
  }

  int64_t CurrentCommitTime() const {
    return txs_.empty() ? NowUnixMicros() : txs_.back().commit_time_us;
  }

  // Hands a decoded event to the relay, accounting it to the current transaction.
  void Hand(Decoded d, FetchedBatch* batch) {
    const int64_t pos = next_pos_++;
    d.event.id = pos;
    if (txs_.empty()) txs_.push_back(Tx{next_tx_++, 0, false, 0, NowUnixMicros()});
    ++txs_.back().open;
    if (d.error.empty()) {
      batch->events.push_back(d.event);
    } else {
      batch->malformed.push_back(
          {pos, d.error, kParked, d.event.aggregate_type, d.event.aggregate_id, d.event.event_id});
    }
    handed_.push_back(pos);
    inflight_.emplace(pos, Inflight{d.row_id, txs_.back().seq, std::move(d.event), xid_});
  }

  void Done(int64_t pos) {
    auto it = inflight_.find(pos);
    if (it == inflight_.end()) return;
    const uint64_t seq = it->second.tx;
    inflight_.erase(it);
    if (!txs_.empty() && seq >= txs_.front().seq) {
      Tx& tx = txs_[static_cast<size_t>(seq - txs_.front().seq)];
      --tx.open;
    }
  }

  // Where the slot may move once the events now done are checkpointed: past every leading
  // transaction that is committed and has no event left in flight.
  Lsn ConfirmableLsn() const {
    Lsn lsn = confirmed_.load();
    for (const Tx& tx : txs_) {
      if (!tx.committed || tx.open != 0) break;
      lsn = std::max<Lsn>(lsn, tx.end_lsn);
    }
    return lsn;
  }

  void AdvanceConfirmed() {
    while (!txs_.empty() && txs_.front().committed && txs_.front().open == 0) {
      confirmed_ = std::max<Lsn>(confirmed_, txs_.front().end_lsn);
      txs_.pop_front();
    }
  }

  Status DeadLetter(const Rejected& r, const Inflight& f, const std::string& sink_name) {
    const Event& e = f.event;
    std::optional<std::string> payload;
    if (!e.payload.empty()) payload = dead_payload_bytea_ ? Hex(e.payload) : e.payload;
    const bool valid_id = IsUuid(e.event_id);
    PgParams params = {
        f.row_id > 0 ? std::optional<std::string>(std::to_string(f.row_id)) : std::nullopt,
        valid_id ? e.event_id : MessageEventId(0, 0),
        e.aggregate_type,
        e.aggregate_id,
        e.event_type,
        payload,
        e.headers.empty() ? std::nullopt : std::optional<std::string>(HeadersToJson(e.headers)),
        std::to_string(e.created_at_us),
        r.error,
        sink_name,
        r.status};
    RETURN_IF_ERROR(PgExec(conn_.get(), dead_letter_sql_, params).status());
    if (f.row_id > 0) {
      RETURN_IF_ERROR(CheckpointRows("DELETE FROM " + QuoteIdent(options_.tables.outbox) +
                                         " WHERE id = ANY($1::int8[]) RETURNING id",
                                     {f.row_id}, {static_cast<int64_t>(f.xid)}));
    }
    return Status::Ok();
  }

  // Reports the confirmed position: when it moved (after a checkpoint, so once per batch at
  // most: a restart then repeats little), every status interval, or when the server asks.
  void SendStatus(bool force) {
    std::lock_guard<std::mutex> lock(repl_mu_);
    const TimePoint now = Clock::Real().Now();
    const bool moved = confirmed_.load() != sent_confirmed_;
    if (!force && !moved && now - last_status_ < options_.cdc.status_interval) {
      return;
    }
    SendStatusLocked(false);
  }

  void SendStatusLocked(bool reply) {
    if (!repl_) return;
    const Lsn confirmed = confirmed_.load();
    const std::string msg =
        pgoutput::StandbyStatusUpdate(received_.load(), confirmed, NowUnixMicros(), reply);
    if (PQputCopyData(repl_.get(), msg.data(), static_cast<int>(msg.size())) == 1) {
      (void)PQflush(repl_.get());
      sent_confirmed_ = confirmed;
      last_status_ = Clock::Real().Now();
    }
  }

  void StartKeepalive() {
    StopKeepalive();
    keepalive_stop_ = false;
    keepalive_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(keepalive_mu_);
      while (!keepalive_cv_.wait_for(lock, options_.cdc.status_interval,
                                     [this] { return keepalive_stop_; })) {
        std::lock_guard<std::mutex> repl_lock(repl_mu_);
        SendStatusLocked(false);
      }
    });
  }

  void StopKeepalive() {
    if (!keepalive_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(keepalive_mu_);
      keepalive_stop_ = true;
    }
    keepalive_cv_.notify_all();
    keepalive_.join();
  }

  SourceOptions options_;
  std::string conninfo_;
  CdcNames names_;
  PgConn conn_;  // bookkeeping, checkpoints, leadership
  State state_ = State::kClosed;
  std::unique_ptr<Source> backfill_;
  std::string outbox_schema_;
  std::string outbox_name_;
  std::string checkpoint_sql_;
  std::string dead_letter_sql_;
  std::string cleanup_sql_;
  std::string record_sql_;  // stores the relay's checkpoint position
  Lsn persisted_ = 0;       // the checkpoint position last stored (relay thread)
  uint64_t system_id_ = 0;
  static constexpr Duration kCatchUpWait{10000};
  static constexpr Duration kVisibleWait{30000};
  Lsn catch_up_lsn_ = 0;
  TimePoint catch_up_deadline_{};
  bool dead_payload_bytea_ = false;
  bool slot_stale_ = false;  // survives Close(): the next AcquireLeadership recreates the slot

  // Stream state (relay thread).
  std::unordered_map<uint32_t, OutboxColumns> columns_;  // relation id -> outbox columns
  std::map<int64_t, Inflight> inflight_;                 // by position
  std::deque<int64_t> redeliver_;  // handed out, not done: offered again first
  std::vector<int64_t> handed_;    // positions of the last batch
  std::deque<Tx> txs_;
  std::string stash_;  // a message read by Wait(), not yet handled
  bool in_tx_ = false;
  uint32_t xid_ = 0;  // of the transaction being decoded
  int64_t next_pos_ = 1;
  uint64_t next_tx_ = 1;

  // Shared with the keepalive thread.
  std::mutex repl_mu_;
  PgConn repl_;  // guarded by repl_mu_
  std::atomic<Lsn> confirmed_{0};
  std::atomic<Lsn> received_{0};
  Lsn sent_confirmed_ = 0;   // guarded by repl_mu_
  TimePoint last_status_{};  // guarded by repl_mu_
  std::thread keepalive_;
  std::mutex keepalive_mu_;
  std::condition_variable keepalive_cv_;
  bool keepalive_stop_ = false;  // guarded by keepalive_mu_
};

}  // namespace

Status PrepareCdc(PGconn* conn, const std::string& conninfo, const TableNames& tables,
                  const CdcOptions& cdc, const StopSignal& stop, bool slot_stale) {
  RETURN_IF_ERROR(CheckCdcTables(conn, tables));
  ASSIGN_OR_RETURN(CdcNames names, ResolveNames(conn, tables, cdc));
  ASSIGN_OR_RETURN(const bool created, EnsurePublication(conn, tables, names.publication));
  return EnsureSlot(conn, conninfo, tables, names, created || slot_stale, stop);
}

std::unique_ptr<Source> MakePostgresCdcSource(const SourceOptions& options, std::string conninfo) {
  return std::make_unique<PostgresCdcSource>(options, std::move(conninfo));
}

}  // namespace courier
