// A change of a captured table (table CDC, `courier relay --mode cdc --capture`), as decoded
// from the write-ahead log or read by a snapshot, and its rendering into an event: courier's
// own shape (docs/table-cdc.md) or Debezium's change-event envelope.
//
// The event of a change:
//   aggregate_type  the table: `products`, or `sales.orders` when its schema is not `public`
//   aggregate_id    the primary key as text: `42`; a composite key as a JSON array `[7,"eu"]`
//   event_type      insert, update, delete, read (snapshot) or truncate
//   event_id        a UUID derived from (commit LSN, position, cluster): a redelivery keeps it
//   version         {commit LSN, position of the change in its transaction}
//   payload         {"op":"insert","before":{..}|null,"after":{..}|null,
//                    "source":{"lsn":"0/16B3748","xid":742,"commit_time":"2026-..Z",
//                              "schema":"public","table":"products","snapshot":false}}
//                   plus "unavailable":["col",..] when an UPDATE left TOASTed columns out
//                   (REPLICA IDENTITY not FULL)
// Column values are JSON exactly as PostgreSQL's to_jsonb renders them (RenderColumn).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/event.h"

namespace courier::cdc {

// One column of a row image: its name and its value as rendered JSON text (`null` for NULL).
struct ColumnValue {
  std::string name;
  std::string json;
};

struct RowChange {
  enum class Op { kInsert, kUpdate, kDelete, kRead, kTruncate } op = Op::kInsert;
  std::string database;  // the database's name (Debezium's source.db)
  std::string schema;    // e.g. public
  std::string table;     // e.g. products
  // The primary key's columns, in key order (for REPLICA IDENTITY FULL tables without a
  // primary key: every column).
  std::vector<std::string> key_columns;
  // Row images in the table's column order. before: the old row of an update/delete (only its
  // key columns unless REPLICA IDENTITY FULL); after: the new row of an insert/update/read.
  std::optional<std::vector<ColumnValue>> before;
  std::optional<std::vector<ColumnValue>> after;
  // Columns an update could not carry (unchanged TOASTed values without REPLICA IDENTITY
  // FULL): absent from `after`.
  std::vector<std::string> unavailable;
  uint64_t commit_lsn = 0;     // the transaction's commit LSN (snapshot: the high watermark's)
  uint64_t position = 0;       // 1-based position of the change in its transaction
  uint32_t xid = 0;            // 0 for snapshot reads
  int64_t commit_time_us = 0;  // Unix epoch
  bool snapshot = false;       // a read of the snapshot or of a backfill
};

enum class ChangeFormat {
  kCourier,   // the shape above
  kDebezium,  // Debezium's envelope: before, after, source, op c/u/d/r/t, ts_ms;
              // aggregate_id (the Kafka key) = the key object {"id":42}
};

// Fills table_change (true), aggregate_type, aggregate_id, event_type, event_id, version, payload
// and created_at_us of `out` (id, row_id and headers are the caller's). `system_id`: the cluster's
// identifier (IDENTIFY_SYSTEM), part of the event id.
void RenderChange(const RowChange& change, ChangeFormat format, uint64_t system_id, Event* out);

// The event id of a change: a version-8 UUID that holds the commit LSN and, mixed with the
// cluster's identifier, the position; distinct for every (LSN, position) of one cluster, and
// the same each time the change is rendered again.
std::string ChangeEventId(uint64_t commit_lsn, uint64_t position, uint64_t system_id);

// The session settings under which column values are read, by the stream (pgoutput uses the
// walsender's session) and by snapshots alike: a value's text then never depends on the
// server's or the role's settings, and RenderColumn reads one form. Timestamps are in UTC.
inline constexpr const char* kValueSettings[] = {
    "SET DateStyle = ISO", "SET TimeZone = 'UTC'", "SET IntervalStyle = postgres",
    "SET bytea_output = hex", "SET extra_float_digits = 3"};

// A column value in pgoutput's text form as JSON, exactly as to_jsonb renders it: numbers as
// numbers (NaN and infinities as strings), booleans, json/jsonb nested, timestamps in ISO 8601,
// arrays as JSON arrays, bytea as "\\x..", everything else as a JSON string. `type_oid`: the
// column's type as the relation message gives it.
std::string RenderColumn(uint32_t type_oid, std::string_view text);

}  // namespace courier::cdc
