// Checks an outbox that already exists (made by hand, by another tool or an older version)
// against what the relay reads and writes, so that a wrong table stops `courier migrate` and
// the relay at once with one line naming the column to fix, instead of failing on every
// fetch or checkpoint.
//
// Thread-safety: functions over caller-owned connections.
#pragma once

#include <sqlite3.h>

#include "core/postgres.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

// The outbox: every column the relay reads, with a type it can read (event_id uuid; the
// aggregate and event type columns text; payload json, jsonb, text or bytea; created_at and
// published_at timestamps). The dead-letter table: no NOT NULL column without a default
// beyond those the relay fills when it moves a row there. A table that does not exist yet
// passes (migrate creates it). kInvalidArgument names the table, the column and the fix.
Status CheckTableShapes(PGconn* conn, const TableNames& tables);
Status CheckTableShapes(sqlite3* db, const TableNames& tables);

}  // namespace courier
