// The database of `courier consume`: one connection, PostgreSQL or SQLite, reopened after a
// failure, holding the inbox (courier/inbox.h) and the parked events (courier_inbox_parked).
//
// Thread-safety: one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/event.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "courier/inbox.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

// A row of the parked table.
struct ParkedEvent {
  int64_t id = 0;
  std::string consumer;
  std::string event_id;
  std::string event;  // the event as a JSON line (core/encoding.h)
  std::string error;
  int64_t attempts = 0;
  std::string parked_at;
};

class InboxDb {
 public:
  explicit InboxDb(SourceLocation loc) : loc_(std::move(loc)) {}

  Status Connect();
  // Drops the connection; the next call opens a new one.
  void Reset();

  // Claims the event and runs `handler` in one transaction; whether the handler ran (false: a
  // duplicate). Statements `handler` runs through this object are part of the transaction.
  Result<bool> Process(const Inbox& inbox, const std::string& event_id,
                       const std::function<Status()>& handler);
  Result<int64_t> Prune(const Inbox& inbox, std::chrono::seconds age);

  Status Park(const std::string& table, const std::string& consumer, const Event& e,
              const std::string& error, int attempts);
  // The consumer's parked events, oldest first: those with `ids` (all when empty), at most
  // `limit`.
  Result<std::vector<ParkedEvent>> ListParked(const std::string& table, const std::string& consumer,
                                              const std::vector<int64_t>& ids, int64_t limit);
  // Deletes a parked event; whether it was there.
  Result<bool> DeleteParked(const std::string& table, const std::string& consumer, int64_t id);
  // Records another failed attempt of a parked event.
  Status UpdateParked(const std::string& table, int64_t id, const std::string& error);

 private:
  // Runs one statement with text parameters ($1.. on PostgreSQL, ?1.. on SQLite); the rows
  // it changed, and its result rows as text when `rows` is given.
  Result<int64_t> Run(const std::string& sql, const std::vector<std::string>& params,
                      std::vector<std::vector<std::string>>* rows = nullptr);

  SourceLocation loc_;
  PgConn pg_;
  SqliteDb lite_;
};

}  // namespace courier
