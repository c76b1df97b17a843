// What the PostgreSQL and SQLite halves of EventStore share (event_store.cc,
// event_store_sqlite.cc): the checks of an append, its refusal's message, and one row as read.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "courier/event_store.h"

namespace courier {

// A row of the events table as read, its headers still JSON text.
struct RawEventRow {
  int64_t position = 0;
  std::string stream_type;
  std::string stream_id;
  int64_t version = 0;
  std::string event_id;
  std::string event_type;
  std::string payload;
  std::optional<std::string> headers;
  std::string created_at;
};

// Headers that are not a JSON object (a row written by plain SQL before the headers check)
// are dropped with a warning naming the position: the event itself is never held back.
Result<RecordedEvent> ToRecorded(RawEventRow row);

// kInvalidArgument for an empty list, an expected version below kAny, or a header named
// "version" or "position" (the envelope's).
Status CheckAppend(int64_t expected_version, const std::vector<NewEvent>& events);

// "stream account/acct-1 is at version 7, not the expected 5: re-read it and retry".
std::string ExpectedVersionMessage(const std::string& stream, int64_t expected, int64_t current);

}  // namespace courier
