#include "inbox/inbox_db.h"

#include <cstdlib>

#include "core/encoding.h"

namespace courier {

Status InboxDb::Connect() {
  if (loc_.kind == SourceLocation::Kind::kPostgres) {
    if (pg_ && PQstatus(pg_.get()) == CONNECTION_OK) return Status::Ok();
    COURIER_ASSIGN_OR_RETURN(pg_, PgConnect(loc_.target));
  } else if (!lite_) {
    COURIER_ASSIGN_OR_RETURN(lite_, SqliteOpen(loc_.target, /*create=*/false));
    sqlite3_busy_timeout(lite_.get(), 10000);
  }
  return Status::Ok();
}

void InboxDb::Reset() {
  pg_.reset();
  lite_.reset();
}

Result<bool> InboxDb::Process(const Inbox& inbox, const std::string& event_id,
                              const std::function<Status()>& handler) {
  COURIER_RETURN_IF_ERROR(Connect());
  if (pg_) return inbox.Process(pg_.get(), event_id, [&](pg_conn*) { return handler(); });
  return inbox.Process(lite_.get(), event_id, [&](sqlite3*) { return handler(); });
}

Result<int64_t> InboxDb::Prune(const Inbox& inbox, std::chrono::seconds age) {
  COURIER_RETURN_IF_ERROR(Connect());
  if (pg_) return inbox.Prune(pg_.get(), age);
  return inbox.Prune(lite_.get(), age);
}

Result<int64_t> InboxDb::Run(const std::string& sql, const std::vector<std::string>& params,
                             std::vector<std::vector<std::string>>* rows) {
  COURIER_RETURN_IF_ERROR(Connect());
  if (pg_) {
    PgParams pg_params(params.begin(), params.end());
    COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(pg_.get(), sql, pg_params));
    if (rows != nullptr) {
      for (int r = 0; r < PQntuples(res.get()); ++r) {
        std::vector<std::string>& row = rows->emplace_back();
        for (int c = 0; c < PQnfields(res.get()); ++c)
          row.emplace_back(PQgetvalue(res.get(), r, c));
      }
    }
    return std::atoll(PQcmdTuples(res.get()));
  }
  // The same statement for SQLite: $N becomes ?N.
  std::string lite_sql = sql;
  for (size_t p = 0; (p = lite_sql.find('$', p)) != std::string::npos;) lite_sql[p] = '?';
  COURIER_ASSIGN_OR_RETURN(SqliteStmt stmt, SqlitePrepare(lite_.get(), lite_sql));
  sqlite3_stmt* s = stmt.get();
  for (size_t i = 0; i < params.size(); ++i) {
    sqlite3_bind_text(s, static_cast<int>(i + 1), params[i].data(),
                      static_cast<int>(params[i].size()), SQLITE_STATIC);
  }
  while (true) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(lite_.get(), rc, "inbox");
    if (rows == nullptr) continue;
    std::vector<std::string>& row = rows->emplace_back();
    for (int c = 0; c < sqlite3_column_count(s); ++c) {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, c));
      row.emplace_back(text != nullptr ? std::string(text, sqlite3_column_bytes(s, c)) : "");
    }
  }
  return static_cast<int64_t>(sqlite3_changes(lite_.get()));
}

Status InboxDb::Park(const std::string& table, const std::string& consumer, const Event& e,
                     const std::string& error, int attempts) {
  return Run("INSERT INTO " + QuoteIdent(table) +
                 " (consumer, event_id, event, error, attempts) VALUES ($1, $2, $3, $4, $5)",
             {consumer, e.event_id, EventToJsonLine(e), error, std::to_string(attempts)})
      .status();
}

Result<std::vector<ParkedEvent>> InboxDb::ListParked(const std::string& table,
                                                     const std::string& consumer,
                                                     const std::vector<int64_t>& ids,
                                                     int64_t limit) {
  const std::string select =
      "SELECT id, consumer, event_id, event, error, attempts, " +
      std::string(loc_.kind == SourceLocation::Kind::kPostgres ? "parked_at::text" : "parked_at") +
      " FROM " + QuoteIdent(table) + " WHERE consumer = $1";
  std::vector<std::vector<std::string>> rows;
  if (ids.empty()) {
    COURIER_RETURN_IF_ERROR(
        Run(select + " ORDER BY id LIMIT $2", {consumer, std::to_string(limit)}, &rows).status());
  } else {
    for (int64_t id : ids) {
      COURIER_RETURN_IF_ERROR(
          Run(select + " AND id = $2", {consumer, std::to_string(id)}, &rows).status());
    }
  }
  std::vector<ParkedEvent> parked;
  for (const std::vector<std::string>& row : rows) {
    if (row.size() != 7) return InternalError("unexpected row shape in " + table);
    ParkedEvent p;
    p.id = ParseInt64(row[0]).value_or(0);
    p.consumer = row[1];
    p.event_id = row[2];
    p.event = row[3];
    p.error = row[4];
    p.attempts = ParseInt64(row[5]).value_or(0);
    p.parked_at = row[6];
    parked.push_back(std::move(p));
  }
  return parked;
}

Result<bool> InboxDb::DeleteParked(const std::string& table, const std::string& consumer,
                                   int64_t id) {
  COURIER_ASSIGN_OR_RETURN(
      const int64_t n, Run("DELETE FROM " + QuoteIdent(table) + " WHERE consumer = $1 AND id = $2",
                           {consumer, std::to_string(id)}));
  return n == 1;
}

Status InboxDb::UpdateParked(const std::string& table, int64_t id, const std::string& error) {
  return Run("UPDATE " + QuoteIdent(table) +
                 " SET error = $1, attempts = attempts + 1 WHERE id = $2",
             {error, std::to_string(id)})
      .status();
}

}  // namespace courier
