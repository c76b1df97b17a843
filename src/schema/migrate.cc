// `courier migrate`: the table contracts of DESIGN §3, created idempotently.
#include "schema/migrate.h"

#include "core/postgres.h"
#include "core/sqlite.h"
#include "schema/table_shape.h"
#include "sources/source.h"

namespace courier {
namespace {

// The last component of a possibly schema-qualified name, for naming indexes.
std::string BaseName(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

// "schema." of a qualified name, quoted, or "" (functions go beside the table).
std::string SchemaPrefix(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? "" : QuoteIdent(name.substr(0, dot)) + ".";
}

// Dead letters belong to their outbox (several outboxes may share one dead-letter table):
// the `outbox` column names it, as spelled in --table, and every query of the relay and of
// `courier dead-letters` filters on it. Rows written before the column existed carry no
// outbox; the first migrate of an outbox after the upgrade attributes them to it, which is
// right for the usual one outbox per dead-letter table (several outboxes that shared one
// before: see docs/operations.md). Rows a relay of an older version parks meanwhile carry no
// outbox either, and the next migrate attributes them the same way.
Status AttributeDeadLetters(PGconn* conn, const TableNames& t) {
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

Status MigratePostgres(PGconn* conn, const TableNames& t) {
  const std::string outbox = QuoteIdent(t.outbox);
  const std::string dead = QuoteIdent(t.dead_letter);
  const std::string uuid_fn = SchemaPrefix(t.outbox) + "courier_uuid_v7";
  const std::string sql =
      // Concurrent migrations serialise on one lock instead of failing on each other.
      "SELECT pg_advisory_xact_lock(hashtext('courier migrate'));"
      // UUIDv7: 48-bit Unix milliseconds, then random bits, version and variant set.
      "CREATE OR REPLACE FUNCTION " +
      uuid_fn +
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
      " (published_at) WHERE published_at IS NOT NULL;"
      // CDC bookkeeping (sources/postgres_cdc.cc): the slots created for this outbox, and
      // the rows that were in it when a slot was created, published before the stream.
      "CREATE TABLE IF NOT EXISTS " +
      QuoteIdent(t.CdcSlots()) +
      " ("
      " slot_name text PRIMARY KEY,"
      " publication text NOT NULL,"
      " consistent_lsn pg_lsn NOT NULL,"
      " created_at timestamptz NOT NULL DEFAULT now(),"
      " checkpoint_lsn pg_lsn);"
      // The relay's own durable position (postgres_cdc.cc): the slot's is only written to disk
      // at server checkpoints. Tables of earlier versions lack it.
      "ALTER TABLE " +
      QuoteIdent(t.CdcSlots()) +
      " ADD COLUMN IF NOT EXISTS checkpoint_lsn pg_lsn;"
      "CREATE TABLE IF NOT EXISTS " +
      QuoteIdent(t.CdcBackfill()) +
      " ("
      " slot_name text NOT NULL,"
      " outbox_id bigint NOT NULL,"
      " PRIMARY KEY (slot_name, outbox_id));"
      // One lease per active relay (stores/leadership.h): who holds the outbox (or a shard of
      // it), since when, and until when a standby must wait before taking over.
      "CREATE TABLE IF NOT EXISTS " +
      QuoteIdent(t.Leases()) +
      " ("
      " name text PRIMARY KEY,"
      " holder text NOT NULL,"
      " epoch bigint NOT NULL DEFAULT 0,"
      " acquired_at timestamptz NOT NULL DEFAULT now(),"
      " renewed_at timestamptz NOT NULL DEFAULT now(),"
      " expires_at timestamptz NOT NULL DEFAULT now(),"
      " published bigint NOT NULL DEFAULT 0,"
      " per_second float8 NOT NULL DEFAULT 0);"
      // The inbox: one row per (consumer, event) handled; event ids are text, so events of
      // any producer can be deduplicated.
      "CREATE TABLE IF NOT EXISTS " +
      QuoteIdent(t.inbox) +
      " ("
      " consumer text NOT NULL,"
      " event_id text NOT NULL,"
      " processed_at timestamptz NOT NULL DEFAULT now(),"
      " PRIMARY KEY (consumer, event_id));"
      "CREATE INDEX IF NOT EXISTS " +
      QuoteIdent(DerivedName(BaseName(t.inbox), "_processed")) + " ON " + QuoteIdent(t.inbox) +
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
      " parked_at timestamptz NOT NULL DEFAULT now());";
  COURIER_RETURN_IF_ERROR(PgRun(conn, "BEGIN"));
  Status st = PgRun(conn, sql);
  if (st.ok()) {
    // The dead-letter table copies the outbox's payload and headers types, so a row moves
    // between them unchanged even when the application created the outbox with bytea.
    auto types = PgExec(conn,
                        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                        "WHERE a.attrelid = $1::regclass AND a.attname IN ('payload','headers') "
                        "ORDER BY a.attname DESC",
                        {outbox});
    st = types.status();
    if (st.ok() && PQntuples(types->get()) == 2) {
      const std::string payload_type = PQgetvalue(types->get(), 0, 0);
      const std::string headers_type = PQgetvalue(types->get(), 1, 0);
      st = PgExec(conn, "CREATE TABLE IF NOT EXISTS " + dead +
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
                            " attempts integer NOT NULL DEFAULT 1)")
               .status();
      // Table-less events (CDC logical messages) have no outbox row; tables made by
      // earlier versions required one.
      if (st.ok()) {
        st = PgRun(conn, "ALTER TABLE " + dead + " ALTER COLUMN outbox_id DROP NOT NULL");
      }
      // Dead letters of versions without a status did not hold their aggregates back.
      if (st.ok()) {
        st = PgRun(conn, "ALTER TABLE " + dead +
                             " ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'skipped',"
                             " ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 1;"
                             "ALTER TABLE " +
                             dead + " ALTER COLUMN status SET DEFAULT 'parked';");
      }
      if (st.ok()) st = AttributeDeadLetters(conn, t);
    } else if (st.ok()) {
      st = InvalidArgumentError("table " + outbox + " exists but lacks payload/headers columns");
    }
  }
  if (!st.ok()) {
    (void)PgRun(conn, "ROLLBACK");
    return st.WithContext("migrate " + outbox);
  }
  return PgRun(conn, "COMMIT");
}

Status MigrateSqlite(sqlite3* db, const TableNames& t) {
  const std::string outbox = QuoteIdent(t.outbox);
  const std::string dead = QuoteIdent(t.dead_letter);
  // A version-4 UUID from SQLite's own randomness, for rows inserted by plain SQL.
  const std::string uuid_v4 =
      "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||"
      " substr(lower(hex(randomblob(2))), 2) || '-' ||"
      " substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) ||"
      " '-' || lower(hex(randomblob(6))))";
  const std::string now_text = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))";
  const std::string sql =
      "BEGIN IMMEDIATE;"
      // AUTOINCREMENT: ids are never reused, so a dead letter's outbox_id stays unambiguous.
      "CREATE TABLE IF NOT EXISTS " +
      outbox +
      " ("
      " id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " event_id TEXT NOT NULL DEFAULT " +
      uuid_v4 +
      ","
      " aggregate_type TEXT NOT NULL,"
      " aggregate_id TEXT NOT NULL,"
      " event_type TEXT NOT NULL,"
      " payload BLOB,"
      " headers TEXT,"
      " created_at TEXT NOT NULL DEFAULT " +
      now_text +
      ","
      " published_at TEXT);"
      "CREATE INDEX IF NOT EXISTS " +
      QuoteIdent(BaseName(t.outbox) + "_pending") + " ON " + QuoteIdent(BaseName(t.outbox)) +
      " (id) WHERE published_at IS NULL;"
      "CREATE TABLE IF NOT EXISTS " +
      dead +
      " ("
      " id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " outbox TEXT,"
      " outbox_id INTEGER NOT NULL,"
      " event_id TEXT NOT NULL,"
      " aggregate_type TEXT NOT NULL,"
      " aggregate_id TEXT NOT NULL,"
      " event_type TEXT NOT NULL,"
      " payload BLOB,"
      " headers TEXT,"
      " created_at TEXT NOT NULL,"
      " error TEXT NOT NULL,"
      " sink TEXT NOT NULL,"
      " failed_at TEXT NOT NULL DEFAULT " +
      now_text +
      ","
      " status TEXT NOT NULL DEFAULT 'parked',"
      " attempts INTEGER NOT NULL DEFAULT 1);"
      "CREATE TABLE IF NOT EXISTS " +
      QuoteIdent(t.inbox) +
      " ("
      " consumer TEXT NOT NULL,"
      " event_id TEXT NOT NULL,"
      " processed_at TEXT NOT NULL DEFAULT " +
      now_text +
      ","
      " PRIMARY KEY (consumer, event_id));"
      "CREATE INDEX IF NOT EXISTS " +
      QuoteIdent(BaseName(t.inbox) + "_processed") + " ON " + QuoteIdent(BaseName(t.inbox)) +
      " (consumer, processed_at);"
      "CREATE TABLE IF NOT EXISTS " +
      QuoteIdent(t.InboxParked()) +
      " ("
      " id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " consumer TEXT NOT NULL,"
      " event_id TEXT NOT NULL,"
      " event TEXT NOT NULL,"
      " error TEXT NOT NULL,"
      " attempts INTEGER NOT NULL,"
      " parked_at TEXT NOT NULL DEFAULT " +
      now_text + ");";
  Status st = SqliteExec(db, sql);
  // Columns added since the first version. Dead letters of versions without a status did not
  // hold their aggregates back; for the outbox see AttributeDeadLetters.
  for (const char* column : {"status TEXT NOT NULL DEFAULT 'skipped'",
                             "attempts INTEGER NOT NULL DEFAULT 1", "outbox TEXT"}) {
    if (!st.ok()) break;
    const std::string name = std::string(column).substr(0, std::string(column).find(' '));
    auto has = SqlitePrepare(db, "SELECT 1 FROM pragma_table_info(" +
                                     QuoteLiteral(BaseName(t.dead_letter)) + ") WHERE name = '" +
                                     name + "'");
    st = has.status();
    if (st.ok() && sqlite3_step(has->get()) != SQLITE_ROW) {
      st = SqliteExec(db, "ALTER TABLE " + dead + " ADD COLUMN " + column);
    }
  }
  // As on PostgreSQL (AttributeDeadLetters): rows without an outbox become this one's.
  if (st.ok()) {
    st = SqliteExec(db, "UPDATE " + dead + " SET outbox = " + QuoteLiteral(t.outbox) +
                            " WHERE outbox IS NULL;"
                            "DROP INDEX IF EXISTS " +
                            QuoteIdent(DerivedName(BaseName(t.dead_letter), "_aggregate")) +
                            ";"
                            "CREATE INDEX IF NOT EXISTS " +
                            QuoteIdent(DerivedName(BaseName(t.dead_letter), "_outbox_aggregate")) +
                            " ON " + QuoteIdent(BaseName(t.dead_letter)) +
                            " (outbox, aggregate_type, aggregate_id, id)");
  }
  if (st.ok()) st = SqliteExec(db, "COMMIT");
  if (!st.ok()) {
    (void)SqliteExec(db, "ROLLBACK");
    return st.WithContext("migrate " + outbox);
  }
  return Status::Ok();
}

// Every table Migrate{Postgres,Sqlite} creates, in the order it creates them.
std::vector<std::string> TablesOf(const TableNames& t, bool postgres) {
  if (!postgres) return {t.outbox, t.dead_letter, t.inbox, t.InboxParked()};
  return {t.outbox,        t.dead_letter, t.Leases(),     t.inbox,
          t.InboxParked(), t.CdcSlots(),  t.CdcBackfill()};
}

// Which of `names` exist now, by `exists(name)`.
template <typename Exists>
Result<std::vector<bool>> Existing(const std::vector<std::string>& names, Exists exists) {
  std::vector<bool> out;
  for (const std::string& name : names) {
    COURIER_ASSIGN_OR_RETURN(bool e, exists(name));
    out.push_back(e);
  }
  return out;
}

void Report(const std::vector<std::string>& names, const std::vector<bool>& before,
            MigrateReport* report) {
  for (size_t i = 0; i < names.size(); ++i) {
    (before[i] ? report->existing : report->created).push_back(names[i]);
  }
}

}  // namespace

Status Migrate(const std::string& source_url, const TableNames& tables, const CdcOptions& cdc,
               const StopSignal* stop, MigrateReport* report) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(source_url));
  const bool postgres = loc.kind == SourceLocation::Kind::kPostgres;
  const std::vector<std::string> names = TablesOf(tables, postgres);
  if (postgres) {
    COURIER_RETURN_IF_ERROR(CheckTableNames(tables));
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(loc.target));
    // An existing table the relay cannot use is named before anything changes.
    COURIER_RETURN_IF_ERROR(CheckTableShapes(conn.get(), tables));
    std::vector<bool> before;
    if (report != nullptr) {
      COURIER_ASSIGN_OR_RETURN(
          before, Existing(names, [&](const std::string& name) -> Result<bool> {
            COURIER_ASSIGN_OR_RETURN(
                PgResult res,
                PgExec(conn.get(), "SELECT to_regclass($1) IS NOT NULL", {QuoteIdent(name)}));
            return std::string(PQgetvalue(res.get(), 0, 0)) == "t";
          }));
    }
    COURIER_RETURN_IF_ERROR(MigratePostgres(conn.get(), tables));
    if (report != nullptr) Report(names, before, report);
    const StopSignal never;
    if (cdc.enabled) return PrepareCdc(conn.get(), loc.target, tables, cdc, stop ? *stop : never);
    return Status::Ok();
  }
  if (cdc.enabled) {
    return InvalidArgumentError("--mode cdc needs PostgreSQL; a SQLite outbox is polled");
  }
  COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(loc.target, /*create=*/true));
  COURIER_RETURN_IF_ERROR(CheckTableShapes(db.get(), tables));
  std::vector<bool> before;
  if (report != nullptr) {
    COURIER_ASSIGN_OR_RETURN(before, Existing(names, [&](const std::string& name) -> Result<bool> {
                               COURIER_ASSIGN_OR_RETURN(
                                   SqliteStmt stmt,
                                   SqlitePrepare(db.get(),
                                                 "SELECT 1 FROM sqlite_master WHERE type ="
                                                 " 'table' AND name = " +
                                                     QuoteLiteral(name)));
                               const int rc = sqlite3_step(stmt.get());
                               if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                                 return SqliteError(db.get(), rc, "read the schema");
                               }
                               return rc == SQLITE_ROW;
                             }));
  }
  COURIER_RETURN_IF_ERROR(MigrateSqlite(db.get(), tables));
  if (report != nullptr) Report(names, before, report);
  return Status::Ok();
}

}  // namespace courier
