// PostgreSQL's jsonb text form, as jsonb_out writes it: what to_jsonb(...)::text returns.
// The pieces RenderColumn (change.h) builds column values from.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/encoding.h"  // AppendJsonString

namespace courier::cdc {

// `text` as a JSON string (AppendJsonString, core/encoding.h: PostgreSQL's escape_json).
std::string JsonString(std::string_view text);

// A number as numeric_in reads it and numeric_out writes it: plain digits, no exponent, the
// input's scale (`1.50` stays `1.50`, `1.5e-07` becomes `0.00000015`, `1e+3` becomes `1000`),
// no sign on zero. Exact at any size; nullopt for anything that is not a finite number or is
// beyond numeric's range.
std::optional<std::string> NumericText(std::string_view text);

// JSON text as jsonb normalizes it: whitespace as jsonb_out writes it (`{"a": 1, "b": [1, 2]}`),
// object keys sorted (shorter first, then bytewise), the last of duplicate keys kept, numbers
// through NumericText, escapes decoded and strings re-escaped. nullopt for text jsonb rejects
// (invalid JSON, \u0000, a lone surrogate, a number numeric cannot hold) and for nesting deeper
// than kMaxJsonDepth (core/encoding.h), which bounds the recursion.
std::optional<std::string> JsonbText(std::string_view json);

}  // namespace courier::cdc
