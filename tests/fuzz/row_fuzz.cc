// Outbox rows into events, and events into JSON and back. The input is one row as text
// columns separated by 0x1E: event_id, aggregate_type, aggregate_id, event_type, payload,
// headers (the headers column's JSON), created_at (a timestamptz as pgoutput sends it).
// Missing columns are empty. The whole input is also read as a JSON line (EventFromJsonLine).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "sources/pgoutput.h"

namespace {

using namespace courier;
using nlohmann::json;

bool ValidUtf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

std::vector<std::string> Columns(std::string_view in) {
  std::vector<std::string> columns;
  while (true) {
    const size_t sep = in.find('\x1e');
    columns.emplace_back(in.substr(0, sep));
    if (sep == std::string_view::npos) break;
    in.remove_prefix(sep + 1);
  }
  columns.resize(std::max<size_t>(columns.size(), 7));
  return columns;
}

// The scanner that decides whether a payload goes into the line as JSON accepts what the JSON
// library accepts (within the depth bound; NUL bytes end the library's input early, and it
// skips a leading byte order mark, so those are left out of the comparison).
void CheckJsonText(std::string_view text) {
  const bool ours = IsJsonText(text);
  if (text.find('\0') != std::string_view::npos || text.rfind("\xEF\xBB\xBF", 0) == 0 ||
      !JsonDepthWithin(text)) {
    if (ours && text.find('\0') != std::string_view::npos) std::abort();
    return;
  }
  if (ours != json::accept(text)) std::abort();
}

// The line a sink writes directly is the one the JSON library's dump gives, byte for byte.
void CheckDirectLine(const Event& e) {
  std::string direct = "prefix";
  AppendEventJsonLine(e, &direct);
  if (direct != "prefix" + internal::EventToJsonLineByValue(e)) std::abort();
}

// JSON written for an event reads back as the same event.
void CheckJsonRoundTrip(const Event& e) {
  const std::string line = EventToJsonLine(e);
  auto back = EventFromJsonLine(line);
  if (!back.ok()) std::abort();
  for (const std::string* s : {&e.event_id, &e.aggregate_type, &e.aggregate_id, &e.event_type}) {
    if (!ValidUtf8(*s)) return;  // replaced on the way out: nothing to compare
  }
  if (back->event_id != e.event_id || back->aggregate_type != e.aggregate_type ||
      back->aggregate_id != e.aggregate_id || back->event_type != e.event_type ||
      back->created_at_us != e.created_at_us || back->headers != e.headers) {
    std::abort();
  }
  // The payload comes back byte for byte; JSON text only has its line breaks (whitespace
  // between tokens) turned into spaces.
  std::string expected = e.payload;
  if (!json::parse(line).contains("payload_base64")) {
    for (char& c : expected) {
      if (c == '\n' || c == '\r') c = ' ';
    }
  }
  if (back->payload != expected) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)EventFromJsonLine(in);

  const std::vector<std::string> c = Columns(in);
  Event e;
  e.event_id = c[0];
  e.aggregate_type = c[1];
  e.aggregate_id = c[2];
  e.event_type = c[3];
  e.payload = c[4];
  auto headers = HeadersFromJson(c[5]);
  if (headers.ok()) {
    // Headers written back to JSON read as the same headers.
    auto again = HeadersFromJson(HeadersToJson(*headers));
    if (!again.ok() || *again != *headers) std::abort();
    e.headers = std::move(headers).value();
  }
  e.created_at_us = pgoutput::ParseTimestamp(c[6]).value_or(0);
  CheckJsonRoundTrip(e);
  CheckJsonText(in);
  CheckJsonText(c[4]);
  CheckDirectLine(e);
  // Headers out of order and written twice (the last one kept).
  e.headers.emplace_back(c[1], c[2]);
  e.headers.emplace_back(c[3], c[0]);
  e.headers.emplace_back(c[1], c[3]);
  CheckDirectLine(e);
  (void)Base64Decode(in);
  return 0;
}
