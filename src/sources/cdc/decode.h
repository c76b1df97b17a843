// What the replication stream carries, as events: an insert into the outbox goes through the
// row codec every source uses (sources/row_codec.h), a `courier` logical message through its
// documented JSON format. Either comes back as a DecodedRow: the event, or why it cannot be
// published (to be parked as a dead letter, with every field that could be read).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sources/pgoutput.h"
#include "sources/row_codec.h"
#include "sources/source.h"

namespace courier::cdc {

// The prefix of the logical messages that are events (pg_logical_emit_message).
inline constexpr const char* kMessagePrefix = "courier";

// The outbox columns the source reads, by position in the relation as the stream sends it
// (-1: the table has no such column).
// In Debezium's outbox shape (`debezium`), event_id is the uuid column `id` and there is no
// row id: aggregatetype, aggregateid and type stand for aggregate_type, aggregate_id and
// event_type, and there are no headers or created_at columns.
// An event store's (kEventStore) position, stream_type and stream_id stand for id,
// aggregate_type and aggregate_id, and its version goes into the envelope's headers.
struct OutboxColumns {
  int id = -1, event_id = -1, aggregate_type = -1, aggregate_id = -1, event_type = -1, payload = -1,
      headers = -1, created_at = -1, version = -1;
  bool payload_bytea = false;
  bool debezium = false;
  bool event_store = false;
};
OutboxColumns OutboxColumnsOf(const pgoutput::Relation& relation,
                              TableNames::OutboxFormat format = TableNames::OutboxFormat::kCourier);

// An inserted outbox row. `commit_time_us` (of its transaction) stands for created_at when the
// outbox lacks the column, and for a dead letter's when the row's own is unusable. A row of
// Debezium's outbox becomes what its Outbox Event Router publishes: key aggregateid, value
// payload, header `id` (the row's id, also the event id); its row_id is 0 (nothing to delete).
// An event store's row becomes the envelope its polling relay publishes (DecodeEventStoreRow),
// its row_id the position.
DecodedRow DecodeInsert(const OutboxColumns& columns, const std::vector<pgoutput::Value>& values,
                        int64_t commit_time_us);
// The same into `out` (DecodeOutboxRow's reuse): the stream's hot path, which allocates nothing
// for a row of text columns once `out` has grown to the rows' sizes.
void DecodeInsert(const OutboxColumns& columns, const std::vector<pgoutput::Value>& values,
                  int64_t commit_time_us, DecodedRow* out);

// A `courier` logical message: a JSON object with aggregate_type, aggregate_id, event_type,
// payload (any JSON value) and optional event_id and headers. Without an event_id it gets
// MessageEventId(its LSN, `system_id`); created_at is `commit_time_us`.
DecodedRow DecodeLogicalMessage(const pgoutput::Message& message, uint64_t system_id,
                                int64_t commit_time_us);

// A deterministic event id for a logical message without one: its LSN and the cluster's
// system identifier in a version-8 UUID, so a redelivered message keeps its id.
std::string MessageEventId(pgoutput::Lsn lsn, uint64_t system_id);

}  // namespace courier::cdc
