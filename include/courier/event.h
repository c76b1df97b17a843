// What every event carries besides its body: its user headers, and the version that orders the
// changes of one aggregate.
//
// Thread-safety: plain value types.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace courier {

// User headers of an event, passed as broker headers.
using Headers = std::vector<std::pair<std::string, std::string>>;

// Orders the changes of one aggregate coming from one source: a later change has a greater
// version, so a consumer (the redis-cache sink, a projection) can refuse a stale one. An event
// of the outbox table has its row id ({row_id, 0}), polled or streamed, so the version stays
// the same across a redelivery and a change of mode. An event without a row (a CDC logical
// message) has none ({0, 0}): its log position does not order it against row ids.
struct Version {
  uint64_t major = 0;
  uint64_t minor = 0;

  bool empty() const { return major == 0 && minor == 0; }
  auto operator<=>(const Version&) const = default;
  // Text that sorts as the versions compare: `major` in 20 digits, then '.' and `minor` in 20
  // digits unless it is 0.
  std::string ToString() const;
};

}  // namespace courier
