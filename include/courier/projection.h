// Projections: a read model kept by applying every event once, in order, where each batch of
// the handler's writes commits in one database transaction with the projection's checkpoint.
// A crash anywhere leaves either both or neither, so the effects are exactly-once.
//
// Two sources of events, one engine:
//  - the event store (courier/event_store.h): every event of `courier_events` in global
//    (position) order. The reader never passes a position whose transaction may still commit,
//    so an event that commits late with a lower position is never skipped. The checkpoint is
//    the projection's row in `<events>_projections(name, position, updated_at)`.
//  - Kafka (listen-to-yourself): every partition of the topics, assigned by the projection
//    itself (no consumer group), in offset order per partition. The next offset of each
//    partition is in `courier_projection_offsets(name, topic, partition, next_offset)`, and a
//    restart resumes from there, never from offsets Kafka keeps.
// Both tables live in the projection's database and are created there when missing.
//
//   courier::ProjectionOptions o;
//   o.db_url = "postgres://app@127.0.0.1/app";
//   o.name = "balances";
//   courier::Projection projection(o);
//   std::thread t([&] {
//     courier::Status st = projection.Subscribe(
//         courier::From::Checkpoint(),
//         [](pg_conn* conn, const courier::ProjectedEvent& e) -> courier::Status {
//           // writes through `conn`, inside the open transaction; never COMMIT here
//           return courier::Status::Ok();
//         });
//   });
//   ... projection.RequestStop(); t.join();
//
// A failing handler (any error it returns) rolls back its writes and the checkpoint; the event
// is retried, with capped backoff, until it passes: a projection never skips an event. An
// unreachable database is waited for; after a commit whose outcome is unknown the checkpoint
// is read back, so nothing is applied twice. Two projections of one name may run at once (a
// standby): each batch's checkpoint update checks the position it started from, so only one
// applies a batch and the other goes on from the checkpoint it finds.
//
// Thread-safety: Subscribe() runs on one thread; RequestStop() and applied() from any thread,
// RequestStop() also from a signal handler. WaitFor from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "courier/event.h"
#include "courier/status.h"

struct pg_conn;

namespace courier {

class Clock;        // core/clock.h
class FaultPoints;  // core/fault_points.h
class StopSignal;   // core/clock.h

// An event as a projection receives it.
struct ProjectedEvent {
  std::string event_id;
  std::string stream_type;  // Kafka: the aggregate_type header
  std::string stream_id;    // Kafka: the message key
  std::string event_type;
  std::string payload;  // untouched
  // The event's headers; from the event store also "version" and "position" (as text), as
  // `courier relay --event-store` publishes them.
  Headers headers;
  int64_t version = 0;   // the stream's version; Kafka: the "version" header, else 0
  int64_t position = 0;  // the event store's global position; Kafka: 0
  // Kafka only: where the message was.
  std::string topic;
  int32_t partition = -1;
  int64_t offset = -1;
  int64_t created_at_us = 0;
};

// Runs inside the batch's open transaction on the projection's connection: its writes commit
// with the checkpoint. It must not COMMIT or ROLLBACK itself. A handler cut short by a
// shutdown returns kCancelled: the batch rolls back and Subscribe returns Ok (a restart applies
// the batch, once); any other error is retried.
using ProjectionHandler = std::function<Status(pg_conn* conn, const ProjectedEvent& event)>;

// Where Subscribe starts.
struct From {
  // After the projection's checkpoint, or at the first event when it has none: the usual
  // (re)start.
  static From Checkpoint() { return From{}; }
  // Rebuild: from the first event, into fresh state. `reset` (may be empty) clears the
  // projection's state in the same transaction that zeroes the checkpoint, so a crash leaves
  // either the old state with its checkpoint or fresh state replaying from the start.
  static From Start(std::function<Status(pg_conn* conn)> reset) {
    From f;
    f.rebuild = true;
    f.reset = std::move(reset);
    return f;
  }
  bool rebuild = false;
  std::function<Status(pg_conn* conn)> reset;
};

struct ProjectionOptions {
  std::string db_url;  // postgres://...: the projection's database (effects and checkpoint)
  std::string name;    // the checkpoint's key: one per projection
  // Empty: the event store. kafka://host:port[,host:port]/TOPIC[,TOPIC][?librdkafka.prop=v]:
  // a Kafka-sourced projection (listen-to-yourself).
  std::string from_url;
  // The event store's database when it is not db_url (the checkpoint stays in db_url).
  std::string events_url;
  std::string events_table = "courier_events";  // its checkpoints: <events>_projections
  std::string offsets_table = "courier_projection_offsets";
  int batch_size = 100;  // events per transaction
  std::chrono::milliseconds poll_interval{100};
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30000};
  // The projection's session ends (the server's idle_in_transaction_session_timeout) once its
  // batch transaction has been idle this long: a frozen projector (SIGSTOP, a paused VM)
  // then loses its transaction and the checkpoint row's lock, and a standby takes over.
  // Longer than the handler may take for one event (`courier project` sets --handler-timeout
  // plus 10 s). 0: the server's setting.
  std::chrono::milliseconds idle_in_transaction_timeout{0};
  // Injected (not owned): the clock that times backoff (null: the real one) and the fault
  // points (null in normal runs; the CLI sets them from COURIER_FAILPOINTS).
  Clock* clock = nullptr;
  FaultPoints* fault_points = nullptr;
};

class Projection {
 public:
  explicit Projection(ProjectionOptions options);
  ~Projection();
  Projection(const Projection&) = delete;
  Projection& operator=(const Projection&) = delete;

  // Delivers every event after `from` to `handler`, once, in order, until RequestStop() (then
  // returns Ok after the batch in hand). Returns early only for what retrying cannot fix: bad
  // options (kInvalidArgument), a missing event table (kNotFound).
  Status Subscribe(const From& from, const ProjectionHandler& handler);
  void RequestStop();
  // Events applied (committed) by this object so far.
  int64_t applied() const { return applied_.load(std::memory_order_relaxed); }

 private:
  ProjectionOptions options_;
  std::unique_ptr<StopSignal> stop_;
  std::atomic<int64_t> applied_{0};
};

// Read-your-writes for listen-to-yourself: waits until projection `name` in `db_url` has
// applied the message at `offset` of `topic`'s `partition` (the offset a producer got back;
// an empty `topic`: the projection's only one). Ok once applied; kRetriable after `timeout`
// with one line saying where the projection is (a projection that has not started yet has
// applied nothing); kInvalidArgument for an empty topic when it reads several.
Status WaitFor(const std::string& db_url, const std::string& name, const std::string& topic,
               int32_t partition, int64_t offset, std::chrono::milliseconds timeout,
               const std::string& offsets_table = "courier_projection_offsets");

// The same for an event-store projection: until its checkpoint reached `position` (the
// position an append returned).
Status WaitForPosition(const std::string& db_url, const std::string& name, int64_t position,
                       std::chrono::milliseconds timeout,
                       const std::string& events_table = "courier_events");

}  // namespace courier
