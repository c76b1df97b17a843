#include "core/encoding.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/uuid.h"
#include "courier/outbox.h"

namespace courier {

OutboxWriter::OutboxWriter(std::string table) : table_(std::move(table)) {
  const std::string cols =
      " (event_id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES ";
  insert_pg_ = "INSERT INTO " + QuoteIdent(table_) + cols + "($1::uuid, $2, $3, $4, $5, $6)";
  insert_sqlite_ = "INSERT INTO " + QuoteIdent(table_) + cols + "(?1, ?2, ?3, ?4, ?5, ?6)";
}

Result<std::string> OutboxWriter::Append(pg_conn* conn, const OutboxEvent& event) const {
  if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
    return FailedPreconditionError(
        "OutboxWriter::Append needs the caller's open transaction (run BEGIN first, COMMIT "
        "after), so the event commits or rolls back with the business rows");
  }
  std::string event_id = event.event_id.empty() ? NewUuidV7() : event.event_id;
  PgParams params = {event_id,         event.aggregate_type, event.aggregate_id,
                     event.event_type, event.payload,        std::nullopt};
  if (!event.headers.empty()) params[5] = HeadersToJson(event.headers);
  auto res = PgExec(conn, insert_pg_, params);
  if (!res.ok()) {
    if (res.status().code() == StatusCode::kNotFound) {
      return NotFoundError("outbox table " + QuoteIdent(table_) +
                           " does not exist; create it with: courier migrate --source URL");
    }
    return res.status().WithContext("outbox append");
  }
  return event_id;
}

Result<std::string> OutboxWriter::Append(sqlite3* db, const OutboxEvent& event) const {
  if (sqlite3_get_autocommit(db) != 0) {
    return FailedPreconditionError(
        "OutboxWriter::Append needs the caller's open transaction (run BEGIN first, COMMIT "
        "after), so the event commits or rolls back with the business rows");
  }
  std::string event_id = event.event_id.empty() ? NewUuidV7() : event.event_id;
  // Prepared per call: the writer holds no per-connection state, and preparing is cheap
  // next to the transaction's commit.
  auto stmt = SqlitePrepare(db, insert_sqlite_);
  if (!stmt.ok()) {
    if (stmt.status().code() == StatusCode::kNotFound) {
      return NotFoundError("outbox table " + QuoteIdent(table_) +
                           " does not exist; create it with: courier migrate --source URL");
    }
    return stmt.status().WithContext("outbox append");
  }
  sqlite3_stmt* s = stmt->get();
  sqlite3_bind_text(s, 1, event_id.data(), static_cast<int>(event_id.size()), SQLITE_STATIC);
  sqlite3_bind_text(s, 2, event.aggregate_type.data(),
                    static_cast<int>(event.aggregate_type.size()), SQLITE_STATIC);
  sqlite3_bind_text(s, 3, event.aggregate_id.data(), static_cast<int>(event.aggregate_id.size()),
                    SQLITE_STATIC);
  sqlite3_bind_text(s, 4, event.event_type.data(), static_cast<int>(event.event_type.size()),
                    SQLITE_STATIC);
  sqlite3_bind_blob(s, 5, event.payload.data(), static_cast<int>(event.payload.size()),
                    SQLITE_STATIC);
  std::string headers;
  if (!event.headers.empty()) {
    headers = HeadersToJson(event.headers);
    sqlite3_bind_text(s, 6, headers.data(), static_cast<int>(headers.size()), SQLITE_STATIC);
  }
  const int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "outbox append");
  return event_id;
}

}  // namespace courier
