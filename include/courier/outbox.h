// Outbox writer: appends an event to the outbox table inside the caller's own, already open
// transaction, so the business rows and the event commit (or roll back) together.
//
//   PQexec(conn, "BEGIN");
//   ... business writes ...
//   courier::OutboxWriter writer;
//   auto id = writer.Append(conn, {.aggregate_type = "order", .aggregate_id = "42",
//                                  .event_type = "OrderCreated", .payload = R"({"id":42})"});
//   if (!id.ok()) { PQexec(conn, "ROLLBACK"); ... }
//   PQexec(conn, "COMMIT");
//
// Any language can do the same with plain SQL:
//   INSERT INTO courier_outbox(aggregate_type, aggregate_id, event_type, payload)
//   VALUES ('order', '42', 'OrderCreated', '{"id":42}');
//
// Thread-safety: an OutboxWriter is immutable and may be shared; the connection passed in is
// used from the calling thread only, as libpq and SQLite require.
#pragma once

#include <string>

#include "courier/event.h"
#include "courier/status.h"

struct pg_conn;
struct sqlite3;

namespace courier {

struct OutboxEvent {
  std::string aggregate_type;
  std::string aggregate_id;
  std::string event_type;
  std::string payload;   // JSON text for PostgreSQL's json column; any bytes for SQLite
  Headers headers;       // optional
  std::string event_id;  // optional; a fresh UUIDv7 when empty
};

class OutboxWriter {
 public:
  // `table` may be schema-qualified ("app.outbox"); it is quoted, never interpolated raw.
  explicit OutboxWriter(std::string table = "courier_outbox");

  // Returns the event_id written. kFailedPrecondition when no transaction is open: an event
  // written outside the business transaction would defeat the outbox.
  Result<std::string> Append(pg_conn* conn, const OutboxEvent& event) const;
  Result<std::string> Append(sqlite3* db, const OutboxEvent& event) const;

 private:
  std::string table_;
  std::string insert_pg_;
  std::string insert_sqlite_;
};

}  // namespace courier
