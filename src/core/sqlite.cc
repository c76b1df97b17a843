#include "core/sqlite.h"

namespace courier {

Status SqliteError(sqlite3* db, int rc, std::string_view context) {
  std::string message =
      std::string(context) + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
      return RetriableError(message);
    case SQLITE_CANTOPEN:
    case SQLITE_NOTADB:
      return InvalidArgumentError(message);
    default:
      if (message.find("no such table") != std::string::npos) return NotFoundError(message);
      return InternalError(message);
  }
}

Result<SqliteDb> SqliteOpen(const std::string& path, bool create) {
  sqlite3* raw = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  SqliteDb db(raw);
  if (rc != SQLITE_OK) {
    return InvalidArgumentError("cannot open SQLite database '" + path +
                                "': " + sqlite3_errstr(rc) +
                                (create ? "" : " (does the file exist? run courier migrate)"));
  }
  constexpr int kBusyMs = 10000;
  sqlite3_busy_timeout(db.get(), kBusyMs);
  // Switching a new file to WAL needs it to itself; SQLite answers SQLITE_BUSY at once, without
  // the busy handler, while another connection is opening it too (two migrates, or a relay
  // and a migrate, on a file that did not exist): try again for as long as the busy timeout.
  Status wal = SqliteExec(db.get(), "PRAGMA journal_mode=WAL");
  for (int waited = 0; wal.code() == StatusCode::kRetriable && waited < kBusyMs; waited += 5) {
    sqlite3_sleep(5);
    wal = SqliteExec(db.get(), "PRAGMA journal_mode=WAL");
  }
  COURIER_RETURN_IF_ERROR(wal);
  // NORMAL is durable in WAL mode against process crashes, which is what the relay needs.
  COURIER_RETURN_IF_ERROR(SqliteExec(db.get(), "PRAGMA synchronous=NORMAL"));
  return db;
}

Status SqliteExec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    Status st = SqliteError(db, rc, "SQLite");
    return Status(st.code(), "SQLite: " + msg);
  }
  return Status::Ok();
}

Result<SqliteStmt> SqlitePrepare(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db, sql.c_str(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  SqliteStmt stmt(raw);
  if (rc != SQLITE_OK) return SqliteError(db, rc, "SQLite prepare");
  return stmt;
}

}  // namespace courier
