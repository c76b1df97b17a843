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

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "courier/status.h"

namespace courier {

class Clock;        // core/clock.h: time and sleeping
class FaultPoints;  // core/fault_points.h: named places where a test makes the relay fail

// Defaults the relay's parts share with RelayOptions, defined once: how long an idle source
// waits before polling again, and the active relay's lease.
inline constexpr std::chrono::milliseconds kDefaultPollInterval{100};
inline constexpr std::chrono::milliseconds kDefaultLease{5000};

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
  std::string slot;  // CDC: empty means courier_<database>_<table>
  // kDebezium (CDC only): the outbox has Debezium's outbox shape (id uuid, aggregatetype,
  // aggregateid, type, payload) and is read as Debezium's Outbox Event Router reads it: key
  // aggregateid, value payload, header `id`; the default route is outbox.event.{aggregatetype}.
  // kEventStore: `outbox_table` is an event store (include/courier/event_store.h;
  // courier_events unless named): its events go out in position order, never past a position
  // whose transaction may still commit, each with the headers `version` and `position`
  // (aggregate_type = stream_type, aggregate_id = stream_id); published_at is stamped after
  // the ack and nothing is deleted. Polling PostgreSQL, one shard.
  enum class OutboxFormat { kCourier, kDebezium, kEventStore };
  OutboxFormat outbox_format = OutboxFormat::kCourier;
  std::string publication;  // CDC: empty means the outbox table's name
  // CDC: tables whose inserts, updates, deletes and truncates are published too, beside the
  // outbox's events ("public.products, public.orders (id, status) WHERE (status <> 'x')";
  // docs/table-cdc.md), and the shape of their events: courier's or Debezium's envelope.
  std::vector<std::string> capture;
  enum class ChangeFormat { kCourier, kDebezium };
  ChangeFormat change_format = ChangeFormat::kCourier;
  size_t batch_size = 1000;
  // PostgreSQL (polling, and CDC of the outbox): batches whose checkpoint (the DELETE, or the
  // stamp) may still be committing, on a connection of its own, while the next ones are
  // fetched and published; those queued together commit in one transaction. 0: each batch's
  // checkpoint commits before the next batch is fetched. A crash repeats up to this many
  // batches more.
  size_t checkpoints_in_flight = 4;
  std::chrono::milliseconds poll_interval = kDefaultPollInterval;
  // Retain mode: stamp published_at instead of deleting; delete after `retention`.
  bool retain = false;
  std::chrono::milliseconds retention = std::chrono::hours(24 * 7);
  std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
  // Zero: an event waits for its ack as long as the broker is away (the backlog stays in the
  // database). Non-zero: unacked events count as failed after this long and are retried.
  std::chrono::milliseconds delivery_timeout{0};
  // On stop: how long to wait for in-flight acks before leaving them for the next run.
  std::chrono::milliseconds shutdown_timeout{10000};
  // An event the sink refuses for good (too large, malformed, 4xx) goes to the dead-letter
  // table. kPark (default): the later events of its aggregate wait there behind it (status
  // held) until `courier dead-letters retry` or `drop` resolves it; other aggregates flow.
  // kSkip: the aggregate's later events go on without it.
  enum class DeadLetterPolicy { kPark, kSkip };
  DeadLetterPolicy dead_letter_policy = DeadLetterPolicy::kPark;
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30000};
  // PostgreSQL: the active relay's lease. It renews it every lease/4 and stops publishing
  // when 3/4 of it passed without a renewal; a standby takes over once it expired.
  std::chrono::milliseconds lease = kDefaultLease;
  // Polling PostgreSQL scale-out: this relay publishes only the aggregates whose
  // hashtext(aggregate_id) falls in the shard_index-th of shard_count equal ranges; each
  // shard has its own lease (and standbys). Per-aggregate order holds: an aggregate is in
  // one shard.
  int shard_index = 0;
  int shard_count = 1;
  // Drain what is pending and return; any failure ends the run with its Status.
  bool once = false;
  // Injected, as leveldb passes its Env (not owned; they outlive the relay). The clock times
  // backoff, the lease, retention and the release of dead letters; null: the real clock.
  // Fault points: null in normal runs (the courier binary sets them from COURIER_FAILPOINTS).
  Clock* clock = nullptr;
  FaultPoints* fault_points = nullptr;
};

struct RelayStats {
  // Upper bounds (seconds) of the commit-to-ack latency histogram's buckets; +Inf is count.
  static constexpr std::array<double, 12> kLatencyBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                             0.5,   1,    2.5,   5,    10,  60};
  enum class State { kStarting, kStandby, kActive, kRetrying, kStopped };

  State state = State::kStarting;
  std::string last_error;     // of the last failed attempt (kRetrying)
  int64_t published = 0;      // acked by the sink and checkpointed
  int64_t dead_lettered = 0;  // rejected for good, parked in the dead-letter table
  int64_t held = 0;           // moved to the dead-letter table behind a parked event
  int64_t republished = 0;    // dead letters published again (retried or released), acked
  int64_t retries = 0;        // failed attempts that will be retried
  // Events handed to the sink and not answered yet (0 between batches), and when that
  // hand-off began: a sink that is away keeps them waiting (readiness, relay/metrics.h).
  int64_t awaiting_ack = 0;
  std::chrono::steady_clock::time_point awaiting_since{};
  // Commit (created_at) to sink ack, per published event: cumulative bucket counts.
  std::array<int64_t, kLatencyBuckets.size()> latency_buckets{};
  int64_t latency_count = 0;
  double latency_sum_s = 0;
  // Per captured table (`schema.table`; table CDC, --capture): its changes published, and the
  // commit-to-ack time of the last one (seconds): how far behind its changes arrive.
  struct CapturedTable {
    int64_t published = 0;
    double last_lag_s = 0;
  };
  std::map<std::string, CapturedTable> captured;
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
