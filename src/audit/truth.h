// The audit's truth: the events a database says were committed, and which of them were
// published (published_at set), read from a retained outbox (PostgreSQL or SQLite) or a
// PostgreSQL event store, in key order, a page at a time.
//
// Thread-safety: a TruthReader is used by one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier {

struct TruthEvent {
  std::string event_id;
  std::string aggregate_type;  // an event store's stream type
  std::string aggregate_id;    // its stream id
  std::string event_type;
  // Orders the events of one aggregate: the outbox row's id, the event store's version.
  int64_t seq = 0;
  bool published = false;
  int64_t created_at_us = 0;
};

class TruthReader {
 public:
  virtual ~TruthReader() = default;
  // Every event of the table in key order (the outbox's id, the store's position).
  virtual Status ForEach(const std::function<void(const TruthEvent&)>& each) = 0;
  // The events of `event_ids` as the relay publishes them (envelope, headers, payload), in
  // key order; ids the table does not have are left out.
  virtual Result<std::vector<Event>> Events(const std::vector<std::string>& event_ids) = 0;
  // Of `event_ids`, those the table holds now (looked up a batch of ids per query): events
  // committed after ForEach read the table are found here.
  virtual Result<std::set<std::string>> Present(const std::vector<std::string>& event_ids) = 0;
  // The database's time when the reader was opened, in Unix microseconds: where the window of
  // an outbox that holds no row starts.
  virtual int64_t opened_at_us() const = 0;
  // --since in Unix microseconds, as the database read it; 0 without --since.
  virtual int64_t since_us() const = 0;
  // "courier_outbox in postgres://…" without secrets.
  virtual std::string Describe() const = 0;
};

// Connects and checks the table exists (kNotFound naming it and the migrate command) and that
// --since is a time (kInvalidArgument).
Result<std::unique_ptr<TruthReader>> OpenTruth(const AuditOptions& options);

}  // namespace courier
