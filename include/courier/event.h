// The event envelope (DESIGN §2) as the relay carries it.
//
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace courier {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Event {
  // Position in the source: the outbox row id when polling, a sequence number of the stream
  // in CDC mode. Not part of the envelope on the wire.
  int64_t id = 0;
  // The outbox row's id in both modes, so stable across redelivery and a change of mode; 0
  // for an event that is no row (a CDC logical message). Not on the wire either.
  int64_t row_id = 0;
  std::string event_id;        // UUID; the dedup key everywhere
  std::string aggregate_type;  // routes to a topic
  std::string aggregate_id;    // ordering and partition key
  std::string event_type;      // e.g. OrderCreated
  std::string payload;         // passed through untouched
  Headers headers;             // user headers, passed as broker headers
  int64_t created_at_us = 0;   // commit-side time, microseconds since the Unix epoch
};

}  // namespace courier
