// One outbox row → one Event, for every reader of outbox rows: the PostgreSQL and SQLite
// polling sources, the CDC source's decoded inserts and the dead-letter store. Rows may be
// written by any program in any language, so nothing in them is trusted: every column is
// validated, and a row that cannot become an event comes back with the reason, naming the row
// and the column, to be parked in the dead-letter table instead of crashing or stopping the
// relay, or being published with made-up values.
//
// The contract (docs/polling.md, "Rows the relay cannot publish"): event_id a UUID other than
// the nil one; aggregate_type, aggregate_id and event_type non-empty text; headers NULL or a
// JSON object; created_at a finite time. A NULL payload is an event without a body (a
// tombstone for some consumers) and is published with an empty one.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/event.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

// A row as read, each column's text or nullopt for SQL NULL. The reader has already turned
// the payload into its bytes (bytea unescaped) and created_at into decimal Unix microseconds
// when it is a finite time, or else into the column's value quoted ('infinity').
struct OutboxRow {
  std::optional<std::string> id;
  std::optional<std::string> event_id;
  std::optional<std::string> aggregate_type;
  std::optional<std::string> aggregate_id;
  std::optional<std::string> event_type;
  std::optional<std::string> payload;
  std::optional<std::string> headers;  // JSON text
  std::optional<std::string> created_at_us;

  struct View;
  View view() const;
};

// The same columns as views into the reader's buffers (a PGresult, a pgoutput message): what
// the decoder reads, so that a reader need not copy a row to decode it.
struct OutboxRow::View {
  std::optional<std::string_view> id;
  std::optional<std::string_view> event_id;
  std::optional<std::string_view> aggregate_type;
  std::optional<std::string_view> aggregate_id;
  std::optional<std::string_view> event_type;
  std::optional<std::string_view> payload;
  std::optional<std::string_view> headers;
  std::optional<std::string_view> created_at_us;
};

struct DecodedRow {
  // Every column that could be read, also when `error` is set (the dead letter keeps them).
  Event event;
  // Empty: publishable. Else why not, e.g. "outbox row 7: column aggregate_id is NULL".
  std::string error;
};

DecodedRow DecodeOutboxRow(const OutboxRow& row);
// The same into `out`, every field set, its strings keeping their capacity: decoding row after
// row into one DecodedRow allocates nothing once its strings have grown (and the headers
// column is NULL or an empty object).
void DecodeOutboxRow(const OutboxRow::View& row, DecodedRow* out);

// The pollers' step: decodes `row` into `batch`, as an event or, when a column is wrong, as a
// malformed row to park. A row whose id is unreadable cannot be moved and would be fetched
// again forever: kInvalidArgument then.
Status AddOutboxRow(const OutboxRow& row, FetchedBatch* batch);

// An event store's row (docs/event-sourcing.md), read as an outbox row (id = position,
// aggregate_type = stream_type, aggregate_id = stream_id), into the envelope every event store
// relay publishes, by polling or CDC: the row's headers plus `version` (`version`, its text)
// and `position` as strings. A NULL version is a row that cannot be published, like any NULL
// where the envelope needs a value.
DecodedRow DecodeEventStoreRow(const OutboxRow& row, const std::optional<std::string>& version);
void DecodeEventStoreRow(const OutboxRow::View& row, std::optional<std::string_view> version,
                         DecodedRow* out);

// AddOutboxRow for an event store's row (DecodeEventStoreRow).
Status AddEventStoreRow(const OutboxRow& row, const std::optional<std::string>& version,
                        FetchedBatch* batch);

// SQL for created_at as OutboxRow wants it: decimal microseconds when finite, else the value
// quoted ("'infinity'"), NULL for NULL. `column` is an SQL expression of a timestamp type.
std::string PgCreatedAtSql(const std::string& column);
std::string SqliteCreatedAtSql(const std::string& column);

}  // namespace courier
