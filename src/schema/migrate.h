// `courier migrate`: creates and upgrades the tables of an outbox (DESIGN §3).
//
// Thread-safety: free functions; concurrent calls (threads or processes) serialise on a
// database lock.
#pragma once

#include <string>
#include <vector>

#include "core/clock.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

// The tables `courier migrate` makes sure of, as named in the database.
struct MigrateReport {
  std::vector<std::string> created;  // did not exist before
  std::vector<std::string> existing;
};

// Creates the outbox's tables if missing: outbox, dead letters, inbox and its parked events,
// and on PostgreSQL the lease and CDC bookkeeping tables. Idempotent; safe to run
// concurrently. With `cdc.enabled` (PostgreSQL only) also the publication and the replication
// slot, recording the rows already in the outbox to be published first. `report`, when given,
// receives which tables it created.
Status Migrate(const std::string& source_url, const TableNames& tables,
               const CdcOptions& cdc = CdcOptions{}, const StopSignal* stop = nullptr,
               MigrateReport* report = nullptr);

}  // namespace courier
