// The waits behind WaitFor and WaitForPosition (courier/projection.h), for the CLI's
// `project wait` and `courier project`'s GET /wait: they return where the projection is once
// it covers the write, and end early when `stop` is requested.
//
// Thread-safety: each call on its own connection; `stop` may be requested from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/clock.h"
#include "courier/status.h"

namespace courier {

// The last offset of `topic`'s `partition` that projection `name` has applied (>= `offset`).
// kRetriable after `timeout` with where the projection is; kCancelled, saying so, when `stop`
// (may be null) is requested first; kInvalidArgument for an empty topic when it reads several.
Result<int64_t> WaitForOffset(const std::string& db_url, const std::string& name,
                              const std::string& topic, int32_t partition, int64_t offset,
                              std::chrono::milliseconds timeout, const std::string& offsets_table,
                              const StopSignal* stop);

// The position projection `name` of the event store `events_table` has applied (>=
// `position`); the same errors.
Result<int64_t> WaitForEventPosition(const std::string& db_url, const std::string& name,
                                     int64_t position, std::chrono::milliseconds timeout,
                                     const std::string& events_table, const StopSignal* stop);

}  // namespace courier
