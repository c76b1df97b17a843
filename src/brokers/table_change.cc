#include "brokers/table_change.h"

#include <nlohmann/json.hpp>

#include "core/encoding.h"

namespace courier {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipSpace(std::string_view s, size_t i) {
  while (i < s.size() && IsSpace(s[i])) ++i;
  return i;
}

// s[i] is the opening quote: the index just past the closing one.
size_t StringEnd(std::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return s.size();
}

// s[i] starts a value: the index just past it.
size_t ValueEnd(std::string_view s, size_t i) {
  if (i >= s.size()) return s.size();
  if (s[i] == '"') return StringEnd(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = StringEnd(s, i);
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') --depth;
      ++i;
      if (depth == 0) return i;
    }
    return s.size();
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !IsSpace(s[i])) ++i;
  return i;
}

Result<TableChange::Kind> KindOf(const Event& e) {
  const std::string& t = e.event_type;
  if (t == "insert" || t == "update" || t == "read" || t == "c" || t == "u" || t == "r") {
    return TableChange::Kind::kUpsert;
  }
  if (t == "delete" || t == "d") return TableChange::Kind::kDelete;
  if (t == "truncate" || t == "t") return TableChange::Kind::kTruncate;
  return RejectedError("a table change of type '" + t +
                       "': expected insert, update, read, delete or truncate");
}

}  // namespace

std::string CompactJson(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  for (size_t i = 0; i < json.size();) {
    if (json[i] == '"') {
      const size_t end = StringEnd(json, i);
      out.append(json.substr(i, end - i));
      i = end;
    } else {
      if (!IsSpace(json[i])) out.push_back(json[i]);
      ++i;
    }
  }
  return out;
}

std::string_view JsonMember(std::string_view json, std::string_view name) {
  size_t i = SkipSpace(json, 0);
  if (i >= json.size() || json[i] != '{') return {};
  ++i;
  while (true) {
    i = SkipSpace(json, i);
    if (i < json.size() && json[i] == ',') i = SkipSpace(json, i + 1);
    if (i >= json.size() || json[i] != '"') return {};
    const size_t key_end = StringEnd(json, i);
    const std::string_view key = json.substr(i + 1, key_end - i - 2);
    i = SkipSpace(json, key_end);
    if (i >= json.size() || json[i] != ':') return {};
    i = SkipSpace(json, i + 1);
    const size_t value_end = ValueEnd(json, i);
    if (key == name) return json.substr(i, value_end - i);
    i = value_end;
  }
}

std::string CarryOver(std::string_view after, std::string_view held,
                      const std::vector<std::string>& columns) {
  std::string out(after);
  if (out.size() < 2 || out.back() != '}') return out;
  out.pop_back();
  bool empty = CompactJson(out) == "{";
  for (const std::string& column : columns) {
    if (!JsonMember(after, column).empty()) continue;
    const std::string_view value = JsonMember(held, column);
    if (value.empty()) continue;
    if (!empty) out.push_back(',');
    out += nlohmann::json(column).dump() + ":" + std::string(value);
    empty = false;
  }
  return out + "}";
}

Result<TableChange> ReadTableChange(const Event& e) {
  TableChange change;
  COURIER_ASSIGN_OR_RETURN(change.kind, KindOf(e));
  change.table = e.aggregate_type;
  change.key = e.aggregate_id;
  if (change.table.empty()) return RejectedError("a table change without its table");
  if (change.kind == TableChange::Kind::kTruncate) return change;
  if (change.key.empty()) {
    return RejectedError("a " + e.event_type + " of " + change.table + " without its key");
  }
  if (change.kind == TableChange::Kind::kDelete) return change;
  nlohmann::json payload = JsonDepthWithin(e.payload)
                               ? nlohmann::json::parse(e.payload, nullptr, false)
                               : nlohmann::json(nlohmann::json::value_t::discarded);
  if (payload.is_discarded() || !payload.is_object()) {
    return RejectedError("the " + e.event_type + " of " + change.table + " " + change.key +
                         " has a payload that is no JSON object");
  }
  std::string_view body = e.payload;
  // Debezium's converters with schemas on wrap the envelope: {"schema":{..},"payload":{..}}.
  if (!payload.contains("after") && payload.contains("payload") && payload["payload"].is_object()) {
    body = JsonMember(body, "payload");
    payload = payload["payload"];
  }
  if (!payload.contains("after") || !payload["after"].is_object()) {
    return RejectedError("the " + e.event_type + " of " + change.table + " " + change.key +
                         " carries no row: its payload has no \"after\" object");
  }
  change.after = CompactJson(JsonMember(body, "after"));
  if (payload.contains("unavailable") && payload["unavailable"].is_array()) {
    for (const auto& column : payload["unavailable"]) {
      if (column.is_string()) change.unavailable.push_back(column.get<std::string>());
    }
  }
  return change;
}

}  // namespace courier
