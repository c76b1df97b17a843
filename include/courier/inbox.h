// Inbox: idempotent consumers. At-least-once delivery brings duplicates; the inbox records
// (consumer, event_id) in the consumer's own database, in the same transaction as the
// handler's writes, so an event's effect commits exactly once per consumer.
//
//   PQexec(conn, "BEGIN");
//   courier::Inbox inbox("inventory");
//   auto fresh = inbox.Claim(conn, event.event_id);
//   if (!fresh.ok()) { PQexec(conn, "ROLLBACK"); /* retry later */ }
//   else if (*fresh) { ... the handler's writes ... }
//   PQexec(conn, "COMMIT");  // then acknowledge the message to the broker
//
// Or let Process() run the transaction around a handler. Any language can do the same with
// plain SQL, inside its transaction:
//   INSERT INTO courier_inbox (consumer, event_id) VALUES ('inventory', $1)
//   ON CONFLICT DO NOTHING          -- 1 row: new, handle it; 0 rows: a duplicate, skip it
// (SQLite: INSERT OR IGNORE ..., then changes()).
//
// Two consumers racing on the same event: PostgreSQL makes the second INSERT wait for the
// first transaction; if that commits, the second sees a duplicate, if it rolls back, the
// second claims the event. One effect, no deadlock (one row lock per claim).
//
// Thread-safety: an Inbox is immutable and may be shared; a connection is used from the
// calling thread only.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "courier/status.h"

struct pg_conn;
struct sqlite3;

namespace courier {

class Inbox {
 public:
  // `table` may be schema-qualified; it is quoted, never interpolated raw.
  explicit Inbox(std::string consumer, std::string table = "courier_inbox");

  // Records the event for this consumer inside the caller's open transaction. True when the
  // event is new (handle it in this transaction), false for a duplicate (skip it).
  // kFailedPrecondition when no transaction is open.
  Result<bool> Claim(pg_conn* conn, std::string_view event_id) const;
  Result<bool> Claim(sqlite3* db, std::string_view event_id) const;

  // BEGIN; Claim; the handler (only for a new event); COMMIT. A failing handler rolls the
  // claim back with its writes, so the event is handled again on redelivery. Returns whether
  // the handler ran.
  Result<bool> Process(pg_conn* conn, std::string_view event_id,
                       const std::function<Status(pg_conn*)>& handler) const;
  Result<bool> Process(sqlite3* db, std::string_view event_id,
                       const std::function<Status(sqlite3*)>& handler) const;

  // Deletes this consumer's entries older than `age`, `batch` rows per transaction, so that
  // consumers are never blocked for long. Returns how many were deleted. A duplicate arriving
  // after its entry was deleted is handled again: keep `age` above the longest redelivery
  // delay (broker retention, relay outages).
  Result<int64_t> Prune(pg_conn* conn, std::chrono::seconds age, int batch = 1000) const;
  Result<int64_t> Prune(sqlite3* db, std::chrono::seconds age, int batch = 1000) const;

  const std::string& consumer() const { return consumer_; }

 private:
  std::string consumer_;
  std::string table_;  // quoted
};

}  // namespace courier
