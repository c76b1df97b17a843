// `courier status`: what an operator asks first — how much is pending, how old the oldest
// pending event is, how many are parked, and whether a relay is active.
//
// Thread-safety: pure function over its own connection.
#pragma once

#include <cstdint>
#include <string>

#include "courier/status.h"
#include "sources/source.h"

namespace courier {

struct OutboxStatus {
  int64_t pending = 0;
  double oldest_pending_age_s = 0;  // 0 when nothing is pending
  int64_t published_retained = 0;   // retain mode: published rows not yet cleaned
  int64_t dead_letters = 0;
  bool relay_active = false;
};

Result<OutboxStatus> ReadOutboxStatus(const std::string& source_url, const TableNames& tables);

}  // namespace courier
