// The strategies' database connection, one interface over SQLite and PostgreSQL, so that a
// strategy that needs no PostgreSQL feature runs on either (the embedded default included).
//
// Thread-safety: none (one thread, as libpq and SQLite require).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "courier/status.h"

struct pg_conn;
struct sqlite3;

namespace courier::lab {

class LabDb {
 public:
  // "sqlite:///path" or "postgres://..."; for PostgreSQL, `schema` becomes the search_path
  // (created if missing) and the connection's application_name is "courier-lab-<schema>", so
  // that the lab can terminate it (its "database restart" fault).
  static Result<std::unique_ptr<LabDb>> Open(const std::string& url, const std::string& schema);
  virtual ~LabDb() = default;

  // Runs `sql` (one or more statements, no result). A dropped PostgreSQL connection is
  // kRetriable, and the next call reconnects.
  virtual Status Exec(const std::string& sql) = 0;
  // The first column of every row of `sql`, as text (NULL as nullopt).
  virtual Result<std::vector<std::optional<std::string>>> Column(const std::string& sql) = 0;
  // BEGIN / COMMIT / ROLLBACK. Commit's error says why (kAborted when a constraint refused
  // it); after a failed Commit the transaction is over (rolled back) on either engine.
  virtual Status Begin() = 0;
  virtual Status Commit() = 0;
  virtual Status Rollback() = 0;

  // The raw handle, for courier's own writers (OutboxWriter, EventStore): exactly one of the
  // two is non-null.
  virtual pg_conn* pg() { return nullptr; }
  virtual sqlite3* sqlite() { return nullptr; }
};

}  // namespace courier::lab
