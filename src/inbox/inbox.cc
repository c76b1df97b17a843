#include "courier/inbox.h"

#include <cstdlib>

#include "core/postgres.h"
#include "core/sqlite.h"

namespace courier {
namespace {

constexpr const char* kNeedsTransaction =
    "Inbox::Claim needs the consumer's open transaction (run BEGIN first, COMMIT after), so "
    "the claim commits or rolls back with the handler's writes";

Status MissingTable(const Status& st, const std::string& table) {
  if (st.code() == StatusCode::kNotFound) {
    return NotFoundError("inbox table " + table +
                         " does not exist; create it with: courier migrate --source URL");
  }
  return st.WithContext("inbox");
}

}  // namespace

Inbox::Inbox(std::string consumer, std::string table)
    : consumer_(std::move(consumer)), table_(QuoteIdent(table)) {}

Result<bool> Inbox::Claim(pg_conn* conn, std::string_view event_id) const {
  if (PQtransactionStatus(conn) != PQTRANS_INTRANS)
    return FailedPreconditionError(kNeedsTransaction);
  auto res = PgExec(
      conn,
      "INSERT INTO " + table_ + " (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
      {consumer_, std::string(event_id)});
  if (!res.ok()) return MissingTable(res.status(), table_);
  return std::atoi(PQcmdTuples(res->get())) == 1;
}

Result<bool> Inbox::Claim(sqlite3* db, std::string_view event_id) const {
  if (sqlite3_get_autocommit(db) != 0) return FailedPreconditionError(kNeedsTransaction);
  auto stmt = SqlitePrepare(
      db, "INSERT OR IGNORE INTO " + table_ + " (consumer, event_id) VALUES (?1, ?2)");
  if (!stmt.ok()) return MissingTable(stmt.status(), table_);
  sqlite3_stmt* s = stmt->get();
  sqlite3_bind_text(s, 1, consumer_.data(), static_cast<int>(consumer_.size()), SQLITE_STATIC);
  sqlite3_bind_text(s, 2, event_id.data(), static_cast<int>(event_id.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "inbox claim");
  return sqlite3_changes(db) == 1;
}

Result<bool> Inbox::Process(pg_conn* conn, std::string_view event_id,
                            const std::function<Status(pg_conn*)>& handler) const {
  COURIER_RETURN_IF_ERROR(PgRun(conn, "BEGIN"));
  auto fresh = Claim(conn, event_id);
  Status st = fresh.status();
  if (st.ok() && *fresh) st = handler(conn);
  if (st.ok()) st = PgRun(conn, "COMMIT");
  if (!st.ok()) {
    (void)PgRun(conn, "ROLLBACK");
    return st;
  }
  return *fresh;
}

Result<bool> Inbox::Process(sqlite3* db, std::string_view event_id,
                            const std::function<Status(sqlite3*)>& handler) const {
  // IMMEDIATE: take the write lock first, so that a racing consumer waits instead of failing
  // to upgrade its read lock halfway through.
  COURIER_RETURN_IF_ERROR(SqliteExec(db, "BEGIN IMMEDIATE"));
  auto fresh = Claim(db, event_id);
  Status st = fresh.status();
  if (st.ok() && *fresh) st = handler(db);
  if (st.ok()) st = SqliteExec(db, "COMMIT");
  if (!st.ok()) {
    (void)SqliteExec(db, "ROLLBACK");
    return st;
  }
  return *fresh;
}

Result<int64_t> Inbox::Prune(pg_conn* conn, std::chrono::seconds age, int batch) const {
  int64_t total = 0;
  while (true) {
    // Each batch is its own short transaction; rows being claimed right now are skipped.
    auto res = PgExec(conn,
                      "DELETE FROM " + table_ + " WHERE ctid IN (SELECT ctid FROM " + table_ +
                          " WHERE consumer = $1 AND processed_at < now() - make_interval(secs => "
                          "$2::float8) LIMIT $3 FOR UPDATE SKIP LOCKED)",
                      {consumer_, std::to_string(age.count()), std::to_string(batch)});
    if (!res.ok()) return MissingTable(res.status(), table_);
    const int64_t n = std::atoll(PQcmdTuples(res->get()));
    total += n;
    if (n < batch) return total;
  }
}

Result<int64_t> Inbox::Prune(sqlite3* db, std::chrono::seconds age, int batch) const {
  int64_t total = 0;
  auto stmt = SqlitePrepare(
      db, "DELETE FROM " + table_ + " WHERE rowid IN (SELECT rowid FROM " + table_ +
              " WHERE consumer = ?1 AND processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2)"
              " LIMIT ?3)");
  if (!stmt.ok()) return MissingTable(stmt.status(), table_);
  const std::string modifier = "-" + std::to_string(age.count()) + " seconds";
  while (true) {
    sqlite3_stmt* s = stmt->get();
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, consumer_.data(), static_cast<int>(consumer_.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 2, modifier.data(), static_cast<int>(modifier.size()), SQLITE_STATIC);
    sqlite3_bind_int(s, 3, batch);
    const int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return SqliteError(db, rc, "inbox prune");
    const int n = sqlite3_changes(db);
    total += n;
    if (n < batch) return total;
  }
}

}  // namespace courier
