// Rendering of table changes (change.h): the event's envelope and courier's payload shape.
// Column values are already JSON (RenderColumn): the payload is written around them as text,
// never re-parsed, so a numeric keeps every digit and a jsonb column keeps jsonb's form.
#include "sources/cdc/change.h"

#include <nlohmann/json.hpp>

#include "sources/cdc/change_internal.h"
#include "sources/cdc/jsonb.h"
#include "sources/pgoutput.h"

namespace courier::cdc {
namespace internal {

const char* OpName(RowChange::Op op) {
  switch (op) {
    case RowChange::Op::kInsert:
      return "insert";
    case RowChange::Op::kUpdate:
      return "update";
    case RowChange::Op::kDelete:
      return "delete";
    case RowChange::Op::kRead:
      return "read";
    case RowChange::Op::kTruncate:
      return "truncate";
  }
  return "insert";
}

std::string ImageJson(const std::optional<std::vector<ColumnValue>>& image) {
  if (!image) return "null";
  std::string out = "{";
  for (const ColumnValue& c : *image) {
    if (out.size() > 1) out.push_back(',');
    AppendJsonString(&out, c.name);
    out.push_back(':');
    out.append(c.json.empty() ? "null" : c.json);
  }
  out.push_back('}');
  return out;
}

std::vector<const ColumnValue*> KeyValues(const RowChange& change) {
  std::vector<const ColumnValue*> values;
  const auto& image = change.after ? change.after : change.before;
  if (!image || change.op == RowChange::Op::kTruncate) return values;
  for (const std::string& k : change.key_columns) {
    for (const ColumnValue& c : *image) {
      if (c.name == k) {
        values.push_back(&c);
        break;
      }
    }
  }
  return values;
}

std::string IsoTimeUtc(int64_t unix_us) {
  int64_t secs = unix_us / 1000000, us = unix_us % 1000000;
  if (us < 0) us += 1000000, secs -= 1;
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) rem += 86400, days -= 1;
  // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  char buf[64];
  snprintf(buf, sizeof(buf), "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%06lldZ",
           static_cast<long long>(y), static_cast<long long>(m), static_cast<long long>(d),
           static_cast<long long>(rem / 3600), static_cast<long long>(rem / 60 % 60),
           static_cast<long long>(rem % 60), static_cast<long long>(us));
  return buf;
}

}  // namespace internal

namespace {

using internal::OpName;

// aggregate_id: one key column as text (a string's characters, a number's digits), a
// composite key as a JSON array of the values.
std::string AggregateId(const std::vector<const ColumnValue*>& key) {
  if (key.empty()) return "";
  if (key.size() == 1) {
    const std::string& json = key[0]->json;
    if (!json.empty() && json[0] == '"') {
      try {
        return nlohmann::json::parse(json).get<std::string>();
      } catch (const nlohmann::json::exception&) {
        return json;
      }
    }
    return json;
  }
  std::string out = "[";
  for (const ColumnValue* c : key) {
    if (out.size() > 1) out.push_back(',');
    out.append(c->json);
  }
  out.push_back(']');
  return out;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

std::string ChangeEventId(uint64_t commit_lsn, uint64_t position, uint64_t system_id) {
  // 122 free bits: the LSN's 64, then 58 bits of the position multiplied by an odd constant
  // (a bijection modulo 2^58) xor a hash of the cluster's identifier. Within one cluster two
  // changes share an id only if they share LSN and position; across clusters the hash keeps
  // equal positions apart.
  constexpr uint64_t kMask58 = (uint64_t{1} << 58) - 1;
  const uint64_t mixed = ((position * 0x9e3779b97f4a7c15ULL) ^ SplitMix64(system_id)) & kMask58;
  const uint64_t top = commit_lsn >> 4;                                           // 60 bits
  const uint64_t hi = ((top >> 12) << 16) | (uint64_t{8} << 12) | (top & 0xfff);  // version 8
  const uint64_t lo = (uint64_t{2} << 62) | ((commit_lsn & 0xf) << 58) | mixed;   // variant
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    const uint64_t word = i < 8 ? hi : lo;
    const auto b = static_cast<uint8_t>(word >> (56 - 8 * (i % 8)));
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0x0f]);
  }
  return out;
}

void RenderChange(const RowChange& change, ChangeFormat format, uint64_t system_id, Event* out) {
  out->aggregate_type =
      change.schema == "public" ? change.table : change.schema + "." + change.table;
  out->event_type = OpName(change.op);
  out->table_change = true;
  out->event_id = ChangeEventId(change.commit_lsn, change.position, system_id);
  out->version = Version{change.commit_lsn, change.position};
  out->created_at_us = change.commit_time_us;
  if (format == ChangeFormat::kDebezium) {
    internal::RenderDebezium(change, out);
    return;
  }
  out->aggregate_id = AggregateId(internal::KeyValues(change));
  std::string p = "{\"op\":";
  AppendJsonString(&p, OpName(change.op));
  p += ",\"before\":" + internal::ImageJson(change.before);
  p += ",\"after\":" + internal::ImageJson(change.after);
  if (!change.unavailable.empty()) {
    p += ",\"unavailable\":[";
    for (size_t i = 0; i < change.unavailable.size(); ++i) {
      if (i > 0) p.push_back(',');
      AppendJsonString(&p, change.unavailable[i]);
    }
    p.push_back(']');
  }
  p += ",\"source\":{\"lsn\":";
  AppendJsonString(&p, pgoutput::FormatLsn(change.commit_lsn));
  p += ",\"xid\":" + std::to_string(change.xid);
  p += ",\"commit_time\":";
  AppendJsonString(&p, internal::IsoTimeUtc(change.commit_time_us));
  p += ",\"schema\":";
  AppendJsonString(&p, change.schema);
  p += ",\"table\":";
  AppendJsonString(&p, change.table);
  p += change.snapshot ? ",\"snapshot\":true}}" : ",\"snapshot\":false}}";
  out->payload = std::move(p);
}

}  // namespace courier::cdc
