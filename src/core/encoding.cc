#include "core/encoding.h"

#include <charconv>
#include <nlohmann/json.hpp>

namespace courier {

using nlohmann::json;

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
  // Too deep a payload is written as bytes, like one that is not JSON.
  json payload = JsonDepthWithin(e.payload)
                     ? json::parse(e.payload, nullptr, /*allow_exceptions=*/false)
                     : json(json::value_t::discarded);
  if (!e.payload.empty() && !payload.is_discarded()) {
    j["payload"] = std::move(payload);
  } else {
    j["payload_base64"] = Base64Encode(e.payload);
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<Event> EventFromJsonLine(std::string_view line) {
  // The line's object holds a payload of at most kMaxJsonDepth levels.
  if (!JsonDepthWithin(line, kMaxJsonDepth + 1)) {
    return InvalidArgumentError("JSON nests too deep");
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
    e.payload = j["payload"].dump();
  } else if (j.contains("payload_base64")) {
    ASSIGN_OR_RETURN(e.payload, Base64Decode(j.value("payload_base64", "")));
  }
  return e;
}

}  // namespace courier
