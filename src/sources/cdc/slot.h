// The CDC source's slot administration, on an ordinary connection: the names of the outbox's
// replication slot and publication, the publication and the slot themselves (created, verified,
// recreated when lost, stale or half-created; slots other outboxes or programs own refused),
// the bookkeeping table that registers them (`<outbox>_cdc_slot`), and ending a previous
// relay's walsender that still holds the slot. PrepareCdc (sources/source.h) is all of it that
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

// Where the slot's stream starts: the slot's confirmed position, and the relay's own
// checkpoint_lsn from the bookkeeping table if it stored one. kRetriable when the slot is gone.
struct SlotPosition {
  pgoutput::Lsn confirmed = 0;
  std::optional<pgoutput::Lsn> checkpoint_lsn;
};
Result<SlotPosition> ReadSlotPosition(PGconn* conn, const TableNames& tables,
                                      const std::string& slot);

// The statement that stores the relay's checkpoint_lsn: $1 the slot, $2 the LSN as text.
std::string RecordCheckpointSql(const TableNames& tables);

}  // namespace courier::cdc
