// The relay: moves committed outbox events to a sink, in order per aggregate, checkpointing
// (deleting, or stamping published_at) only after the sink acknowledged them.
//
//   courier::RelayOptions options;
//   options.source_url = "postgres://app@127.0.0.1/app";
//   options.sink_url = "kafka://127.0.0.1:9092/{aggregate_type}";
//   auto relay = courier::Relay::Create(options);
//   if (!relay.ok()) ...;
//   std::thread t([&] { auto st = (*relay)->Run(); });
//   ... (*relay)->RequestStop(); t.join();
//
// Thread-safety: Run() is called from one thread; RequestStop() and stats() from any thread,
// and RequestStop() also from a signal handler.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "courier/status.h"

namespace courier {

struct RelayOptions {
  std::string source_url;  // postgres://... or sqlite:///path.db
  std::string sink_url;    // kafka://host:port/topic-template or file:///path.jsonl
  // Fan-out: also publish to these; an event is done only once every sink acked it.
  std::vector<std::string> extra_sink_urls;
  std::string outbox_table = "courier_outbox";
  std::string dead_letter_table = "courier_dead_letter";
  // kCdc reads committed inserts from PostgreSQL's write-ahead log through a logical
  // replication slot (created if missing) instead of polling the table.
  enum class Mode { kPoll, kCdc };
  Mode mode = Mode::kPoll;
  std::string slot;         // CDC: empty means courier_<database>_<table>
  std::string publication;  // CDC: empty means the outbox table's name
  size_t batch_size = 1000;
  std::chrono::milliseconds poll_interval{100};
  // Retain mode: stamp published_at instead of deleting; delete after `retention`.
  bool retain = false;
  std::chrono::milliseconds retention = std::chrono::hours(24 * 7);
  std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
  // Zero: an event waits for its ack as long as the broker is away (the backlog stays in the
  // database). Non-zero: unacked events count as failed after this long and are retried.
  std::chrono::milliseconds delivery_timeout{0};
  // On stop: how long to wait for in-flight acks before leaving them for the next run.
  std::chrono::milliseconds shutdown_timeout{10000};
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30000};
  // Drain what is pending and return; any failure ends the run with its Status.
  bool once = false;
};

struct RelayStats {
  int64_t published = 0;      // acked by the sink and checkpointed
  int64_t dead_lettered = 0;  // rejected for good, parked in the dead-letter table
  int64_t retries = 0;        // failed attempts that will be retried
};

class Relay {
 public:
  // kInvalidArgument for an unknown source or sink scheme or a bad setting.
  static Result<std::unique_ptr<Relay>> Create(const RelayOptions& options);
  virtual ~Relay() = default;

  // Runs until RequestStop() (then drains in-flight acks and returns Ok), or in `once` mode
  // until nothing is pending. Returns early only for errors retrying cannot fix (missing
  // table, bad settings) — or, in `once` mode, for any error.
  virtual Status Run() = 0;
  virtual void RequestStop() = 0;
  virtual RelayStats stats() const = 0;
};

}  // namespace courier
