// `courier status`: what an operator asks first — how much is pending, how old the oldest
// pending event is, how many are parked, and whether a relay is active.
//
// Thread-safety: pure function over its own connection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/postgres.h"
#include "courier/status.h"
#include "eventstore/horizon.h"
#include "sources/source.h"

namespace courier {

// A CDC replication slot courier created for the outbox.
struct SlotStatus {
  std::string name;
  bool exists = false;         // false: dropped; the next relay start recreates it
  bool active = false;         // a relay streams from it now
  std::string confirmed_lsn;   // everything before it is published
  int64_t lag_bytes = 0;       // WAL written since the confirmed position
  int64_t retained_bytes = 0;  // WAL the server keeps for the slot
  std::string wal_status;      // reserved, extended, unreserved or lost
};

// An active relay's lease (stores/leadership.h), one per outbox or per shard.
struct LeaseStatus {
  std::string name;
  std::string holder;  // host:pid
  int64_t epoch = 0;
  bool live = false;  // not expired: a relay holds it (or died less than a lease ago)
  double renewed_ago_s = 0;
  double expires_in_s = 0;  // negative: expired that long ago
  int64_t published = 0;    // by this holder since it took the lease
  double per_second = 0;    // over the last minute
};

// A captured table (table CDC) and the progress of its snapshot or backfill.
struct CaptureStatus {
  std::string table;           // schema.table
  std::string snapshot_state;  // pending, running, done
  int64_t snapshot_rows = 0;
};

// A projection of the event store (courier project --event-store): its checkpoint row in
// `<events>_projections`.
struct ProjectionStatus {
  std::string name;
  int64_t position = 0;      // the last position it applied
  int64_t behind = 0;        // the store's newest position minus `position`
  double updated_ago_s = 0;  // since its checkpoint last moved
};

// A Kafka-sourced projection's stored offset (courier_projection_offsets), one per partition.
struct ProjectionOffsetStatus {
  std::string name;
  std::string topic;
  int32_t partition = 0;
  int64_t next_offset = 0;  // the next offset it will apply
};

struct OutboxStatus {
  int64_t pending = 0;
  double oldest_pending_age_s = 0;  // 0 when nothing is pending
  int64_t published_retained = 0;   // retain mode: published rows not yet cleaned
  int64_t dead_letters = 0;
  bool relay_active = false;
  std::vector<SlotStatus> slots;        // PostgreSQL, CDC
  std::vector<LeaseStatus> leases;      // PostgreSQL
  std::vector<CaptureStatus> captured;  // PostgreSQL, table CDC
  // An event store (TableNames::event_store()): pending counts the events without
  // published_at (published ones are kept, not counted), and these are the transactions
  // writing the table that have been open for more than a second: readers (the relay,
  // projections) wait for them before passing their positions (eventstore/horizon.h).
  std::vector<HorizonBlocker> horizon_waits_on;
  // An event store: every row of `<events>_projections`, by name.
  std::vector<ProjectionStatus> projections;
  // PostgreSQL, when the database has courier_projection_offsets: its rows, by name, topic
  // and partition.
  std::vector<ProjectionOffsetStatus> projection_offsets;
};

Result<OutboxStatus> ReadOutboxStatus(const std::string& source_url, const TableNames& tables);

// The rows of `<events_table>_projections` (none when the table does not exist), by name.
Result<std::vector<ProjectionStatus>> ReadProjectionStatus(PGconn* conn,
                                                           const std::string& events_table);
// The rows of a Kafka-sourced projections' offsets table (none when it does not exist).
Result<std::vector<ProjectionOffsetStatus>> ReadProjectionOffsetStatus(
    PGconn* conn, const std::string& offsets_table);

}  // namespace courier
