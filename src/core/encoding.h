// JSON forms of an event: the JSONL file sink's lines and `courier tail`'s output, and the
// user-header object stored in the outbox's headers column.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/event.h"
#include "courier/status.h"

namespace courier {

// {"event_id":..,"aggregate_type":..,"aggregate_id":..,"event_type":..,"created_at_us":..,
//  "headers":{..},"payload":<JSON value>} — or "payload_base64" when the payload is not JSON.
// `extra` (a JSON object text, or empty) is merged in first (e.g. topic/partition/offset).
std::string EventToJsonLine(const Event& event, std::string_view extra = {});
// The same line (without `extra`) appended to `out`: what a sink writes per event, written
// directly rather than through a JSON value, so it allocates nothing once `out` has grown
// (the exceptions: text that is not valid UTF-8, more than 32 headers, a payload that is not
// JSON; each still gives the same bytes).
void AppendEventJsonLine(const Event& event, std::string* out);

namespace internal {
// The line as a JSON value dumps it, which AppendEventJsonLine must match byte for byte (for
// the tests that check it does).
std::string EventToJsonLineByValue(const Event& event);
}  // namespace internal

// Parses a line written by EventToJsonLine.
Result<Event> EventFromJsonLine(std::string_view line);

// {"k":"v",...} ↔ Headers. Non-string values are kept as their JSON text.
Result<Headers> HeadersFromJson(std::string_view json);
std::string HeadersToJson(const Headers& headers);

// JSON values nest at most this deep where courier parses them (headers, payloads it writes as
// JSON, CDC logical messages): re-serializing recurses once per level, and a row of a few
// hundred kilobytes of '[' would otherwise overflow the stack.
inline constexpr size_t kMaxJsonDepth = 256;
// Whether `text` is one JSON value (RFC 8259, UTF-8, whitespace around it) nesting at most
// `max_depth` (≤ kMaxJsonDepth) deep, whose numbers are finite as doubles: what the JSON
// library courier and its readers parse with accepts, checked without building anything. A
// byte order mark is not JSON text here.
bool IsJsonText(std::string_view text, size_t max_depth = kMaxJsonDepth);
// Whether the arrays and objects of `json` (valid or not) nest at most `max_depth` deep.
bool JsonDepthWithin(std::string_view json, size_t max_depth = kMaxJsonDepth);

// The length of the UTF-8 sequence at text[i] (RFC 3629: no overlong forms, no surrogates,
// nothing past U+10FFFF, none cut short), or 0 when there is none.
size_t Utf8SequenceLength(std::string_view text, size_t i);

// `text` as a JSON string the way PostgreSQL's escape_json writes it (and the JSON library's
// dump, for UTF-8): \" \\ \b \f \n \r \t, other control characters as \u00xx, everything else
// (including non-ASCII) as is. Bytes that are not UTF-8 (a SQL_ASCII database) become U+FFFD, so
// the output is always valid JSON.
void AppendJsonString(std::string* out, std::string_view text);

// `text` with each NUL byte, and each byte that is not part of valid UTF-8, replaced by U+FFFD:
// what a PostgreSQL text column of a UTF-8 database takes. For messages (a dead letter's
// error) that quote bytes from elsewhere, where one bad byte would make the insert fail.
std::string StorableText(std::string_view text);

// A decimal integer that is the whole text (an optional '-', digits, nothing else, in range);
// nullopt otherwise. For values read from tables other programs write, where std::stoll
// would throw (and abort the relay) on NULL's empty text or on garbage.
std::optional<int64_t> ParseInt64(std::string_view text);

std::string Base64Encode(std::string_view bytes);
Result<std::string> Base64Decode(std::string_view text);

}  // namespace courier
