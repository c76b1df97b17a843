#include "core/encoding.h"

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace courier {

using nlohmann::json;

std::string Version::ToString() const {
  // A version without a minor part is only the 20 digits (what the cache stored before
  // versions had two parts); a prefix sorts first, so the text still sorts as versions compare.
  char text[48];
  if (minor == 0) {
    std::snprintf(text, sizeof text, "%020llu", static_cast<unsigned long long>(major));
  } else {
    std::snprintf(text, sizeof text, "%020llu.%020llu", static_cast<unsigned long long>(major),
                  static_cast<unsigned long long>(minor));
  }
  return text;
}

std::string Base64Encode(std::string_view bytes) {
  static constexpr char kTable[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t n =
        (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out.push_back(kTable[(n >> 18) & 63]);
    out.push_back(kTable[(n >> 12) & 63]);
    out.push_back(kTable[(n >> 6) & 63]);
    out.push_back(kTable[n & 63]);
  }
  if (i < bytes.size()) {
    uint32_t n = uint8_t(bytes[i]) << 16;
    if (i + 1 < bytes.size()) n |= uint8_t(bytes[i + 1]) << 8;
    out.push_back(kTable[(n >> 18) & 63]);
    out.push_back(kTable[(n >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kTable[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<int64_t> ParseInt64(std::string_view text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

Result<std::string> Base64Decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '=') break;
    const int v = value(c);
    if (v < 0) return InvalidArgumentError("invalid base64 character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

bool JsonDepthWithin(std::string_view text, size_t max_depth) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

Result<Headers> HeadersFromJson(std::string_view text) {
  Headers headers;
  if (text.empty()) return headers;
  if (!JsonDepthWithin(text)) {
    return InvalidArgumentError("headers nest deeper than " + std::to_string(kMaxJsonDepth) +
                                " levels");
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !(j.is_object() || j.is_null())) {
    return InvalidArgumentError("headers must be a JSON object, got: " +
                                std::string(text.substr(0, 80)));
  }
  if (j.is_null()) return headers;
  for (auto it = j.begin(); it != j.end(); ++it) {
    headers.emplace_back(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
  }
  return headers;
}

std::string HeadersToJson(const Headers& headers) {
  json j = json::object();
  for (const auto& [k, v] : headers) j[k] = v;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// Whether the payload goes into the line as JSON: valid JSON text (nlohmann's syntax check
// builds nothing, so big integers and duplicate keys pass as they are), not too deep for the
// readers that parse the line again.
// A NUL byte is never part of JSON text, but nlohmann's lexer takes it for the end of the
// input, so "1\0garbage" would pass: such a payload is bytes.
bool SpliceableJson(std::string_view payload) {
  return !payload.empty() && payload.find('\0') == std::string_view::npos &&
         JsonDepthWithin(payload) && json::accept(payload);
}

size_t SkipSpace(std::string_view text, size_t i) {
  while (i < text.size() &&
         (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) {
    ++i;
  }
  return i;
}

// The end of the string token that starts at text[i] ('"').
size_t SkipString(std::string_view text, size_t i) {
  for (++i; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;
    } else if (text[i] == '"') {
      return i + 1;
    }
  }
  return text.size();
}

// The end of the JSON value that starts at text[i].
size_t SkipValue(std::string_view text, size_t i) {
  if (i >= text.size()) return i;
  if (text[i] == '"') return SkipString(text, i);
  if (text[i] == '{' || text[i] == '[') {
    size_t depth = 0;
    for (; i < text.size(); ++i) {
      const char c = text[i];
      if (c == '"') {
        i = SkipString(text, i) - 1;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
    }
    return i;
  }
  while (i < text.size() &&
         std::string_view(",}] \t\n\r").find(text[i]) == std::string_view::npos) {
    ++i;
  }
  return i;
}

// The text of the last top-level member `key` of `object` (valid JSON text), with the
// whitespace around it: the bytes as written, where parsing and dumping would turn big integers
// into floats, drop duplicate keys and sort the others.
std::optional<std::string_view> MemberText(std::string_view object, std::string_view key) {
  std::optional<std::string_view> found;
  size_t i = SkipSpace(object, 0);
  if (i >= object.size() || object[i] != '{') return found;
  i = SkipSpace(object, i + 1);
  while (i < object.size() && object[i] == '"') {
    const size_t key_end = SkipString(object, i);
    const json name = json::parse(object.substr(i, key_end - i), nullptr, false);
    i = SkipSpace(object, key_end);
    if (i >= object.size() || object[i] != ':') break;
    // The whitespace around the value is part of it: a payload written with some comes
    // back with it.
    const size_t value_start = i + 1;
    const size_t value_end = SkipSpace(object, SkipValue(object, SkipSpace(object, value_start)));
    if (name.is_string() && name.get_ref<const std::string&>() == key) {
      found = object.substr(value_start, value_end - value_start);
    }
    i = value_end;
    if (i >= object.size() || object[i] != ',') break;
    i = SkipSpace(object, i + 1);
  }
  return found;
}

}  // namespace

std::string EventToJsonLine(const Event& e, std::string_view extra) {
  json j = json::object();
  if (!extra.empty()) {
    json x = json::parse(extra, nullptr, false);
    if (x.is_object()) j = std::move(x);
  }
  j["event_id"] = e.event_id;
  j["aggregate_type"] = e.aggregate_type;
  j["aggregate_id"] = e.aggregate_id;
  j["event_type"] = e.event_type;
  j["created_at_us"] = e.created_at_us;
  json h = json::object();
  for (const auto& [k, v] : e.headers) h[k] = v;
  j["headers"] = std::move(h);
  // Not JSON, or too deep: written as bytes.
  const bool spliced = SpliceableJson(e.payload);
  if (!spliced) j["payload_base64"] = Base64Encode(e.payload);
  std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (spliced) {
    // The payload goes in as committed, byte for byte: big integers, duplicate keys and key
    // order stay. A line break can only be whitespace between tokens in JSON text (strings
    // hold them escaped); it becomes a space, so that the line stays one line.
    line.pop_back();  // the closing '}'
    line += ",\"payload\":";
    const size_t start = line.size();
    line += e.payload;
    for (size_t i = start; i < line.size(); ++i) {
      if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    }
    line += '}';
  }
  return line;
}

Result<Event> EventFromJsonLine(std::string_view line) {
  // The line's object holds a payload of at most kMaxJsonDepth levels.
  if (!JsonDepthWithin(line, kMaxJsonDepth + 1)) {
    return InvalidArgumentError("JSON nests too deep");
  }
  // nlohmann's lexer ends the input at a NUL byte, which would let a line carry bytes after
  // its object.
  if (line.find('\0') != std::string_view::npos) {
    return InvalidArgumentError("not a JSON object: the line holds a NUL byte");
  }
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError("not a JSON object");
  // json::value() throws when a field has another type: such a line is an error.
  for (const char* field :
       {"event_id", "aggregate_type", "aggregate_id", "event_type", "payload_base64"}) {
    if (j.contains(field) && !j[field].is_string()) {
      return InvalidArgumentError(std::string(field) + " is not a string");
    }
  }
  if (j.contains("created_at_us") && !j["created_at_us"].is_number_integer()) {
    return InvalidArgumentError("created_at_us is not an integer");
  }
  Event e;
  e.event_id = j.value("event_id", "");
  e.aggregate_type = j.value("aggregate_type", "");
  e.aggregate_id = j.value("aggregate_id", "");
  e.event_type = j.value("event_type", "");
  e.created_at_us = j.value("created_at_us", int64_t{0});
  if (j.contains("headers") && j["headers"].is_object()) {
    for (auto it = j["headers"].begin(); it != j["headers"].end(); ++it) {
      e.headers.emplace_back(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
    }
  }
  if (j.contains("payload")) {
    // The payload's own bytes, not a dump of the parsed value.
    const std::optional<std::string_view> text = MemberText(line, "payload");
    e.payload = text ? std::string(*text) : j["payload"].dump();
  } else if (j.contains("payload_base64")) {
    COURIER_ASSIGN_OR_RETURN(e.payload, Base64Decode(j.value("payload_base64", "")));
  }
  return e;
}

}  // namespace courier
