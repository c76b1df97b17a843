// The CDC source's slot administration, on an ordinary connection: the names of the outbox's
// replication slot and publication, the publication and the slot themselves (created, verified,
// recreated when lost, stale or half-created; slots other outboxes or programs own refused),
// the bookkeeping table that registers them (`<outbox>_cdc_slot`), and ending a previous
// relay's walsender that still holds the slot. PrepareCdc (at the end) is all of it that
// `courier migrate --mode cdc` needs.
//
// Thread-safety: functions over a caller-owned connection.
#pragma once

#include <optional>
#include <string>

#include "core/postgres.h"
#include "sources/pgoutput.h"
#include "sources/source.h"

namespace courier::cdc {

struct CdcNames {
  std::string slot;
  std::string publication;
  std::string outbox;  // schema-qualified, for messages
  // The outbox as the stream's relation messages name it.
  std::string outbox_schema;
  std::string outbox_table;
};

// wal_level is logical and the outbox, dead-letter and bookkeeping tables exist; else says how
// to get there.
Status CheckCdcTables(PGconn* conn, const TableNames& tables);

// The slot and publication of the outbox: those `cdc` names, else derived ones, unique per
// outbox (slot names are cluster-wide).
Result<CdcNames> ResolveNames(PGconn* conn, const TableNames& tables, const CdcOptions& cdc);

// Bookkeeping tables of earlier versions lack the relay's checkpoint position: added when the
// role may (it owns the table), else kNotFound saying to run `courier migrate --mode cdc`.
Status EnsureCheckpointColumn(PGconn* conn, const TableNames& tables, const std::string& source);

// Called only by the lease holder: ends a previous holder's walsender still attached to `slot`
// (a frozen relay keeps it until wal_sender_timeout) and waits until the slot is free.
Status EndPreviousStream(PGconn* conn, const std::string& slot);

// The slot's confirmed position (the relay's own, more exact one is in its CheckpointStore,
// stores/checkpoint_store.h). kRetriable when the slot is gone.
Result<pgoutput::Lsn> ReadSlotConfirmed(PGconn* conn, const std::string& slot);

}  // namespace courier::cdc

namespace courier {

// CDC set-up shared by the source and `courier migrate`: the publication, then the slot. A
// missing (or invalidated) slot is created with an exported snapshot, and the outbox rows
// visible in that snapshot are recorded in the backfill table in the same step.
// Creating a slot waits for transactions open at that moment to end; `stop` cancels it.
// `slot_stale` recreates an existing slot (it cannot decode with the current publication).
Status PrepareCdc(PGconn* conn, const std::string& conninfo, const TableNames& tables,
                  const CdcOptions& cdc, const StopSignal& stop, bool slot_stale = false);

}  // namespace courier
