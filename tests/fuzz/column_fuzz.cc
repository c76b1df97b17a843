// Column values of captured tables into JSON (cdc::RenderColumn): the input's first byte picks
// a type among those RenderColumn knows (and one it does not), the rest is the column's text
// as pgoutput would send it. Whatever the text, the result is one valid JSON value, bounded in
// depth; a value rendered as jsonb renders the same again.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "sources/cdc/change.h"
#include "sources/cdc/jsonb.h"

namespace {

// bool, int4, int8, float8, numeric, json, jsonb, text, bytea, date, timestamp, timestamptz,
// interval, and arrays of int4, text, float8, numeric, json, jsonb, timestamptz, box; an
// unknown type.
constexpr uint32_t kTypes[] = {16,   23,   20,   701,  1700, 114,  3802, 25,   17,   1082, 1114,
                               1184, 1186, 1007, 1009, 1022, 1231, 199,  3807, 1185, 1020, 99999};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint32_t oid = kTypes[data[0] % (sizeof(kTypes) / sizeof(kTypes[0]))];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string out = courier::cdc::RenderColumn(oid, text);
  if (!courier::JsonDepthWithin(out, courier::kMaxJsonDepth + 8)) std::abort();
  // Valid JSON: UTF-8 throughout, and the grammar (JsonbText reads any JSON value; nlohmann
  // cannot be the judge: it refuses numbers beyond a double, which numeric writes).
  try {
    (void)nlohmann::json(out).dump();
  } catch (const nlohmann::json::exception&) {
    std::abort();
  }
  // jsonb refuses \u0000, which JSON allows (a string of text with a NUL byte writes it).
  std::string grammar = out;
  for (size_t at; (at = grammar.find("\\u0000")) != std::string::npos;) grammar[at + 5] = '1';
  if (courier::JsonDepthWithin(out) && !courier::cdc::JsonbText(grammar)) std::abort();
  if ((oid == 114 || oid == 3802) && out != courier::cdc::JsonString(text)) {
    if (courier::cdc::JsonbText(out) != out) std::abort();
  }
  return 0;
}
