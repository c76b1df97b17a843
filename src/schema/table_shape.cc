#include "schema/table_shape.h"

#include <set>
#include <string>
#include <vector>

#include "core/sqlite.h"

namespace courier {
namespace {

struct Required {
  const char* name;
  std::set<std::string> types;  // pg_type.typname of the accepted types
  const char* wanted;           // the type migrate gives it, for the fix
};

const std::vector<Required>& OutboxColumns() {
  static const std::vector<Required> columns = {
      {"id", {"int8", "int4"}, "bigserial PRIMARY KEY"},
      {"event_id", {"uuid"}, "uuid NOT NULL"},
      {"aggregate_type", {"text", "varchar", "bpchar"}, "text NOT NULL"},
      {"aggregate_id", {"text", "varchar", "bpchar"}, "text NOT NULL"},
      {"event_type", {"text", "varchar", "bpchar"}, "text NOT NULL"},
      {"payload", {"json", "jsonb", "text", "varchar", "bytea"}, "json"},
      {"headers", {"json", "jsonb", "text", "varchar"}, "jsonb"},
      {"created_at", {"timestamptz", "timestamp"}, "timestamptz NOT NULL DEFAULT now()"},
      {"published_at", {"timestamptz", "timestamp"}, "timestamptz"},
  };
  return columns;
}

// Debezium's outbox table (its documentation's example), as its Outbox Event Router reads it.
const std::vector<Required>& DebeziumOutboxColumns() {
  static const std::vector<Required> columns = {
      {"id", {"uuid"}, "uuid PRIMARY KEY"},
      {"aggregatetype", {"text", "varchar", "bpchar"}, "varchar(255) NOT NULL"},
      {"aggregateid", {"text", "varchar", "bpchar"}, "varchar(255) NOT NULL"},
      {"type", {"text", "varchar", "bpchar"}, "varchar(255) NOT NULL"},
      {"payload", {"json", "jsonb", "text", "varchar", "bytea"}, "jsonb"},
  };
  return columns;
}

// The event store (include/courier/event_store.h), as the relay and the readers read it.
const std::vector<Required>& EventStoreColumns() {
  static const std::vector<Required> columns = {
      {"position", {"int8"}, "bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY"},
      {"stream_type", {"text", "varchar", "bpchar"}, "text NOT NULL"},
      {"stream_id", {"text", "varchar", "bpchar"}, "text NOT NULL"},
      {"version", {"int8", "int4"}, "bigint NOT NULL"},
      {"event_id", {"uuid"}, "uuid NOT NULL UNIQUE"},
      {"event_type", {"text", "varchar", "bpchar"}, "text NOT NULL"},
      {"payload", {"json", "jsonb", "text"}, "json NOT NULL"},
      {"headers", {"json", "jsonb", "text"}, "json"},
      {"created_at", {"timestamptz", "timestamp"}, "timestamptz NOT NULL DEFAULT now()"},
      {"published_at", {"timestamptz", "timestamp"}, "timestamptz"},
  };
  return columns;
}

const std::vector<Required>& OutboxColumnsOf(const TableNames& tables) {
  switch (tables.outbox_format) {
    case TableNames::OutboxFormat::kDebezium:
      return DebeziumOutboxColumns();
    case TableNames::OutboxFormat::kEventStore:
      return EventStoreColumns();
    case TableNames::OutboxFormat::kCourier:
      break;
  }
  return OutboxColumns();
}

// What the relay writes when it moves a row to the dead-letter table (the sources'
// Checkpoint), or what has a default there when migrate made it.
const std::set<std::string>& DeadLetterColumns() {
  static const std::set<std::string> columns = {
      "id",         "outbox_id", "event_id", "aggregate_type", "aggregate_id",
      "event_type", "payload",   "headers",  "created_at",     "error",
      "sink",       "failed_at", "status",   "attempts",       "outbox"};
  return columns;
}

Status ExtraNotNull(const std::string& table, const std::string& column) {
  return InvalidArgumentError(
      "table " + table + " has column " + column +
      " NOT NULL without a default, which courier cannot fill when it moves a row there; give "
      "it a default (ALTER TABLE " +
      table + " ALTER COLUMN " + QuoteIdent(column) + " SET DEFAULT ...) or drop NOT NULL");
}

}  // namespace

Status CheckTableShapes(PGconn* conn, const TableNames& tables) {
  const std::string sql =
      "SELECT a.attname, coalesce(bt.typname, t.typname), format_type(a.atttypid, a.atttypmod),"
      " a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''"
      " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
      " LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype"
      " WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";
  const std::string outbox = QuoteIdent(tables.outbox);
  COURIER_ASSIGN_OR_RETURN(PgResult cols, PgExec(conn, sql, {outbox}));
  if (PQntuples(cols.get()) > 0) {
    for (const Required& r : OutboxColumnsOf(tables)) {
      int row = -1;
      for (int i = 0; i < PQntuples(cols.get()); ++i) {
        if (std::string(PQgetvalue(cols.get(), i, 0)) == r.name) row = i;
      }
      if (row < 0) {
        return InvalidArgumentError("table " + outbox + " has no column " + r.name +
                                    ", which courier reads; add it: ALTER TABLE " + outbox +
                                    " ADD COLUMN " + r.name + " " + r.wanted);
      }
      if (r.types.count(PQgetvalue(cols.get(), row, 1)) == 0) {
        const std::string base = std::string(r.wanted).substr(0, std::string(r.wanted).find(' '));
        return InvalidArgumentError("table " + outbox + " has column " + r.name + " of type " +
                                    PQgetvalue(cols.get(), row, 2) +
                                    ", which courier cannot use; it needs " + r.wanted +
                                    ": ALTER TABLE " + outbox + " ALTER COLUMN " + r.name +
                                    " TYPE " + (base == "bigserial" ? "bigint" : base) + " USING " +
                                    r.name + "::" + (base == "bigserial" ? "bigint" : base));
      }
    }
  }
  const std::string dead = QuoteIdent(tables.dead_letter);
  COURIER_ASSIGN_OR_RETURN(PgResult dead_cols, PgExec(conn, sql, {dead}));
  for (int i = 0; i < PQntuples(dead_cols.get()); ++i) {
    const std::string name = PQgetvalue(dead_cols.get(), i, 0);
    if (std::string(PQgetvalue(dead_cols.get(), i, 3)) == "t" &&
        DeadLetterColumns().count(name) == 0) {
      return ExtraNotNull(dead, name);
    }
  }
  return Status::Ok();
}

Status CheckTableShapes(sqlite3* db, const TableNames& tables) {
  // SQLite's columns take any value whatever their declared type: only presence is checked.
  const std::string outbox = QuoteIdent(tables.outbox);
  COURIER_ASSIGN_OR_RETURN(
      SqliteStmt cols, SqlitePrepare(db,
                                     "SELECT name, \"notnull\" AND dflt_value IS NULL AND pk = 0"
                                     " FROM pragma_table_info(?1)"));
  auto read = [&](const std::string& table) -> Result<std::vector<std::pair<std::string, bool>>> {
    sqlite3_reset(cols.get());
    sqlite3_bind_text(cols.get(), 1, table.c_str(), -1, SQLITE_TRANSIENT);
    std::vector<std::pair<std::string, bool>> out;
    int rc;
    while ((rc = sqlite3_step(cols.get())) == SQLITE_ROW) {
      out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(cols.get(), 0)),
                       sqlite3_column_int(cols.get(), 1) != 0);
    }
    if (rc != SQLITE_DONE) return SqliteError(db, rc, "read the columns of " + table);
    return out;
  };
  COURIER_ASSIGN_OR_RETURN(auto outbox_cols, read(tables.outbox));
  if (!outbox_cols.empty()) {
    for (const Required& r : OutboxColumnsOf(tables)) {
      bool found = false;
      for (const auto& c : outbox_cols) found = found || c.first == r.name;
      if (!found) {
        return InvalidArgumentError("table " + outbox + " has no column " + r.name +
                                    ", which courier reads; add it (see courier migrate's "
                                    "table in docs/polling.md)");
      }
    }
  }
  COURIER_ASSIGN_OR_RETURN(auto dead_cols, read(tables.dead_letter));
  for (const auto& [name, strict] : dead_cols) {
    if (strict && DeadLetterColumns().count(name) == 0) {
      return ExtraNotNull(QuoteIdent(tables.dead_letter), name);
    }
  }
  return Status::Ok();
}

}  // namespace courier
