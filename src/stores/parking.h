// Parking: how an event enters the dead-letter table (stores/dead_letters.h), one statement
// per database. The sources run it on their own connection inside their checkpoint
// transaction, so an event leaves the outbox and becomes a dead letter together.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "core/event.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

// PostgreSQL: moves the outbox rows of `rejected` (their ids) into the dead-letter table.
class PgOutboxParking {
 public:
  explicit PgOutboxParking(const TableNames& tables);
  Status Park(PGconn* conn, std::span<const Rejected> rejected, const std::string& sink) const;

 private:
  std::string sql_;
};

// PostgreSQL change data capture: an event decoded from the write-ahead log, whose outbox row
// (`row_id`, 0 for a logical message) is not read again. `event.event_id` must be a UUID.
class PgEventParking {
 public:
  // Reads the dead-letter table's payload and headers types.
  static Result<PgEventParking> Prepare(PGconn* conn, const TableNames& tables);
  Status Park(PGconn* conn, const Event& event, int64_t row_id, const Rejected& rejected,
              const std::string& sink) const;

 private:
  std::string sql_;
  bool bytea_ = false;
};

// SQLite: moves the outbox rows of `rejected` into the dead-letter table.
class SqliteOutboxParking {
 public:
  static Result<SqliteOutboxParking> Prepare(sqlite3* db, const TableNames& tables);
  Status Park(sqlite3* db, std::span<const Rejected> rejected, const std::string& sink) const;

 private:
  SqliteStmt insert_, delete_;
};

}  // namespace courier
