#include "sources/cdc/decode.h"

#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/encoding.h"
#include "core/postgres.h"
#include "core/uuid.h"
#include "sources/postgres_common.h"

namespace courier::cdc {
namespace {

constexpr uint32_t kByteaOid = 17;

// A row of Debezium's outbox (the view's fields hold its columns: event_id its id): the
// event its Outbox Event Router publishes, with the header `id`, created at the commit.
void DecodeDebeziumRow(OutboxRow::View row, int64_t commit_time_us, DecodedRow* out) {
  const std::optional<std::string_view> id = row.event_id;
  row.id = "0";  // no row id: courier neither deletes nor stamps the application's rows
  char created[24];
  row.created_at_us = std::string_view(
      created, static_cast<size_t>(
                   std::to_chars(created, created + sizeof created, commit_time_us).ptr - created));
  row.headers.reset();
  DecodeOutboxRow(row, out);
  if (id) out->event.headers.emplace_back("id", *id);
  if (!out->error.empty()) {
    // The reason in the names of Debezium's columns.
    std::string why = out->error.substr(out->error.find(": ") + 2);
    for (const auto& [ours, theirs] : {std::pair<std::string, std::string>{"event_id", "id"},
                                       {"aggregate_type", "aggregatetype"},
                                       {"aggregate_id", "aggregateid"},
                                       {"event_type", "type"}}) {
      const std::string from = "column " + ours + " ";
      if (why.rfind(from, 0) == 0) why = "column " + theirs + " " + why.substr(from.size());
    }
    out->error = "outbox row " + std::string(id.value_or("with a NULL id")) + ": " + why;
    if (out->event.created_at_us == 0) out->event.created_at_us = commit_time_us;
  }
}

}  // namespace

OutboxColumns OutboxColumnsOf(const pgoutput::Relation& relation, TableNames::OutboxFormat format) {
  OutboxColumns c;
  if (format == TableNames::OutboxFormat::kDebezium) {
    c.debezium = true;
    for (size_t i = 0; i < relation.columns.size(); ++i) {
      const std::string& n = relation.columns[i].name;
      const int idx = static_cast<int>(i);
      if (n == "id") c.event_id = idx;
      if (n == "aggregatetype") c.aggregate_type = idx;
      if (n == "aggregateid") c.aggregate_id = idx;
      if (n == "type") c.event_type = idx;
      if (n == "payload") {
        c.payload = idx;
        c.payload_bytea = relation.columns[i].type_oid == kByteaOid;
      }
    }
    return c;
  }
  c.event_store = format == TableNames::OutboxFormat::kEventStore;
  for (size_t i = 0; i < relation.columns.size(); ++i) {
    const std::string& n = relation.columns[i].name;
    const int idx = static_cast<int>(i);
    if (c.event_store) {
      if (n == "position") c.id = idx;
      if (n == "stream_type") c.aggregate_type = idx;
      if (n == "stream_id") c.aggregate_id = idx;
      if (n == "version") c.version = idx;
    }
    if (n == "id" && !c.event_store) c.id = idx;
    if (n == "event_id") c.event_id = idx;
    if (n == "aggregate_type" && !c.event_store) c.aggregate_type = idx;
    if (n == "aggregate_id" && !c.event_store) c.aggregate_id = idx;
    if (n == "event_type") c.event_type = idx;
    if (n == "headers") c.headers = idx;
    if (n == "created_at") c.created_at = idx;
    if (n == "payload") {
      c.payload = idx;
      c.payload_bytea = relation.columns[i].type_oid == kByteaOid;
    }
  }
  return c;
}

void DecodeInsert(const OutboxColumns& c, const std::vector<pgoutput::Value>& values,
                  int64_t commit_time_us, DecodedRow* out) {
  auto column = [&values](int idx) -> std::optional<std::string_view> {
    if (idx < 0 || static_cast<size_t>(idx) >= values.size()) return std::nullopt;
    const pgoutput::Value& v = values[static_cast<size_t>(idx)];
    if (v.kind != pgoutput::Value::Kind::kText) return std::nullopt;
    return v.text;
  };
  OutboxRow::View row{column(c.id),           column(c.event_id),   column(c.aggregate_type),
                      column(c.aggregate_id), column(c.event_type), column(c.payload),
                      column(c.headers),      std::nullopt};
  std::string bytes;  // a bytea payload's bytes
  if (c.payload_bytea && row.payload) {
    bytes = UnescapeBytea(std::string(*row.payload));
    row.payload = bytes;
  }
  if (c.debezium) return DecodeDebeziumRow(row, commit_time_us, out);
  char micros[24];
  auto decimal = [&micros](int64_t v) {
    return std::string_view(
        micros, static_cast<size_t>(std::to_chars(micros, micros + sizeof micros, v).ptr - micros));
  };
  std::string quoted;  // an unusable created_at, as the pollers' SQL quotes it
  if (c.created_at < 0) {
    row.created_at_us = decimal(commit_time_us);  // an outbox without the column
  } else if (std::optional<std::string_view> text = column(c.created_at)) {
    if (const std::optional<int64_t> us = pgoutput::ParseTimestamp(*text)) {
      row.created_at_us = decimal(*us);
    } else {
      quoted = QuoteLiteral(*text);
      row.created_at_us = quoted;
    }
  }
  if (c.event_store) {
    DecodeEventStoreRow(row, column(c.version), out);
  } else {
    DecodeOutboxRow(row, out);
  }
  // The dead letter's created_at when the row's own is unusable.
  if (!out->error.empty() && out->event.created_at_us == 0) {
    out->event.created_at_us = commit_time_us;
  }
}

DecodedRow DecodeInsert(const OutboxColumns& columns, const std::vector<pgoutput::Value>& values,
                        int64_t commit_time_us) {
  DecodedRow d;
  DecodeInsert(columns, values, commit_time_us, &d);
  return d;
}

DecodedRow DecodeLogicalMessage(const pgoutput::Message& m, uint64_t system_id,
                                int64_t commit_time_us) {
  DecodedRow d;
  d.event.event_id = MessageEventId(m.message_lsn, system_id);
  d.event.created_at_us = commit_time_us;
  // Its payload and headers are serialized again, recursively: bound the depth first.
  if (!JsonDepthWithin(m.content)) {
    d.error = "logical message nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
    return d;
  }
  const nlohmann::json j = nlohmann::json::parse(m.content, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    d.error = "logical message is not a JSON object: " + std::string(m.content.substr(0, 200));
    return d;
  }
  auto field = [&](const char* name, std::string* out) {
    auto it = j.find(name);
    if (it != j.end() && it->is_string()) {
      *out = it->get<std::string>();
    } else if (d.error.empty()) {
      d.error = std::string("logical message lacks the string field \"") + name + "\"";
    }
  };
  field("aggregate_type", &d.event.aggregate_type);
  field("aggregate_id", &d.event.aggregate_id);
  field("event_type", &d.event.event_type);
  if (auto it = j.find("event_id"); it != j.end()) {
    if (it->is_string() && IsUuid(it->get<std::string>())) {
      d.event.event_id = it->get<std::string>();
    } else if (d.error.empty()) {
      d.error = "logical message has an event_id that is not a UUID";
    }
  }
  if (auto it = j.find("payload"); it != j.end()) d.event.payload = it->dump();
  if (auto it = j.find("headers"); it != j.end() && !it->is_null()) {
    auto headers = HeadersFromJson(it->dump());
    if (headers.ok()) {
      d.event.headers = std::move(headers).value();
    } else if (d.error.empty()) {
      d.error = headers.status().message();
    }
  }
  return d;
}

std::string MessageEventId(pgoutput::Lsn lsn, uint64_t system_id) {
  uint8_t b[16];
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(lsn >> (56 - 8 * i));
  b[6] = static_cast<uint8_t>(0x80 | ((system_id >> 60) & 0x0f));
  b[7] = static_cast<uint8_t>(lsn >> 8);
  b[8] = static_cast<uint8_t>(0x80 | ((system_id >> 54) & 0x3f));
  b[9] = static_cast<uint8_t>(lsn);
  for (int i = 10; i < 16; ++i) b[i] = static_cast<uint8_t>(system_id >> (8 * (15 - i)));
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0x0f]);
  }
  return out;
}

}  // namespace courier::cdc
