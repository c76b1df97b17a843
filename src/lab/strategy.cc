// What the strategies share (lab/strategy.h): the orders workload's event and SQL, the fault
// points, and the default lab side (order tables in, lab_order_log against the topic).
#include "lab/strategy.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "brokers/kafka/kafka_reader.h"
#include "lab/lab_db.h"

namespace courier::lab {

Event OrderEvent(const Command& c) {
  Event e;
  e.event_id = c.event_id;
  e.aggregate_type = "order";
  e.aggregate_id = c.order_id;
  e.event_type = c.version == 1 ? "OrderPlaced" : "OrderUpdated";
  e.payload = "{\"order_id\":\"" + c.order_id + "\",\"version\":" + std::to_string(c.version) + "}";
  return e;
}

void HitFault(const Command& c, Fault where) {
  if (c.fault != where || where == Fault::kNone) return;
  std::fflush(nullptr);
  kill(getpid(), SIGKILL);
  pause();  // SIGKILL cannot be caught; nothing after this runs
}

std::string WriteOrderSql(const Command& c) {
  // Ids are the lab's own ([a-z0-9-]), never user input: plain literals are safe here.
  const std::string v = std::to_string(c.version);
  return "INSERT INTO lab_orders(order_id, version) VALUES ('" + c.order_id + "', " + v +
         ") ON CONFLICT (order_id) DO UPDATE SET version = excluded.version;"
         "INSERT INTO lab_order_log(event_id, order_id, version, ok) VALUES ('" +
         c.event_id + "', '" + c.order_id + "', " + v + ", " + (c.commit_fails ? "0" : "1") + ");";
}

std::string SideDbUrl(const LabEnv& env) {
  if (env.schema.empty()) return env.db_url;
  const char sep = env.db_url.find('?') == std::string::npos ? '?' : '&';
  return env.db_url + sep + "application_name=courier-lab-" + env.schema;
}

Status Strategy::Prepare(const LabEnv& env) {
  COURIER_ASSIGN_OR_RETURN(auto db, LabDb::Open(env.db_url, env.schema));
  return db->Exec(
      "CREATE TABLE IF NOT EXISTS lab_ok (id INTEGER PRIMARY KEY);"
      "INSERT INTO lab_ok(id) VALUES (1) ON CONFLICT DO NOTHING;"
      "CREATE TABLE IF NOT EXISTS lab_orders (order_id TEXT PRIMARY KEY, version BIGINT NOT "
      "NULL);"
      "CREATE TABLE IF NOT EXISTS lab_order_log (event_id TEXT PRIMARY KEY, order_id TEXT NOT "
      "NULL, version BIGINT NOT NULL, ok INTEGER NOT NULL REFERENCES lab_ok(id) DEFERRABLE "
      "INITIALLY DEFERRED);");
}

Result<Expectation> Strategy::Committed(const LabEnv& env) {
  COURIER_ASSIGN_OR_RETURN(auto db, LabDb::Open(env.db_url, env.schema));
  COURIER_ASSIGN_OR_RETURN(auto ids, db->Column("SELECT event_id FROM lab_order_log"));
  Expectation expected;
  for (const auto& id : ids) {
    if (id) expected.committed.insert(*id);
  }
  return expected;
}

Result<std::vector<DeliveredRecord>> Strategy::Delivered(const LabEnv& env) {
  COURIER_ASSIGN_OR_RETURN(auto reader, KafkaReader::Open(env.bootstrap, {env.topic}, true));
  COURIER_ASSIGN_OR_RETURN(auto records, reader->ReadToEnd(std::chrono::seconds(60)));
  std::vector<DeliveredRecord> out;
  out.reserve(records.size());
  for (const KafkaRecord& r : records) {
    const Event& e = r.event;
    // The payload is OrderEvent's: its version is the event's place among its order's.
    const size_t pos = e.payload.find("\"version\":");
    const int64_t version =
        pos == std::string::npos ? -1 : std::atoll(e.payload.c_str() + pos + 10);
    out.push_back({e.event_id, e.aggregate_id, version});
  }
  return out;
}

}  // namespace courier::lab
