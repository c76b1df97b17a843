// `courier migrate`: applies the numbered migrations of schema/migrations.h that the outbox's
// version table does not record yet, each in its own transaction together with its record.
#include "schema/migrate.h"

#include <memory>

#include "core/postgres.h"
#include "core/sqlite.h"
#include "schema/migrations.h"
#include "schema/table_shape.h"
#include "sources/cdc/capture_setup.h"
#include "sources/cdc/slot.h"
#include "sources/source.h"

namespace courier {
namespace {

// What the runner needs of a database: transactions that hold the lock every `courier
// migrate` of that database takes, and a look at its catalog.
class SchemaDb {
 public:
  virtual ~SchemaDb() = default;
  virtual Status Begin() = 0;
  virtual Status Commit() = 0;
  virtual void Rollback() = 0;
  virtual Status Run(const std::string& sql) = 0;
  virtual Result<int64_t> QueryInt(const std::string& sql) = 0;
  virtual Result<bool> TableExists(const std::string& name) = 0;
  virtual Result<bool> ColumnExists(const std::string& table, const std::string& column) = 0;
  // Refuses, naming the grant, when the role may not create tables beside `table`.
  virtual Status CheckMayCreate(const std::string& table) = 0;
  virtual std::string VersionTableSql(const std::string& table) = 0;
};

class PostgresSchemaDb final : public SchemaDb {
 public:
  explicit PostgresSchemaDb(PGconn* conn) : conn_(conn) {}
  // Concurrent migrations (of any outbox of the database) serialise on one lock, taken in
  // every transaction, instead of failing on each other or applying a step twice.
  Status Begin() override {
    return PgRun(conn_, "BEGIN; SELECT pg_advisory_xact_lock(hashtext('courier migrate'))");
  }
  Status Commit() override { return PgRun(conn_, "COMMIT"); }
  void Rollback() override { (void)PgRun(conn_, "ROLLBACK"); }
  Status Run(const std::string& sql) override { return PgRun(conn_, sql); }
  Result<int64_t> QueryInt(const std::string& sql) override {
    COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_, sql));
    return std::stoll(PQgetvalue(res.get(), 0, 0));
  }
  Result<bool> TableExists(const std::string& name) override {
    COURIER_ASSIGN_OR_RETURN(
        PgResult res, PgExec(conn_, "SELECT to_regclass($1) IS NOT NULL", {QuoteIdent(name)}));
    return std::string(PQgetvalue(res.get(), 0, 0)) == "t";
  }
  Result<bool> ColumnExists(const std::string& table, const std::string& column) override {
    COURIER_ASSIGN_OR_RETURN(PgResult res,
                             PgExec(conn_,
                                    "SELECT count(*) FROM pg_attribute WHERE attrelid ="
                                    " to_regclass($1) AND attname = $2 AND NOT attisdropped",
                                    {QuoteIdent(table), column}));
    return std::string(PQgetvalue(res.get(), 0, 0)) != "0";
  }
  Status CheckMayCreate(const std::string& table) override {
    const size_t dot = table.rfind('.');
    const PgParams schema = {dot == std::string::npos ? std::nullopt
                                                      : std::optional(table.substr(0, dot))};
    COURIER_ASSIGN_OR_RETURN(
        PgResult res, PgExec(conn_,
                             "SELECT s, current_user, coalesce(has_schema_privilege(s, 'CREATE'),"
                             " true) FROM (SELECT coalesce($1, current_schema()) AS s) x",
                             schema));
    if (std::string(PQgetvalue(res.get(), 0, 2)) == "t") return Status::Ok();
    const std::string nsp = QuoteIdent(PQgetvalue(res.get(), 0, 0));
    const std::string role = QuoteIdent(PQgetvalue(res.get(), 0, 1));
    return InvalidArgumentError("role " + role + " may not create tables in schema " + nsp +
                                ": run courier migrate as the schema's owner, or GRANT CREATE ON"
                                " SCHEMA " +
                                nsp + " TO " + role);
  }
  std::string VersionTableSql(const std::string& table) override {
    return "CREATE TABLE IF NOT EXISTS " + QuoteIdent(table) +
           " (version integer PRIMARY KEY, name text NOT NULL,"
           " applied_at timestamptz NOT NULL DEFAULT now(), courier_version text NOT NULL)";
  }

 private:
  PGconn* conn_;
};

class SqliteSchemaDb final : public SchemaDb {
 public:
  explicit SqliteSchemaDb(sqlite3* db) : db_(db) {}
  // Takes the database's write lock at once: concurrent migrations wait (busy timeout).
  Status Begin() override { return SqliteExec(db_, "BEGIN IMMEDIATE"); }
  Status Commit() override { return SqliteExec(db_, "COMMIT"); }
  void Rollback() override { (void)SqliteExec(db_, "ROLLBACK"); }
  Status Run(const std::string& sql) override { return SqliteExec(db_, sql); }
  Result<int64_t> QueryInt(const std::string& sql) override {
    COURIER_ASSIGN_OR_RETURN(SqliteStmt stmt, SqlitePrepare(db_, sql));
    const int rc = sqlite3_step(stmt.get());
    if (rc != SQLITE_ROW) return SqliteError(db_, rc, "read the schema");
    return sqlite3_column_int64(stmt.get(), 0);
  }
  Result<bool> TableExists(const std::string& name) override {
    COURIER_ASSIGN_OR_RETURN(int64_t n, QueryInt("SELECT count(*) FROM sqlite_master WHERE type ="
                                                 " 'table' AND name = " +
                                                 QuoteLiteral(name)));
    return n > 0;
  }
  Result<bool> ColumnExists(const std::string& table, const std::string& column) override {
    COURIER_ASSIGN_OR_RETURN(int64_t n, QueryInt("SELECT count(*) FROM pragma_table_info(" +
                                                 QuoteLiteral(BaseName(table)) +
                                                 ") WHERE name = " + QuoteLiteral(column)));
    return n > 0;
  }
  // The file's permissions decided already, when it was opened to be created or written.
  Status CheckMayCreate(const std::string&) override { return Status::Ok(); }
  std::string VersionTableSql(const std::string& table) override {
    return "CREATE TABLE IF NOT EXISTS " + QuoteIdent(table) +
           " (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
           " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
           " courier_version TEXT NOT NULL)";
  }

 private:
  sqlite3* db_;
};

// Runs `body` in one transaction of `db`: committed when it succeeds, rolled back otherwise.
template <typename Body>
Status InTransaction(SchemaDb& db, Body body) {
  COURIER_RETURN_IF_ERROR(db.Begin());
  Status st = body();
  if (!st.ok()) {
    db.Rollback();
    return st;
  }
  return db.Commit();
}

// The highest version recorded in `versions` (0: none, or no version table yet).
Result<int> RecordedVersion(SchemaDb& db, const std::string& versions) {
  COURIER_ASSIGN_OR_RETURN(bool exists, db.TableExists(versions));
  if (!exists) return 0;
  COURIER_ASSIGN_OR_RETURN(
      int64_t v, db.QueryInt("SELECT coalesce(max(version), 0) FROM " + QuoteIdent(versions)));
  return static_cast<int>(v);
}

// A database that a newer courier migrated may hold what this one cannot read or would undo.
Status RefuseNewer(const TableNames& t, int recorded, int known) {
  if (recorded <= known) return Status::Ok();
  return InvalidArgumentError("table " + QuoteIdent(t.outbox) + " is at schema version " +
                              std::to_string(recorded) + " (recorded in " +
                              QuoteIdent(SchemaVersionsTable(t)) + "), this courier knows up to " +
                              std::to_string(known) + ": upgrade courier");
}

// Whether `m` is to be applied: it is not recorded, or a table it creates is missing.
Result<bool> Pending(SchemaDb& db, const std::string& versions, const Migration& m) {
  COURIER_ASSIGN_OR_RETURN(int64_t recorded,
                           db.QueryInt("SELECT count(*) FROM " + QuoteIdent(versions) +
                                       " WHERE version = " + std::to_string(m.version)));
  if (recorded == 0) return true;
  for (const std::string& table : m.tables) {
    COURIER_ASSIGN_OR_RETURN(bool exists, db.TableExists(table));
    if (!exists) return true;
  }
  return false;
}

Status Apply(SchemaDb& db, const TableNames& t, const std::vector<Migration>& migrations,
             MigrateReport* report) {
  const std::string versions = SchemaVersionsTable(t);
  const int known = migrations.back().version;
  // Under the lock: the version table, what it records, and which tables exist before.
  COURIER_RETURN_IF_ERROR(InTransaction(db, [&]() -> Status {
    COURIER_ASSIGN_OR_RETURN(bool has_versions, db.TableExists(versions));
    COURIER_ASSIGN_OR_RETURN(report->recorded_before, RecordedVersion(db, versions));
    COURIER_RETURN_IF_ERROR(RefuseNewer(t, report->recorded_before, known));
    bool pending = !has_versions;
    for (const Migration& m : migrations) {
      for (const std::string& table : m.tables) {
        COURIER_ASSIGN_OR_RETURN(bool exists, db.TableExists(table));
        (exists ? report->existing : report->created).push_back(table);
      }
      if (!pending && has_versions) {
        COURIER_ASSIGN_OR_RETURN(pending, Pending(db, versions, m));
      }
    }
    if (pending) COURIER_RETURN_IF_ERROR(db.CheckMayCreate(t.outbox));
    return has_versions ? Status::Ok() : db.Run(db.VersionTableSql(versions));
  }));
  for (const Migration& m : migrations) {
    bool applied = false;
    // Decided again under the lock: another migrate may have applied it meanwhile.
    Status st = InTransaction(db, [&]() -> Status {
      COURIER_ASSIGN_OR_RETURN(bool pending, Pending(db, versions, m));
      if (!pending) return Status::Ok();
      COURIER_RETURN_IF_ERROR(m.apply());
      applied = true;
      return db.Run("INSERT INTO " + QuoteIdent(versions) +
                    " (version, name, courier_version) VALUES (" + std::to_string(m.version) +
                    ", " + QuoteLiteral(m.name) + ", " + QuoteLiteral(COURIER_VERSION) +
                    ") ON CONFLICT (version) DO NOTHING");
    });
    COURIER_RETURN_IF_ERROR(
        st.WithContext("migration " + std::to_string(m.version) + " (" + m.name + ")"));
    if (applied) report->applied.push_back({m.version, m.name});
  }
  // Dead letters parked without an outbox by a relay of a version before the column (while
  // others were upgraded) become this outbox's, on every run (docs/operations.md). No relay of
  // such a version published an event store.
  COURIER_RETURN_IF_ERROR(InTransaction(db, [&]() -> Status {
    if (t.event_store()) return Status::Ok();
    COURIER_ASSIGN_OR_RETURN(bool has_column, db.ColumnExists(t.dead_letter, "outbox"));
    if (!has_column) return Status::Ok();
    return db.Run("UPDATE " + QuoteIdent(t.dead_letter) +
                  " SET outbox = " + QuoteLiteral(t.outbox) + " WHERE outbox IS NULL");
  }));
  COURIER_ASSIGN_OR_RETURN(report->version, RecordedVersion(db, versions));
  return Status::Ok();
}

}  // namespace

std::string SchemaVersionsTable(const TableNames& tables) {
  return DerivedName(tables.outbox, "_schema");
}

Status Migrate(const std::string& source_url, const TableNames& tables, const CdcOptions& cdc,
               const StopSignal* stop, MigrateReport* report) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(source_url));
  MigrateReport local;
  MigrateReport* out = report != nullptr ? report : &local;
  *out = MigrateReport{};
  if (loc.kind == SourceLocation::Kind::kPostgres) {
    COURIER_RETURN_IF_ERROR(CheckTableNames(tables));
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(loc.target));
    PostgresSchemaDb db(conn.get());
    const std::vector<Migration> migrations = PostgresMigrations(conn.get(), tables);
    // Before anything is read the way this version reads it: a newer schema is refused.
    COURIER_ASSIGN_OR_RETURN(int recorded, RecordedVersion(db, SchemaVersionsTable(tables)));
    COURIER_RETURN_IF_ERROR(RefuseNewer(tables, recorded, migrations.back().version));
    // An existing table the relay cannot use is named before anything changes.
    COURIER_RETURN_IF_ERROR(CheckTableShapes(conn.get(), tables));
    // So is a table that cannot be captured.
    COURIER_ASSIGN_OR_RETURN(std::vector<cdc::CaptureSpec> capture,
                             cdc::ParseCaptureList(cdc.capture));
    if (!capture.empty()) COURIER_RETURN_IF_ERROR(cdc::CheckCapture(conn.get(), tables, capture));
    COURIER_RETURN_IF_ERROR(
        Apply(db, tables, migrations, out).WithContext("migrate " + QuoteIdent(tables.outbox)));
    const StopSignal never;
    if (!cdc.enabled && capture.empty()) return Status::Ok();
    COURIER_RETURN_IF_ERROR(PrepareCdc(conn.get(), loc.target, tables, cdc, stop ? *stop : never));
    if (capture.empty()) return Status::Ok();
    COURIER_ASSIGN_OR_RETURN(cdc::CdcNames names, cdc::ResolveNames(conn.get(), tables, cdc));
    COURIER_ASSIGN_OR_RETURN(std::vector<cdc::CapturedTable> captured,
                             cdc::PrepareCapture(conn.get(), tables, names.publication, capture,
                                                 cdc::CaptureSetup::kMigrate));
    for (const cdc::CapturedTable& t : captured) out->captured.push_back(t.qualified);
    out->publication = names.publication;
    return Status::Ok();
  }
  if (cdc.enabled || !cdc.capture.empty()) {
    return InvalidArgumentError(std::string(cdc.enabled ? "--mode cdc" : "--capture") +
                                " needs PostgreSQL; a SQLite outbox is polled");
  }
  if (tables.outbox_format == TableNames::OutboxFormat::kDebezium) {
    return InvalidArgumentError(
        "--outbox-format debezium needs PostgreSQL (it is read from the write-ahead log)");
  }
  COURIER_ASSIGN_OR_RETURN(SqliteDb sqlite, SqliteOpen(loc.target, /*create=*/true));
  SqliteSchemaDb db(sqlite.get());
  const std::vector<Migration> migrations = SqliteMigrations(sqlite.get(), tables);
  COURIER_ASSIGN_OR_RETURN(int recorded, RecordedVersion(db, SchemaVersionsTable(tables)));
  COURIER_RETURN_IF_ERROR(RefuseNewer(tables, recorded, migrations.back().version));
  COURIER_RETURN_IF_ERROR(CheckTableShapes(sqlite.get(), tables));
  return Apply(db, tables, migrations, out).WithContext("migrate " + QuoteIdent(tables.outbox));
}

}  // namespace courier
