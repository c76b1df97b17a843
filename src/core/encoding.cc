#include "core/encoding.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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

namespace {

// Whether `text` is UTF-8 as the JSON library's dump checks it (RFC 3629: no overlong forms,
// no surrogates, nothing past U+10FFFF, no sequence cut short).
bool ValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    // ASCII runs first: most text is.
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// IsJsonText's scanner: one pass, no allocation (a sink checks every payload).
class JsonScanner {
 public:
  JsonScanner(std::string_view text, size_t max_depth) : text_(text), max_depth_(max_depth) {}

  bool Text() {
    // The containers open around the current position: true for an object.
    bool in_object[kMaxJsonDepth + 1];
    size_t depth = 0;
    Space();
    while (true) {
      // A value.
      if (At('{') || At('[')) {
        const bool object = At('{');
        if (depth >= max_depth_ || depth >= kMaxJsonDepth) return false;
        in_object[depth++] = object;
        ++i_;
        Space();
        if (At(object ? '}' : ']')) {
          ++i_;
          --depth;
        } else {
          if (object && !Key()) return false;
          continue;
        }
      } else if (!Scalar()) {
        return false;
      }
      // After a value: a comma and the next one, or the end of containers.
      while (true) {
        Space();
        if (depth == 0) return i_ == text_.size();
        if (At(',')) {
          ++i_;
          Space();
          if (in_object[depth - 1] && !Key()) return false;
          break;
        }
        if (!At(in_object[depth - 1] ? '}' : ']')) return false;
        ++i_;
        --depth;
      }
    }
  }

 private:
  bool At(char c) const { return i_ < text_.size() && text_[i_] == c; }
  void Space() {
    while (i_ < text_.size() &&
           (text_[i_] == ' ' || text_[i_] == '\t' || text_[i_] == '\n' || text_[i_] == '\r')) {
      ++i_;
    }
  }
  // An object's "key": with the value's start.
  bool Key() {
    if (!At('"') || !String()) return false;
    Space();
    if (!At(':')) return false;
    ++i_;
    Space();
    return true;
  }
  bool Scalar() {
    if (At('"')) return String();
    if (Literal("true") || Literal("false") || Literal("null")) return true;
    return Number();
  }
  bool Literal(std::string_view word) {
    if (text_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  size_t Digits() {
    const size_t start = i_;
    while (i_ < text_.size() && text_[i_] >= '0' && text_[i_] <= '9') ++i_;
    return i_ - start;
  }
  // RFC 8259's number, which must also be finite as a double: 1e999, or an integer of more
  // than 308 digits, is refused by the JSON library the line's readers use.
  bool Number() {
    const size_t start = i_;
    if (At('-')) ++i_;
    if (At('0')) {
      ++i_;
    } else if (Digits() == 0) {
      return false;
    }
    bool integer = true;
    if (At('.')) {
      ++i_;
      integer = false;
      if (Digits() == 0) return false;
    }
    if (At('e') || At('E')) {
      ++i_;
      integer = false;
      if (At('+') || At('-')) ++i_;
      if (Digits() == 0) return false;
    }
    if (integer && i_ - start <= 19) return true;
    char small[128];
    std::string large;
    const char* token = small;
    if (i_ - start < sizeof small) {
      text_.copy(small, i_ - start, start);
      small[i_ - start] = '\0';
    } else {
      large.assign(text_.substr(start, i_ - start));
      token = large.c_str();
    }
    return std::isfinite(std::strtod(token, nullptr));
  }
  uint32_t Hex4() {
    if (i_ + 4 > text_.size()) return 0x110000;
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = text_[i_ + k];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return 0x110000;
      }
    }
    i_ += 4;
    return v;
  }
  // A string from its opening quote: no control characters, valid escapes (a \u surrogate
  // only as a high-low pair), valid UTF-8.
  bool String() {
    ++i_;
    size_t run = i_;  // bytes not yet checked as UTF-8
    while (i_ < text_.size()) {
      const unsigned char c = static_cast<unsigned char>(text_[i_]);
      if (c == '"') {
        if (!ValidUtf8(text_.substr(run, i_ - run))) return false;
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      if (c != '\\') {
        ++i_;
        continue;
      }
      if (!ValidUtf8(text_.substr(run, i_ - run))) return false;
      ++i_;
      if (i_ >= text_.size()) return false;
      const char e = text_[i_++];
      if (e == 'u') {
        const uint32_t u = Hex4();
        if (u > 0xFFFF || (u >= 0xDC00 && u <= 0xDFFF)) return false;
        if (u >= 0xD800 && u <= 0xDBFF) {
          if (!Literal("\\u")) return false;
          const uint32_t low = Hex4();
          if (low < 0xDC00 || low > 0xDFFF) return false;
        }
      } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
        return false;
      }
      run = i_;
    }
    return false;
  }

  std::string_view text_;
  size_t max_depth_;
  size_t i_ = 0;
};

}  // namespace

bool IsJsonText(std::string_view text, size_t max_depth) {
  return JsonScanner(text, max_depth).Text();
}

size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  size_t n = 0;
  uint32_t min = 0;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) {
    n = 2, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(k) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

void AppendJsonString(std::string* out, std::string_view text) {
  static const char* kHex = "0123456789abcdef";
  out->push_back('"');
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x80) {
      const size_t n = Utf8SequenceLength(text, i);
      if (n == 0) {
        out->append("\xef\xbf\xbd");  // U+FFFD
        ++i;
      } else {
        out->append(text.substr(i, n));
        i += n;
      }
      continue;
    }
    ++i;
    switch (c) {
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      default:
        if (u < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[u >> 4]);
          out->push_back(kHex[u & 0xf]);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

std::string StorableText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = text[i] == '\0' ? 0 : Utf8SequenceLength(text, i);
    if (n == 0) {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

Result<Headers> HeadersFromJson(std::string_view text) {
  Headers headers;
  // NULL's empty text, and the empty object most rows hold (the column's default), without
  // building a JSON value: a relay decodes one per event.
  if (text.empty()) return headers;
  const size_t first = text.find_first_not_of(" \t\n\r");
  const size_t last = text.find_last_not_of(" \t\n\r");
  if (first != std::string_view::npos && text[first] == '{' && text[last] == '}' &&
      text.substr(first + 1, last - first - 1).find_first_not_of(" \t\n\r") ==
          std::string_view::npos) {
    return headers;
  }
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

// Whether the payload goes into the line as JSON: JSON text, not too deep for the readers
// that parse the line again.
bool SpliceableJson(std::string_view payload) { return IsJsonText(payload); }

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

namespace {

// The line as a JSON value dumps it: the object's keys sorted, a header written twice kept
// last. What AppendEventJsonLine writes when it cannot write the same bytes itself.
std::string JsonLineByValue(const Event& e, std::string_view extra, bool spliced) {
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
  if (!spliced) j["payload_base64"] = Base64Encode(e.payload);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The same line written directly into `out`, without building a JSON value (a sink writes one
// per event); false, with `out` as it was, when that would not give the same bytes: the text
// is not valid UTF-8 (the value's dump replaces what is not), or there are more headers than
// it sorts here.
bool AppendJsonLineDirectly(const Event& e, bool spliced, std::string* out) {
  constexpr size_t kMaxHeaders = 32;
  if (e.headers.size() > kMaxHeaders) return false;
  for (const std::string* text : {&e.event_id, &e.aggregate_type, &e.aggregate_id, &e.event_type}) {
    if (!ValidUtf8(*text)) return false;
  }
  // The headers in key order (insertion sort: stable, so of a key written twice the last one
  // comes last, and is the one kept).
  const std::pair<std::string, std::string>* sorted[kMaxHeaders];
  size_t n = 0;
  for (const auto& header : e.headers) {
    if (!ValidUtf8(header.first) || !ValidUtf8(header.second)) return false;
    size_t at = n++;
    for (; at > 0 && header.first < sorted[at - 1]->first; --at) sorted[at] = sorted[at - 1];
    sorted[at] = &header;
  }
  out->append("{\"aggregate_id\":");
  AppendJsonString(out, e.aggregate_id);
  out->append(",\"aggregate_type\":");
  AppendJsonString(out, e.aggregate_type);
  out->append(",\"created_at_us\":");
  char digits[24];
  out->append(digits,
              static_cast<size_t>(
                  std::to_chars(digits, digits + sizeof digits, e.created_at_us).ptr - digits));
  out->append(",\"event_id\":");
  AppendJsonString(out, e.event_id);
  out->append(",\"event_type\":");
  AppendJsonString(out, e.event_type);
  out->append(",\"headers\":{");
  bool first = true;
  for (size_t i = 0; i < n; ++i) {
    if (i + 1 < n && sorted[i + 1]->first == sorted[i]->first) continue;  // written again later
    if (!first) out->push_back(',');
    first = false;
    AppendJsonString(out, sorted[i]->first);
    out->push_back(':');
    AppendJsonString(out, sorted[i]->second);
  }
  out->push_back('}');
  if (!spliced) {
    out->append(",\"payload_base64\":\"");
    out->append(Base64Encode(e.payload));
    out->push_back('"');
  }
  out->push_back('}');
  return true;
}

// The payload, as committed, in place of the line's closing '}': byte for byte, so big
// integers, duplicate keys and key order stay. A line break can only be whitespace between
// tokens in JSON text (strings hold them escaped); it becomes a space, so that the line stays
// one line.
void SplicePayload(std::string_view payload, std::string* line) {
  line->pop_back();
  line->append(",\"payload\":");
  const size_t start = line->size();
  line->append(payload);
  for (size_t i = start; i < line->size(); ++i) {
    if ((*line)[i] == '\n' || (*line)[i] == '\r') (*line)[i] = ' ';
  }
  line->push_back('}');
}

}  // namespace

void AppendEventJsonLine(const Event& e, std::string* out) {
  // Not JSON, or too deep: written as bytes.
  const bool spliced = SpliceableJson(e.payload);
  if (!AppendJsonLineDirectly(e, spliced, out)) out->append(JsonLineByValue(e, {}, spliced));
  if (spliced) SplicePayload(e.payload, out);
}

std::string EventToJsonLine(const Event& e, std::string_view extra) {
  std::string line;
  if (extra.empty()) {
    AppendEventJsonLine(e, &line);
    return line;
  }
  const bool spliced = SpliceableJson(e.payload);
  line = JsonLineByValue(e, extra, spliced);
  if (spliced) SplicePayload(e.payload, &line);
  return line;
}

namespace internal {

std::string EventToJsonLineByValue(const Event& e) {
  const bool spliced = SpliceableJson(e.payload);
  std::string line = JsonLineByValue(e, {}, spliced);
  if (spliced) SplicePayload(e.payload, &line);
  return line;
}

}  // namespace internal

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
