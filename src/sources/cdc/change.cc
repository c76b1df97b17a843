// Rendering of table changes (change.h). A first version: values as JSON strings except
// booleans and integers, courier's shape only.
#include "sources/cdc/change.h"

#include <nlohmann/json.hpp>

#include "sources/cdc/decode.h"
#include "sources/pgoutput.h"

namespace courier::cdc {
namespace {

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

nlohmann::json Image(const std::optional<std::vector<ColumnValue>>& image) {
  if (!image) return nullptr;
  nlohmann::json j = nlohmann::json::object();
  for (const ColumnValue& c : *image) j[c.name] = nlohmann::json::parse(c.json);
  return j;
}

}  // namespace

void RenderChange(const RowChange& change, ChangeFormat /*format*/, uint64_t system_id,
                  Event* out) {
  out->aggregate_type =
      change.schema == "public" ? change.table : change.schema + "." + change.table;
  const auto& image = change.after ? change.after : change.before;
  nlohmann::json key = nlohmann::json::array();
  if (image) {
    for (const std::string& k : change.key_columns) {
      for (const ColumnValue& c : *image) {
        if (c.name == k) key.push_back(nlohmann::json::parse(c.json));
      }
    }
  }
  if (key.size() == 1) {
    out->aggregate_id = key[0].is_string() ? key[0].get<std::string>() : key[0].dump();
  } else {
    out->aggregate_id = key.empty() ? "" : key.dump();
  }
  out->event_type = OpName(change.op);
  out->table_change = true;
  out->event_id = MessageEventId(change.commit_lsn + change.position, system_id);
  out->version = Version{change.commit_lsn, change.position};
  out->created_at_us = change.commit_time_us;
  nlohmann::json p = {
      {"op", OpName(change.op)}, {"before", Image(change.before)}, {"after", Image(change.after)}};
  if (!change.unavailable.empty()) p["unavailable"] = change.unavailable;
  p["source"] = {{"lsn", pgoutput::FormatLsn(change.commit_lsn)},
                 {"xid", change.xid},
                 {"commit_time_us", change.commit_time_us},
                 {"schema", change.schema},
                 {"table", change.table},
                 {"snapshot", change.snapshot}};
  out->payload = p.dump();
}

std::string RenderColumn(uint32_t type_oid, std::string_view text) {
  switch (type_oid) {
    case 16:  // bool
      return text == "t" ? "true" : "false";
    case 20:  // int8
    case 21:  // int2
    case 23:  // int4
      return std::string(text);
    default:
      return nlohmann::json(std::string(text)).dump();
  }
}

}  // namespace courier::cdc
