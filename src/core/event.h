// The event as the relay carries it: the envelope of DESIGN §2, its version, and where the
// source read it. The positions never leave the process: they are not on the wire and not in
// the public headers.
//
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <string>

#include "courier/event.h"

namespace courier {

struct Event {
  // Position in the source: the outbox row id when polling, a sequence number of the stream
  // in CDC mode; what the relay acknowledges back to the source.
  int64_t id = 0;
  // The outbox row's id in both modes; 0 for an event that is no row (a CDC logical message).
  int64_t row_id = 0;
  std::string event_id;        // UUID; the dedup key everywhere
  std::string aggregate_type;  // routes to a topic
  std::string aggregate_id;    // ordering and partition key
  std::string event_type;      // e.g. OrderCreated
  std::string payload;         // passed through untouched
  Headers headers;             // user headers, passed as broker headers
  int64_t created_at_us = 0;   // commit-side time, microseconds since the Unix epoch
  Version version;             // orders the events of one aggregate (courier/event.h)
  // A change of a captured table (sources/cdc/change.h): aggregate_type is the table,
  // aggregate_id its primary key, event_type insert/update/delete/read/truncate, and the
  // payload carries the row ("after") for sinks that mirror rows (cache, search index).
  bool table_change = false;
};

}  // namespace courier
