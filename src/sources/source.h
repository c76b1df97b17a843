// A Source hands the relay committed outbox events in order and, once the sink has acked
// them, checkpoints them (delete, or stamp published_at in retain mode) and parks rejected
// ones in the dead-letter table, in one local transaction.
//
// Thread-safety: a Source is used by one relay thread.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/event.h"
#include "courier/relay.h"
#include "courier/status.h"
#include "sources/cdc/change.h"
#include "stores/checkpoint_store.h"

namespace courier {

class FaultPoints;  // core/fault_points.h

// PostgreSQL keeps identifiers to 63 bytes (NAMEDATALEN - 1) and silently cuts longer ones.
inline constexpr size_t kMaxIdentifier = 63;

// Eight hex digits of a hash of `text` that never changes across builds and platforms: names
// derived with it must stay the same for the life of an installation.
std::string StableHash(std::string_view text);

// `name` + `suffix` ("app.orders" + "_lease" = "app.orders_lease"), the last component kept
// within kMaxIdentifier bytes: when it would be longer it is cut and followed by StableHash of
// the whole last component, so that names of different tables never meet in a cut prefix.
std::string DerivedName(const std::string& name, const std::string& suffix);

struct TableNames {
  std::string outbox = "courier_outbox";
  std::string dead_letter = "courier_dead_letter";
  // The outbox's shape: courier's (DESIGN §3), or Debezium's outbox table (id uuid,
  // aggregatetype, aggregateid, type, payload), read as Debezium's Outbox Event Router reads
  // it (docs/table-cdc.md, "Debezium's outbox"); that one is only read from the write-ahead
  // log, and its rows are left to the application. kEventStore: `outbox` names an event store
  // (courier_events, include/courier/event_store.h), whose rows are never deleted; its
  // snapshots and projection checkpoints live beside it.
  enum class OutboxFormat { kCourier, kDebezium, kEventStore };
  OutboxFormat outbox_format = OutboxFormat::kCourier;
  // Consumers' side (courier/inbox.h): created beside the outbox, as a service usually both
  // consumes and produces.
  std::string inbox = "courier_inbox";
  // Events `courier consume` gave up on, with the reason.
  std::string InboxParked() const { return DerivedName(inbox, "_parked"); }
  // CDC bookkeeping, beside the outbox: the slots courier created for it, and the rows that
  // were already in the outbox when a slot was created (drained before the stream).
  std::string CdcSlots() const { return DerivedName(outbox, "_cdc_slot"); }
  std::string CdcBackfill() const { return DerivedName(outbox, "_cdc_backfill"); }
  // Table capture (sources/cdc/capture_setup.h): the tables captured into this outbox's stream.
  std::string CdcCapture() const { return DerivedName(outbox, "_cdc_capture"); }
  // Leases of the active relays (stores/leadership.h): one row per outbox, or per shard.
  std::string Leases() const { return DerivedName(outbox, "_lease"); }
  // kEventStore: the streams' snapshots, and the projections' checkpoints (one row per
  // projection: the position it has applied up to).
  std::string Snapshots() const { return DerivedName(outbox, "_snapshots"); }
  std::string Projections() const { return DerivedName(outbox, "_projections"); }
  bool event_store() const { return outbox_format == OutboxFormat::kEventStore; }
};

// The table names of the event store `events` (courier migrate --event-store): its dead
// letters are those of the relay that publishes it, kept in the usual dead-letter table.
TableNames EventStoreTables(const std::string& events = "courier_events");

// PostgreSQL: kInvalidArgument, with one line, when a table name (or its schema) is longer
// than PostgreSQL keeps, as the server would silently cut it and mix it up with others.
Status CheckTableNames(const TableNames& tables);

// Change data capture from PostgreSQL's write-ahead log (sources/postgres_cdc.cc).
struct CdcOptions {
  bool enabled = false;
  // Empty: derived, unique per outbox (sources/postgres_cdc.cc, ResolveNames): for the slot
  // courier_<database>_<table>_<hash> (slot names are cluster-wide), for the publication the
  // table's name (<schema>_<table>_<hash> outside schema public).
  std::string slot;
  std::string publication;
  // How often the confirmed position is reported to the server even when nothing moved, so
  // the server never times out the stream while a sink is slow.
  Duration status_interval{10000};
  // Table capture: the --capture entries (sources/cdc/capture_setup.h), whose changes are
  // published beside the outbox's events, and the shape of their events.
  std::vector<std::string> capture;
  cdc::ChangeFormat change_format = cdc::ChangeFormat::kCourier;
};

struct SourceLocation {
  enum class Kind { kPostgres, kSqlite };
  Kind kind = Kind::kPostgres;
  std::string target;  // libpq URL, or the SQLite file path
};

// postgres://... | postgresql://... | sqlite:///abs/path.db | sqlite://relative.db
Result<SourceLocation> ParseSourceUrl(const std::string& url);

enum class CheckpointMode { kDelete, kRetain };

struct SourceOptions {
  std::string url;
  TableNames tables;
  CheckpointMode mode = CheckpointMode::kDelete;
  Duration poll_interval = kDefaultPollInterval;  // Wait()'s wait for new rows between polls
  CdcOptions cdc;  // enabled: read the write-ahead log instead of polling
  // Polling PostgreSQL: only the outbox rows that the CDC slot of this name recorded in its
  // backfill table (TableNames::CdcBackfill); the CDC source drains its backfill this way.
  std::string backfill_slot;
  // Polling PostgreSQL: only the aggregates of shard `shard_index` of `shard_count` (1: all).
  int shard_index = 0;
  int shard_count = 1;
  // Times Wait() and the CDC source's deadlines (not owned); null: the real clock.
  Clock* clock = nullptr;
  // PostgreSQL (polling, and CDC of an outbox): the batches whose checkpoint may be queued or
  // committing, on a connection of its own, while the next ones are fetched and published
  // (sources/pg_checkpointer.h); 0: each commits before Checkpoint() returns.
  size_t checkpoints_in_flight = 0;
  // PostgreSQL: once the stop given to Activate is requested, how long a checkpoint may still
  // wait (on a row another session keeps locked) before it is cancelled and left for the next
  // relay (sources/pg_checkpointer.h, CheckpointDeadline).
  Duration shutdown_timeout{10000};
  // Named places where crash tests stop the process (core/fault_points.h); null in normal runs.
  FaultPoints* fault_points = nullptr;
  // CDC: where the relay's position is kept, made for the slot's name once the source knows
  // it; empty: the slot table on the source's connection (MakeSlotTableCheckpoints).
  std::function<std::unique_ptr<CheckpointStore>(const std::string& slot)> checkpoints;
};

// The clock a source waits and measures deadlines by.
inline Clock& ClockOf(const SourceOptions& options) {
  return options.clock != nullptr ? *options.clock : Clock::Real();
}

// The SQL condition "aggregate_id of `alias` falls in shard `index` of `count`": equal ranges
// of hashtext(aggregate_id) & 0x7fffffff.
std::string ShardCondition(const std::string& alias, int index, int count);

// A dead letter's status (the `status` column): `parked` failed for good and holds back its
// aggregate's later events (policy park); `skipped` failed for good and did not (policy
// skip); `held` did not fail but waits behind a parked event of its aggregate; `retry` was
// queued by `courier dead-letters retry` for the active relay to publish again.
inline constexpr const char* kParked = "parked";
inline constexpr const char* kSkipped = "skipped";
inline constexpr const char* kHeld = "held";
inline constexpr const char* kRetry = "retry";

struct Rejected {
  int64_t id;
  std::string error;
  std::string status = kParked;
  // Its aggregate, when known: under the park policy the later events of it wait.
  std::string aggregate_type;
  std::string aggregate_id;
  std::string event_id;  // as read, when known (for the log line)
};

struct FetchedBatch {
  std::vector<Event> events;        // in id order
  std::vector<Rejected> malformed;  // rows that cannot be published as they are
  bool empty() const { return events.empty() && malformed.empty(); }
  size_t size() const { return events.size() + malformed.size(); }
};

class Source {
 public:
  virtual ~Source() = default;

  // Connects and checks the tables exist (kNotFound says to run courier migrate).
  virtual Status Open() = 0;
  // Called once this process is the outbox's only active relay (stores/leadership.h, which
  // the relay holds): prepares what only the active relay may touch (the CDC slot). `stop` is
  // the relay's, which outlives the connection: once it is requested, checkpoints wait at
  // most SourceOptions::shutdown_timeout more.
  virtual Status Activate(const StopSignal& stop) = 0;
  // Up to `max` pending events. Polling: rows in id order; rows of transactions still open
  // are not visible and so are picked up by a later call, whatever their id. CDC: commit
  // order; events handed out but neither acked nor rejected by the following Checkpoint()
  // come first in the next call. A row that cannot become an event (headers that are not a
  // JSON object) comes back in `malformed`, to be parked.
  virtual Result<FetchedBatch> Fetch(size_t max) = 0;
  // Sleeps until new rows may exist, at most the poll interval.
  virtual void Wait(const StopSignal& stop) = 0;
  // One transaction: marks `acked` done and moves `rejected` to the dead-letter table.
  // Called only after the sink acknowledged every id in `acked`. A source with pipelined
  // checkpoints (SourceOptions::checkpoints_in_flight) may return once the transaction is
  // queued; a queued one that fails is returned by a later Checkpoint, Fetch or Sync.
  virtual Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                            const std::string& sink_name) = 0;
  // Waits until every Checkpoint so far committed; the failure of one that did not.
  virtual Status Sync() { return Status::Ok(); }
  // Retain mode: deletes published rows older than `retention`, in bounded batches.
  virtual Result<int64_t> DeletePublishedBefore(Duration retention) = 0;
  // Drops the connection; the next Open() reconnects.
  virtual void Close() = 0;
  // For logs: the URL without secrets.
  virtual std::string Describe() const = 0;
};

Result<std::unique_ptr<Source>> MakeSource(const SourceOptions& options);

// Factories of the concrete sources (one file each).
std::unique_ptr<Source> MakePostgresPollSource(const SourceOptions& options, std::string conninfo);
std::unique_ptr<Source> MakeSqlitePollSource(const SourceOptions& options, std::string path);
std::unique_ptr<Source> MakePostgresCdcSource(const SourceOptions& options, std::string conninfo);
// An event store (TableNames::event_store()), polled in position order up to its horizon.
std::unique_ptr<Source> MakeEventStorePollSource(const SourceOptions& options,
                                                 std::string conninfo);

}  // namespace courier
