// The numbered migrations of an outbox's tables, one ordered list per database.
//
// `courier migrate` (schema/migrate.cc) applies, in order, each one not yet recorded in the
// outbox's version table (TableNames::SchemaVersions) and records it in the same transaction.
// Each is idempotent (IF NOT EXISTS, columns added only when missing), because databases
// migrated by versions of courier that recorded nothing are adopted by running every step
// over what is already there.
//
// Adding one: append an entry with the next version to the list of its database(s), and
// never edit a released one (databases out there have recorded it as applied).
//
// Thread-safety: the lists are built per call; `apply` uses the connection it was built with.
#pragma once

#include <sqlite3.h>

#include <functional>
#include <string>
#include <vector>

#include "core/postgres.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

struct Migration {
  int version;
  std::string name;
  // The tables it creates, in the order it creates them: for migrate's report, and to apply
  // it again when one of them is missing (a dead-letter or inbox table of a new name).
  std::vector<std::string> tables;
  // Runs it inside the caller's transaction.
  std::function<Status()> apply;
};

// PostgreSQL: 1 outbox (with courier_uuid_v7 and its indexes), 2 dead_letters, 3 leases,
// 4 inbox (with its parked events), 5 cdc_bookkeeping, 6 cdc_capture, 7 cdc_capture_snapshot,
// 8 cdc_capture_backfill. An event store (TableNames::event_store(), its own version table):
// 1 event_store (events, snapshots, projections), 2 dead_letters, 3 leases, 4 cdc_bookkeeping,
// 5 event_store_headers_check.
std::vector<Migration> PostgresMigrations(PGconn* conn, const TableNames& t);

// SQLite: 1 outbox, 2 dead_letters, 3 inbox (no leases: a file lock elects; no CDC). An event
// store: 1 event_store, 2 dead_letters.
std::vector<Migration> SqliteMigrations(sqlite3* db, const TableNames& t);

// The last component of a possibly schema-qualified name, for naming indexes.
std::string BaseName(const std::string& name);

}  // namespace courier
