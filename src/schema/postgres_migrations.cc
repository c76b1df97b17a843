// The PostgreSQL migrations (schema/migrations.h). Each is idempotent, so that it adopts the
// tables an earlier courier made without recording anything. Append new ones; never edit one.
#include "schema/migrations.h"

#include "core/log.h"

namespace courier {
namespace {

// "schema." of a qualified name, quoted, or "" (functions go beside the table).
std::string SchemaPrefix(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? "" : QuoteIdent(name.substr(0, dot)) + ".";
}

// 1 for Debezium's outbox shape (--outbox-format debezium): the table of Debezium's outbox
// documentation; the application writes and deletes its rows, courier only reads the log.
Status DebeziumOutbox(PGconn* conn, const TableNames& t) {
  return PgRun(conn, "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.outbox) +
                         " ("
                         " id uuid PRIMARY KEY,"
                         " aggregatetype varchar(255) NOT NULL,"
                         " aggregateid varchar(255) NOT NULL,"
                         " type varchar(255) NOT NULL,"
                         " payload jsonb)");
}

// 1: the outbox, the UUIDv7 function its event_id defaults to, and its indexes.
Status Outbox(PGconn* conn, const TableNames& t) {
  if (t.outbox_format == TableNames::OutboxFormat::kDebezium) return DebeziumOutbox(conn, t);
  const std::string outbox = QuoteIdent(t.outbox);
  const std::string uuid_fn = SchemaPrefix(t.outbox) + "courier_uuid_v7";
  return PgRun(
      conn,
      // UUIDv7: 48-bit Unix milliseconds, then random bits, version and variant set.
      "CREATE OR REPLACE FUNCTION " + uuid_fn +
          "() RETURNS uuid LANGUAGE sql VOLATILE AS $f$"
          " SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING"
          " substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)"
          " FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid $f$;"
          "CREATE TABLE IF NOT EXISTS " +
          outbox +
          " ("
          " id bigserial PRIMARY KEY,"
          " event_id uuid NOT NULL DEFAULT " +
          uuid_fn +
          "(),"
          " aggregate_type text NOT NULL,"
          " aggregate_id text NOT NULL,"
          " event_type text NOT NULL,"
          " payload json,"
          " headers jsonb,"
          " created_at timestamptz NOT NULL DEFAULT now(),"
          " published_at timestamptz);"
          "CREATE INDEX IF NOT EXISTS " +
          QuoteIdent(DerivedName(BaseName(t.outbox), "_pending")) + " ON " + outbox +
          " (id) WHERE published_at IS NULL;"
          "CREATE INDEX IF NOT EXISTS " +
          QuoteIdent(DerivedName(BaseName(t.outbox), "_published")) + " ON " + outbox +
          " (published_at) WHERE published_at IS NOT NULL");
}

// Dead letters belong to their outbox (several outboxes may share one dead-letter table):
// the `outbox` column names it, as spelled in --table, and every query of the relay and of
// `courier dead-letters` filters on it. Rows written before the column existed carry no
// outbox; the first migrate of an outbox after the upgrade attributes them to it, which is
// right for the usual one outbox per dead-letter table (several outboxes that shared one
// before: see docs/operations.md). Rows a relay of an older version parks meanwhile carry no
// outbox either, and every later migrate attributes them the same way (AttributeDeadLetters
// in schema/migrate.cc).
Status AddOutboxToDeadLetters(PGconn* conn, const TableNames& t) {
  const std::string dead = QuoteIdent(t.dead_letter);
  return PgRun(conn, "ALTER TABLE " + dead +
                         " ADD COLUMN IF NOT EXISTS outbox text;"
                         "UPDATE " +
                         dead + " SET outbox = " + QuoteLiteral(t.outbox) +
                         " WHERE outbox IS NULL;"
                         "DROP INDEX IF EXISTS " +
                         SchemaPrefix(t.dead_letter) +
                         QuoteIdent(DerivedName(BaseName(t.dead_letter), "_aggregate")) +
                         ";"
                         "CREATE INDEX IF NOT EXISTS " +
                         QuoteIdent(DerivedName(BaseName(t.dead_letter), "_outbox_aggregate")) +
                         " ON " + dead + " (outbox, aggregate_type, aggregate_id, id)");
}

// 2: the dead-letter table, and the columns earlier versions' tables lack.
Status DeadLetters(PGconn* conn, const TableNames& t) {
  const std::string outbox = QuoteIdent(t.outbox);
  const std::string dead = QuoteIdent(t.dead_letter);
  // The dead-letter table copies the outbox's payload and headers types, so a row moves
  // between them unchanged even when the application created the outbox with bytea.
  // Debezium's outbox has no headers column: its events carry the header `id`, as jsonb.
  const bool debezium = t.outbox_format == TableNames::OutboxFormat::kDebezium;
  COURIER_ASSIGN_OR_RETURN(
      PgResult types,
      PgExec(conn,
             "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
             "WHERE a.attrelid = $1::regclass AND a.attname IN ('payload','headers') "
             "ORDER BY a.attname DESC",
             {outbox}));
  if (PQntuples(types.get()) != 2 && !(debezium && PQntuples(types.get()) == 1)) {
    return InvalidArgumentError("table " + outbox + " exists but lacks payload/headers columns");
  }
  const std::string payload_type = PQgetvalue(types.get(), 0, 0);
  const std::string headers_type = debezium ? "jsonb" : PQgetvalue(types.get(), 1, 0);
  COURIER_RETURN_IF_ERROR(PgRun(conn, "CREATE TABLE IF NOT EXISTS " + dead +
                                          " ("
                                          " id bigserial PRIMARY KEY,"
                                          " outbox text,"
                                          " outbox_id bigint,"
                                          " event_id uuid NOT NULL,"
                                          " aggregate_type text NOT NULL,"
                                          " aggregate_id text NOT NULL,"
                                          " event_type text NOT NULL,"
                                          " payload " +
                                          payload_type +
                                          ","
                                          " headers " +
                                          headers_type +
                                          ","
                                          " created_at timestamptz NOT NULL,"
                                          " error text NOT NULL,"
                                          " sink text NOT NULL,"
                                          " failed_at timestamptz NOT NULL DEFAULT now(),"
                                          " status text NOT NULL DEFAULT 'parked',"
                                          " attempts integer NOT NULL DEFAULT 1)"));
  // Table-less events (CDC logical messages) have no outbox row; tables made by earlier
  // versions required one.
  COURIER_RETURN_IF_ERROR(
      PgRun(conn, "ALTER TABLE " + dead + " ALTER COLUMN outbox_id DROP NOT NULL"));
  // Dead letters of versions without a status did not hold their aggregates back.
  COURIER_RETURN_IF_ERROR(PgRun(conn, "ALTER TABLE " + dead +
                                          " ADD COLUMN IF NOT EXISTS status text NOT NULL"
                                          " DEFAULT 'skipped',"
                                          " ADD COLUMN IF NOT EXISTS attempts integer NOT NULL"
                                          " DEFAULT 1;"
                                          "ALTER TABLE " +
                                          dead + " ALTER COLUMN status SET DEFAULT 'parked';"));
  return AddOutboxToDeadLetters(conn, t);
}

// 3: one lease per active relay (stores/leadership.h): who holds the outbox (or a shard of
// it), since when, and until when a standby must wait before taking over.
Status Leases(PGconn* conn, const TableNames& t) {
  return PgRun(conn, "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.Leases()) +
                         " ("
                         " name text PRIMARY KEY,"
                         " holder text NOT NULL,"
                         " epoch bigint NOT NULL DEFAULT 0,"
                         " acquired_at timestamptz NOT NULL DEFAULT now(),"
                         " renewed_at timestamptz NOT NULL DEFAULT now(),"
                         " expires_at timestamptz NOT NULL DEFAULT now(),"
                         " published bigint NOT NULL DEFAULT 0,"
                         " per_second float8 NOT NULL DEFAULT 0)");
}

// 4: the inbox, one row per (consumer, event) handled (event ids are text, so events of any
// producer can be deduplicated), and the events `courier consume` gave up on.
Status Inbox(PGconn* conn, const TableNames& t) {
  return PgRun(conn, "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.inbox) +
                         " ("
                         " consumer text NOT NULL,"
                         " event_id text NOT NULL,"
                         " processed_at timestamptz NOT NULL DEFAULT now(),"
                         " PRIMARY KEY (consumer, event_id));"
                         "CREATE INDEX IF NOT EXISTS " +
                         QuoteIdent(DerivedName(BaseName(t.inbox), "_processed")) + " ON " +
                         QuoteIdent(t.inbox) +
                         " (consumer, processed_at);"
                         "CREATE TABLE IF NOT EXISTS " +
                         QuoteIdent(t.InboxParked()) +
                         " ("
                         " id bigserial PRIMARY KEY,"
                         " consumer text NOT NULL,"
                         " event_id text NOT NULL,"
                         " event text NOT NULL,"
                         " error text NOT NULL,"
                         " attempts integer NOT NULL,"
                         " parked_at timestamptz NOT NULL DEFAULT now())");
}

// 5: CDC bookkeeping (sources/postgres_cdc.cc): the slots created for this outbox, and the
// rows that were in it when a slot was created, published before the stream. Created in
// both modes, so a relay can switch to CDC without another migration.
Status CdcBookkeeping(PGconn* conn, const TableNames& t) {
  return PgRun(conn,
               "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.CdcSlots()) +
                   " ("
                   " slot_name text PRIMARY KEY,"
                   " publication text NOT NULL,"
                   " consistent_lsn pg_lsn NOT NULL,"
                   " created_at timestamptz NOT NULL DEFAULT now(),"
                   " checkpoint_lsn pg_lsn);"
                   // The relay's own durable position (postgres_cdc.cc): the slot's is only
                   // written to disk at server checkpoints. Tables of earlier versions lack it.
                   "ALTER TABLE " +
                   QuoteIdent(t.CdcSlots()) +
                   " ADD COLUMN IF NOT EXISTS checkpoint_lsn pg_lsn;"
                   "CREATE TABLE IF NOT EXISTS " +
                   QuoteIdent(t.CdcBackfill()) +
                   " ("
                   " slot_name text NOT NULL,"
                   " outbox_id bigint NOT NULL,"
                   " PRIMARY KEY (slot_name, outbox_id))");
}

// 6: table capture (sources/cdc/capture_setup.h): the tables whose changes the outbox's
// stream carries, as `courier migrate --capture` (or the relay) added them.
Status CdcCapture(PGconn* conn, const TableNames& t) {
  return PgRun(conn, "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.CdcCapture()) +
                         " ("
                         " table_name text PRIMARY KEY,"
                         " relation oid NOT NULL,"
                         " spec text NOT NULL,"
                         " added_at timestamptz NOT NULL DEFAULT now())");
}

// 7: snapshots of captured tables (sources/cdc/snapshot.h): per table, how far its rows that
// predate capture were published (the last primary key done, as a JSON array of text).
Status CdcCaptureSnapshot(PGconn* conn, const TableNames& t) {
  return PgRun(conn, "ALTER TABLE " + QuoteIdent(t.CdcCapture()) +
                         " ADD COLUMN IF NOT EXISTS snapshot_state text NOT NULL DEFAULT"
                         " 'pending',"
                         " ADD COLUMN IF NOT EXISTS snapshot_last_key jsonb,"
                         " ADD COLUMN IF NOT EXISTS snapshot_rows bigint NOT NULL DEFAULT 0");
}

// 8: backfills (`courier backfill`): the condition of the rows to publish again, and a
// request number, so that a relay still saving an earlier run's progress does not overwrite
// a new request.
Status CdcCaptureBackfill(PGconn* conn, const TableNames& t) {
  return PgRun(conn, "ALTER TABLE " + QuoteIdent(t.CdcCapture()) +
                         " ADD COLUMN IF NOT EXISTS snapshot_where text,"
                         " ADD COLUMN IF NOT EXISTS snapshot_request bigint NOT NULL DEFAULT 0");
}

// Event store 1: the events (include/courier/event_store.h), their snapshots and the
// projections' checkpoints. position comes from an identity with CACHE 1, so positions
// increase in the order they are allocated (the gap-safe readers rely on it, horizon.h); the
// unique (stream_type, stream_id, version) is the expected-version check of plain-SQL
// writers (a stale one is SQLSTATE 23505). Constraints are named, so an append tells a version
// conflict from a duplicate event_id.
Status EventStore(PGconn* conn, const TableNames& t) {
  const std::string events = QuoteIdent(t.outbox);
  const std::string base = BaseName(t.outbox);
  return PgRun(conn, "CREATE TABLE IF NOT EXISTS " + events +
                         " ("
                         " position bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,"
                         " stream_type text NOT NULL,"
                         " stream_id text NOT NULL,"
                         " version bigint NOT NULL CHECK (version > 0),"
                         " event_id uuid NOT NULL DEFAULT gen_random_uuid(),"
                         " event_type text NOT NULL,"
                         " payload json NOT NULL,"
                         " headers json,"
                         " created_at timestamptz NOT NULL DEFAULT now(),"
                         " published_at timestamptz,"
                         " CONSTRAINT " +
                         QuoteIdent(DerivedName(base, "_event_id_key")) +
                         " UNIQUE (event_id),"
                         " CONSTRAINT " +
                         QuoteIdent(DerivedName(base, "_stream_version_key")) +
                         " UNIQUE (stream_type, stream_id, version));"
                         "CREATE INDEX IF NOT EXISTS " +
                         QuoteIdent(DerivedName(base, "_unpublished")) + " ON " + events +
                         " (position) WHERE published_at IS NULL;"
                         "CREATE TABLE IF NOT EXISTS " +
                         QuoteIdent(t.Snapshots()) +
                         " ("
                         " stream_type text NOT NULL,"
                         " stream_id text NOT NULL,"
                         " version bigint NOT NULL,"
                         " state text NOT NULL,"
                         " created_at timestamptz NOT NULL DEFAULT now(),"
                         " PRIMARY KEY (stream_type, stream_id, version));"
                         "CREATE TABLE IF NOT EXISTS " +
                         QuoteIdent(t.Projections()) +
                         " ("
                         " name text PRIMARY KEY,"
                         " position bigint NOT NULL DEFAULT 0,"
                         " updated_at timestamptz NOT NULL DEFAULT now())");
}

// Event store 5: headers NULL or a JSON object without "version" and "position" (the
// envelope's: a user's would be overwritten without a word). Added NOT VALID, so rows already
// there that break it never make the migration fail: readers deliver such an event without
// its headers (ToRecorded), and the migration says how many there are.
Status EventStoreHeadersCheck(PGconn* conn, const TableNames& t) {
  const std::string events = QuoteIdent(t.outbox);
  const std::string name = DerivedName(BaseName(t.outbox), "_headers_check");
  const std::string check =
      "headers IS NULL OR (json_typeof(headers) = 'object' AND NOT (headers::jsonb ?| "
      "array['version', 'position']))";
  COURIER_ASSIGN_OR_RETURN(PgResult exists,
                           PgExec(conn,
                                  "SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass AND "
                                  "conname = $2",
                                  {events, name}));
  if (PQntuples(exists.get()) == 0) {
    COURIER_RETURN_IF_ERROR(PgRun(conn, "ALTER TABLE " + events + " ADD CONSTRAINT " +
                                            QuoteIdent(name) + " CHECK (" + check + ") NOT VALID"));
  }
  COURIER_ASSIGN_OR_RETURN(
      PgResult bad, PgExec(conn, "SELECT count(*), coalesce(min(position), 0) FROM " + events +
                                     " WHERE NOT (" + check + ")"));
  const std::string count = PQgetvalue(bad.get(), 0, 0);
  if (count != "0") {
    log::Warn(
        "events written before the headers check break it; they are kept and read "
        "without their headers (the check is NOT VALID: it holds for new rows only); fix "
        "them, then: ALTER TABLE " +
            events + " VALIDATE CONSTRAINT " + QuoteIdent(name),
        {{"events", count}, {"first_position", PQgetvalue(bad.get(), 0, 1)}});
  }
  return Status::Ok();
}

}  // namespace

std::string BaseName(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

std::vector<Migration> PostgresMigrations(PGconn* conn, const TableNames& t) {
  auto bind = [conn, t](Status (*step)(PGconn*, const TableNames&)) {
    return [conn, t, step] { return step(conn, t); };
  };
  if (t.event_store()) {
    // An event store's own list, recorded in its own version table (<events>_schema). Its
    // relay parks and leases as an outbox's does, so those tables come too.
    return {
        {1, "event_store", {t.outbox, t.Snapshots(), t.Projections()}, bind(EventStore)},
        {2, "dead_letters", {t.dead_letter}, bind(DeadLetters)},
        {3, "leases", {t.Leases()}, bind(Leases)},
        // Publishing by CDC (relay --event-store --mode cdc): the outbox's bookkeeping, its
        // backfill's outbox_id holding positions.
        {4, "cdc_bookkeeping", {t.CdcSlots(), t.CdcBackfill()}, bind(CdcBookkeeping)},
        {5, "event_store_headers_check", {}, bind(EventStoreHeadersCheck)},
    };
  }
  return {
      {1, "outbox", {t.outbox}, bind(Outbox)},
      {2, "dead_letters", {t.dead_letter}, bind(DeadLetters)},
      {3, "leases", {t.Leases()}, bind(Leases)},
      {4, "inbox", {t.inbox, t.InboxParked()}, bind(Inbox)},
      {5, "cdc_bookkeeping", {t.CdcSlots(), t.CdcBackfill()}, bind(CdcBookkeeping)},
      {6, "cdc_capture", {t.CdcCapture()}, bind(CdcCapture)},
      {7, "cdc_capture_snapshot", {}, bind(CdcCaptureSnapshot)},
      {8, "cdc_capture_backfill", {}, bind(CdcCaptureBackfill)},
  };
}

}  // namespace courier
