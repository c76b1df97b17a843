// Event store: the events of a stream (an aggregate) are the only write, appended with an
// expected version inside the caller's own transaction and kept forever (courier never deletes
// them; `courier relay --event-store` stamps published_at once a sink acknowledged one).
//
//   PQexec(conn, "BEGIN");
//   courier::EventStore store;  // table courier_events, made by courier migrate --event-store
//   auto stream = store.Load(conn, "account", "acct-1");             // snapshot + later events
//   Account account = Fold(*stream);                                 // the caller's own fold
//   if (!account.CanWithdraw(amount)) { ... refuse ... }
//   auto appended = store.Append(conn, "account", "acct-1", stream->version,
//                                {{.event_type = "FundsWithdrawn", .payload = R"({"amount":5})"}});
//   if (appended.status().code() == courier::StatusCode::kAborted) {
//     PQexec(conn, "ROLLBACK");  // or go on in the same transaction: see Append
//     ... re-read, decide again, append again ...
//   }
//   PQexec(conn, "COMMIT");
//
// The fold: state = snapshot's state (or the initial state), then Apply(state, event) for each
// event of LoadedStream::events in version order; LoadedStream::version is the expected version
// of the next append. Save a snapshot (SaveSnapshot) now and then to bound the replay.
//
// Any language can append with plain SQL; a stale expected version is a unique violation
// (SQLSTATE 23505): re-read the stream and retry.
//   INSERT INTO courier_events (stream_type, stream_id, version, event_type, payload)
//   VALUES ('account', 'acct-1', 5, 'FundsDeposited', '{"amount":10}');
//
// Order: every event has a position in one global order (an identity allocated with CACHE 1,
// so positions increase in allocation order); within a stream, version order is position
// order. ReadAll never returns a position while a transaction that may still commit a lower
// one is running (see ReadAll).
//
// Thread-safety: an EventStore is immutable and may be shared; the connection passed in is
// used from the calling thread only, as libpq and SQLite require.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "courier/event.h"
#include "courier/status.h"

struct pg_conn;
struct sqlite3;

namespace courier {

// Expected versions besides a number (the stream's current version: that of its last event).
// kNoStream: the stream must not exist yet (its first event gets version 1).
inline constexpr int64_t kNoStream = 0;
// kAny: append after whatever the stream holds, no check.
inline constexpr int64_t kAny = -1;

struct NewEvent {
  std::string event_type;
  std::string payload;  // JSON text (stored in a json column, byte for byte)
  // Optional; never "version" or "position", which the envelope sets from the row (Append
  // refuses them, kInvalidArgument; PostgreSQL's table has the same CHECK).
  Headers headers;
  std::string event_id;  // optional; a fresh UUIDv7 when empty
};

struct AppendedEvent {
  int64_t position = 0;
  int64_t version = 0;
  std::string event_id;
};

struct AppendResult {
  // The stream's version after the append: the expected version of the next one.
  int64_t version = 0;
  std::vector<AppendedEvent> events;  // in the order given
};

struct RecordedEvent {
  int64_t position = 0;
  std::string stream_type;
  std::string stream_id;
  int64_t version = 0;
  std::string event_id;
  std::string event_type;
  std::string payload;
  // Empty for a row whose headers are not a JSON object (written by plain SQL before the
  // headers check, or on SQLite): the event is read all the same, with a warning naming its
  // position, so no reader stops at it.
  Headers headers;
  std::string created_at;  // UTC, ISO 8601 ("2026-01-02T03:04:05.123456Z")
};

struct Snapshot {
  int64_t version = 0;  // the stream's version the state includes
  std::string state;
};

// A stream ready to fold: its latest snapshot (if any) and the events after it.
struct LoadedStream {
  std::optional<Snapshot> snapshot;
  std::vector<RecordedEvent> events;  // versions above the snapshot's, in order
  int64_t version = 0;                // the stream's current version (0: no stream)
};

class EventStore {
 public:
  // `table` may be schema-qualified ("app.events"); it is quoted, never interpolated raw. The
  // snapshots live in `<table>_snapshots`.
  explicit EventStore(std::string table = "courier_events");

  // Appends `events` as versions expected_version+1, +2, ... of the stream, inside the
  // caller's open transaction (kFailedPrecondition when none is open: the events must commit
  // or roll back with the caller's decision). `expected_version`: the stream's current
  // version, kNoStream or kAny.
  //
  // kAborted when the stream is not at `expected_version`, or another transaction appended
  // the same version first (it waits for that one to commit or roll back); the message names
  // the stream's current version. Re-read, decide again, append again. The append runs under
  // a savepoint, so after a refusal the caller's transaction is still usable (what it wrote
  // before is kept; nothing of this append is). kInvalidArgument for an event_id already in
  // the store, an empty list, or a header named "version" or "position".
  Result<AppendResult> Append(pg_conn* conn, const std::string& stream_type,
                              const std::string& stream_id, int64_t expected_version,
                              const std::vector<NewEvent>& events) const;
  Result<AppendResult> Append(sqlite3* db, const std::string& stream_type,
                              const std::string& stream_id, int64_t expected_version,
                              const std::vector<NewEvent>& events) const;

  // The stream's events with version >= from_version, in version order, at most `limit`.
  Result<std::vector<RecordedEvent>> ReadStream(pg_conn* conn, const std::string& stream_type,
                                                const std::string& stream_id,
                                                int64_t from_version = 1,
                                                size_t limit = SIZE_MAX) const;
  Result<std::vector<RecordedEvent>> ReadStream(sqlite3* db, const std::string& stream_type,
                                                const std::string& stream_id,
                                                int64_t from_version = 1,
                                                size_t limit = SIZE_MAX) const;

  // Events of every stream with position > after_position, in position order, at most
  // `limit`: all of them final. Gap-safe: it returns nothing above a position whose
  // transaction might still commit. On PostgreSQL it first waits (up to `wait`) until every
  // transaction that was writing the table when it looked has ended; if one is still running
  // then it is kRetriable, naming that transaction (pid, xid, age). Call it outside a
  // transaction that wrote to the table (it would wait for itself). SQLite has one writer at a
  // time, so there positions commit in order and it never waits.
  Result<std::vector<RecordedEvent>> ReadAll(
      pg_conn* conn, int64_t after_position, size_t limit,
      std::chrono::milliseconds wait = std::chrono::seconds(5)) const;
  Result<std::vector<RecordedEvent>> ReadAll(sqlite3* db, int64_t after_position,
                                             size_t limit) const;

  // Stores `state` as the stream's state at `version` (replacing one saved for that version);
  // in the caller's transaction or on its own.
  Status SaveSnapshot(pg_conn* conn, const std::string& stream_type, const std::string& stream_id,
                      int64_t version, const std::string& state) const;
  Status SaveSnapshot(sqlite3* db, const std::string& stream_type, const std::string& stream_id,
                      int64_t version, const std::string& state) const;

  // The snapshot of the highest version, or nullopt.
  Result<std::optional<Snapshot>> LoadLatest(pg_conn* conn, const std::string& stream_type,
                                             const std::string& stream_id) const;
  Result<std::optional<Snapshot>> LoadLatest(sqlite3* db, const std::string& stream_type,
                                             const std::string& stream_id) const;

  // LoadLatest, then ReadStream after the snapshot's version: what a fold needs.
  Result<LoadedStream> Load(pg_conn* conn, const std::string& stream_type,
                            const std::string& stream_id) const;
  Result<LoadedStream> Load(sqlite3* db, const std::string& stream_type,
                            const std::string& stream_id) const;

  const std::string& table() const { return table_; }

 private:
  std::string table_;
  std::string snapshots_;
};

}  // namespace courier
