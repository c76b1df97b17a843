// Pieces of the event of a table change (change.h) that courier's shape and Debezium's share.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sources/cdc/change.h"

namespace courier::cdc::internal {

// courier's name of an operation: insert, update, delete, read, truncate.
const char* OpName(RowChange::Op op);

// A row image as a JSON object {"col":value,...} (the values are already JSON), or `null`.
std::string ImageJson(const std::optional<std::vector<ColumnValue>>& image);

// The key columns' values (JSON), in key order, from the image that carries the row's
// identity: `after`, else `before`. Empty for a truncate.
std::vector<const ColumnValue*> KeyValues(const RowChange& change);

// Unix microseconds as ISO 8601 in UTC with microseconds: 2026-11-26T22:18:23.123456Z.
std::string IsoTimeUtc(int64_t unix_us);

// The Debezium envelope (debezium.cc): payload and aggregate_id of `out`.
void RenderDebezium(const RowChange& change, Event* out);

}  // namespace courier::cdc::internal
