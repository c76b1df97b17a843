// Debezium's change-event envelope (change.h, ChangeFormat::kDebezium): the value its
// PostgreSQL connector writes with the JSON converter and schemas off, and its Kafka key, so
// a consumer written against Debezium reads courier's events unchanged. docs/table-cdc.md
// ("Debezium format") lists what matches and what differs.
#include <string>

#include "sources/cdc/change_internal.h"
#include "sources/cdc/jsonb.h"

namespace courier::cdc::internal {
namespace {

const char* DebeziumOp(RowChange::Op op) {
  switch (op) {
    case RowChange::Op::kInsert:
      return "c";
    case RowChange::Op::kUpdate:
      return "u";
    case RowChange::Op::kDelete:
      return "d";
    case RowChange::Op::kRead:
      return "r";
    case RowChange::Op::kTruncate:
      return "t";
  }
  return "c";
}

}  // namespace

void RenderDebezium(const RowChange& change, Event* out) {
  // The key: an object of the key columns, {"id":42}; none for a truncate (no row).
  const std::vector<const ColumnValue*> key = KeyValues(change);
  out->aggregate_id.clear();
  if (!key.empty()) {
    std::string k = "{";
    for (const ColumnValue* c : key) {
      if (k.size() > 1) k.push_back(',');
      AppendJsonString(&k, c->name);
      k.push_back(':');
      k.append(c->json);
    }
    k.push_back('}');
    out->aggregate_id = std::move(k);
  }
  // Debezium's ts_ms fields are milliseconds; both are the commit time here, so a redelivered
  // event is the same bytes.
  const std::string ts_ms = std::to_string(change.commit_time_us / 1000);
  const std::string lsn = std::to_string(change.commit_lsn);
  std::string p = "{\"before\":" + ImageJson(change.before);
  p += ",\"after\":" + ImageJson(change.after);
  p += ",\"source\":{\"version\":";
  AppendJsonString(&p, std::string("courier-") + COURIER_VERSION);
  p += ",\"connector\":\"postgresql\",\"name\":\"courier\",\"ts_ms\":" + ts_ms;
  p += ",\"snapshot\":";
  p += change.snapshot ? "\"true\"" : "\"false\"";
  p += ",\"db\":";
  AppendJsonString(&p, change.database);
  // sequence: Debezium's [last commit LSN, this LSN] as a JSON text of decimal strings.
  p += ",\"sequence\":";
  AppendJsonString(&p, "[\"" + lsn + "\",\"" + lsn + "\"]");
  p += ",\"schema\":";
  AppendJsonString(&p, change.schema);
  p += ",\"table\":";
  AppendJsonString(&p, change.table);
  p += ",\"txId\":" + (change.xid == 0 ? std::string("null") : std::to_string(change.xid));
  p += ",\"lsn\":" + lsn + ",\"xmin\":null}";
  p += ",\"op\":";
  AppendJsonString(&p, DebeziumOp(change.op));
  p += ",\"ts_ms\":" + ts_ms + ",\"transaction\":null}";
  out->payload = std::move(p);
}

}  // namespace courier::cdc::internal
