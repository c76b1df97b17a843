// LabDb over core/postgres.h and core/sqlite.h (lab/lab_db.h).
#include "lab/lab_db.h"

#include <string_view>

#include "core/postgres.h"
#include "core/sqlite.h"
#include "sources/source.h"

namespace courier::lab {
namespace {

// A constraint the deferred check refused at COMMIT (SQLSTATE class 23).
bool IsConstraintState(std::string_view sqlstate) { return sqlstate.substr(0, 2) == "23"; }

class PostgresLabDb final : public LabDb {
 public:
  PostgresLabDb(std::string url, std::string schema)
      : url_(std::move(url)), schema_(std::move(schema)) {}

  Status Connect() {
    conn_.reset();
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url_));
    const std::string app = schema_.empty() ? "courier-lab" : "courier-lab-" + schema_;
    std::string setup = "SET application_name = " + QuoteLiteral(app) + ";";
    if (!schema_.empty()) {
      setup += "CREATE SCHEMA IF NOT EXISTS " + QuoteIdent(schema_) + ";SET search_path TO " +
               QuoteIdent(schema_) + ";";
    }
    COURIER_RETURN_IF_ERROR(PgRun(conn.get(), setup));
    conn_ = std::move(conn);
    return Status::Ok();
  }

  Status Exec(const std::string& sql) override {
    COURIER_RETURN_IF_ERROR(Ready());
    return Checked(PgRun(conn_.get(), sql));
  }

  Result<std::vector<std::optional<std::string>>> Column(const std::string& sql) override {
    COURIER_RETURN_IF_ERROR(Ready());
    auto res = PgExec(conn_.get(), sql);
    if (!res.ok()) return Checked(res.status());
    std::vector<std::optional<std::string>> out;
    PGresult* r = res->get();
    for (int i = 0; i < PQntuples(r); ++i) {
      if (PQgetisnull(r, i, 0)) {
        out.push_back(std::nullopt);
      } else {
        out.emplace_back(PQgetvalue(r, i, 0));
      }
    }
    return out;
  }

  Status Begin() override { return Exec("BEGIN"); }

  Status Commit() override {
    COURIER_RETURN_IF_ERROR(Ready());
    PgResult res(PQexec(conn_.get(), "COMMIT"));
    const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK) {
      // COMMIT of a transaction an earlier statement failed answers ROLLBACK, without error.
      if (std::string_view(PQcmdStatus(res.get())) == "ROLLBACK") {
        return AbortedError("the transaction had failed; COMMIT rolled it back");
      }
      return Status::Ok();
    }
    const std::string state = PgSqlState(res.get());
    Status err = PgError(conn_.get(), res.get());
    if (IsConstraintState(state)) return AbortedError("COMMIT refused: " + err.message());
    return Checked(err);
  }

  Status Rollback() override { return Exec("ROLLBACK"); }

  pg_conn* pg() override {
    if (!Ready().ok()) return nullptr;
    return conn_.get();
  }

 private:
  // Connected, reconnecting after a dropped connection.
  Status Ready() {
    if (conn_ != nullptr && PQstatus(conn_.get()) == CONNECTION_OK) return Status::Ok();
    Status st = Connect();
    if (!st.ok()) return RetriableError("cannot reconnect: " + st.message());
    return Status::Ok();
  }

  // A lost connection (the server terminated it) is retriable; the next call reconnects.
  Status Checked(Status st) {
    if (st.ok()) return st;
    if (conn_ != nullptr && PQstatus(conn_.get()) != CONNECTION_OK) {
      conn_.reset();
      return RetriableError("connection lost: " + st.message());
    }
    return st;
  }

  std::string url_;
  std::string schema_;
  PgConn conn_;
};

class SqliteLabDb final : public LabDb {
 public:
  explicit SqliteLabDb(SqliteDb db) : db_(std::move(db)) {}

  Status Exec(const std::string& sql) override { return SqliteExec(db_.get(), sql); }

  Result<std::vector<std::optional<std::string>>> Column(const std::string& sql) override {
    COURIER_ASSIGN_OR_RETURN(SqliteStmt stmt, SqlitePrepare(db_.get(), sql));
    std::vector<std::optional<std::string>> out;
    while (true) {
      const int rc = sqlite3_step(stmt.get());
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return SqliteError(db_.get(), rc, "query");
      const unsigned char* text = sqlite3_column_text(stmt.get(), 0);
      if (text == nullptr) {
        out.push_back(std::nullopt);
      } else {
        out.emplace_back(reinterpret_cast<const char*>(text));
      }
    }
    return out;
  }

  // IMMEDIATE: the write lock at BEGIN, so that a transaction never fails half-way on a lock
  // the relay (another process) holds; the busy timeout waits for it instead.
  Status Begin() override { return SqliteExec(db_.get(), "BEGIN IMMEDIATE"); }

  Status Commit() override {
    const int rc = sqlite3_exec(db_.get(), "COMMIT", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return Status::Ok();
    Status err = SqliteError(db_.get(), rc, "COMMIT");
    // A refused COMMIT leaves SQLite's transaction open: end it, as PostgreSQL does.
    if (!sqlite3_get_autocommit(db_.get())) {
      sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return AbortedError("COMMIT refused: " + err.message());
    return err;
  }

  Status Rollback() override {
    if (sqlite3_get_autocommit(db_.get())) return Status::Ok();  // nothing open
    return SqliteExec(db_.get(), "ROLLBACK");
  }

  sqlite3* sqlite() override { return db_.get(); }

 private:
  SqliteDb db_;
};

}  // namespace

Result<std::unique_ptr<LabDb>> LabDb::Open(const std::string& url, const std::string& schema) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(url));
  if (loc.kind == SourceLocation::Kind::kPostgres) {
    auto db = std::make_unique<PostgresLabDb>(url, schema);
    COURIER_RETURN_IF_ERROR(db->Connect());
    return std::unique_ptr<LabDb>(std::move(db));
  }
  COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(loc.target, true));
  // The deferred foreign key that makes a commit_fails command's COMMIT fail is checked only
  // with foreign keys on, which SQLite sets per connection.
  COURIER_RETURN_IF_ERROR(SqliteExec(db.get(), "PRAGMA foreign_keys = ON"));
  return std::unique_ptr<LabDb>(std::make_unique<SqliteLabDb>(std::move(db)));
}

}  // namespace courier::lab
