// SQLite behind RAII handles. Databases are opened in WAL mode with a busy timeout, so an
// application writer and the relay (another process) can share one file.
//
// Thread-safety: a handle belongs to one thread at a time.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>

#include "courier/status.h"

namespace courier {

struct SqliteDbDeleter {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct SqliteStmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using SqliteDb = std::unique_ptr<sqlite3, SqliteDbDeleter>;
using SqliteStmt = std::unique_ptr<sqlite3_stmt, SqliteStmtDeleter>;

// Opens `path`; `create` allows creating a new file (migrate does, the relay does not).
Result<SqliteDb> SqliteOpen(const std::string& path, bool create);
Status SqliteExec(sqlite3* db, const std::string& sql);
Result<SqliteStmt> SqlitePrepare(sqlite3* db, const std::string& sql);
// Classes `rc` (BUSY/LOCKED are retriable) with the database's message.
Status SqliteError(sqlite3* db, int rc, std::string_view context);

}  // namespace courier
