// `courier migrate`: creates and upgrades the tables of an outbox (DESIGN §3) by applying the
// numbered migrations of schema/migrations.h that its version table does not record yet.
//
// Thread-safety: free functions; concurrent calls (threads or processes, any outbox of the
// database) take turns on a lock, so each migration is applied once.
#pragma once

#include <string>
#include <vector>

#include "core/clock.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

struct AppliedMigration {
  int version;
  std::string name;
};

// What `courier migrate` did, as named in the database.
struct MigrateReport {
  // The tables it makes sure of: those that did not exist before, and the others.
  std::vector<std::string> created;
  std::vector<std::string> existing;
  // The highest version recorded before (0: none, as in a database of a courier that recorded
  // nothing) and after, and the migrations applied, in order.
  int recorded_before = 0;
  int version = 0;
  std::vector<AppliedMigration> applied;
  // --capture: the tables captured (schema.table) and the publication that carries them.
  std::vector<std::string> captured;
  std::string publication;
};

// The outbox's version table, beside it: one row per migration applied (version, name,
// applied_at, courier_version). "app.orders" → "app.orders_schema".
std::string SchemaVersionsTable(const TableNames& tables);

// Applies, in order and each in its own transaction together with its record, the migrations
// not recorded yet, and those whose tables are missing (a dead-letter or inbox table of a new
// name): the outbox, dead letters, inbox and its parked events, and on PostgreSQL the lease
// and CDC bookkeeping tables. Tables of a courier that recorded nothing are adopted unchanged.
// A recorded version above what this courier knows is refused (kInvalidArgument) before
// anything changes. With `cdc.enabled` (PostgreSQL only) also the publication and the
// replication slot, recording the rows already in the outbox to be published first. With
// `cdc.capture` also (implying CDC) the captured tables, checked before anything changes and
// added to the publication (sources/cdc/capture_setup.h).
// `report`, when given, receives what it did.
Status Migrate(const std::string& source_url, const TableNames& tables,
               const CdcOptions& cdc = CdcOptions{}, const StopSignal* stop = nullptr,
               MigrateReport* report = nullptr);

}  // namespace courier
