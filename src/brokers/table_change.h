// What the sinks that mirror rows (the Redis cache, the search index) read of a change of a
// captured table (Event::table_change, sources/cdc/change.h): which row, what happened to it,
// and the row itself as the JSON text the event carries, made compact. The text is cut out of
// the payload, never parsed into numbers and printed again, so a numeric with 30 digits or a
// bigint above 2^53 reaches the cache exactly as PostgreSQL's to_jsonb rendered it.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/event.h"
#include "courier/status.h"

namespace courier {

struct TableChange {
  enum class Kind {
    kUpsert,    // insert, update, read (snapshot): the row is now `after`
    kDelete,    // the row `key` is gone
    kTruncate,  // every row of `table` is gone
  } kind = Kind::kUpsert;
  std::string table;  // aggregate_type: `products`, `sales.orders`
  std::string key;    // aggregate_id: the primary key as text (empty for a truncate)
  // kUpsert: the row's `after` object as compact JSON text, its values as the event has them.
  std::string after;
  // Columns an update could not carry (TOASTed and unchanged, REPLICA IDENTITY not FULL):
  // absent from `after`; the sink keeps what it holds for them.
  std::vector<std::string> unavailable;
};

// Reads a table change in courier's shape or Debezium's envelope (also wrapped in
// {"schema","payload"}). kRejected, naming what is missing, for a payload that is not one:
// retrying cannot fix it.
Result<TableChange> ReadTableChange(const Event& event);

// `after` (a compact JSON object) with the members of `held` (the row a sink holds) named in
// `columns` that `after` lacks appended, their text untouched: an update that could not carry
// unchanged TOASTed columns keeps the values the sink has for them.
std::string CarryOver(std::string_view after, std::string_view held,
                      const std::vector<std::string>& columns);

// JSON text without the whitespace outside strings.
std::string CompactJson(std::string_view json);

// The raw text of the top-level member `name` of the JSON object `json`; empty when absent or
// when `json` is no object. `json` must be valid JSON.
std::string_view JsonMember(std::string_view json, std::string_view name);

}  // namespace courier
