// Pipelined checkpoints of a PostgreSQL outbox (polled, or read from the WAL): the relay's
// checkpoint of batch N (the DELETE, or the published_at stamp, the parking of rejected rows,
// CDC's checkpoint_lsn) commits on a connection of its own, in a thread of its own, while the
// relay fetches and publishes batch N+1. Checkpoints queued while one commits are coalesced: one
// transaction covers them all, so the deletes and the commit's WAL flush cost less per event.
//
// Nothing here decides what is checkpointed: a job holds only ids the sink already acked
// (the relay's rule, relay.cc PublishAndCheckpoint); this only decides when it commits. A job
// that fails is not retried: its rows stay in the outbox and go out again after the source
// reconnects (duplicates, never loss), and the failure is returned by the next call.
//
// Thread-safety: Submit, Drain, PendingIds, failure, committed and the destructor are called
// by one thread (the relay's); the committing thread is private.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/postgres.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

struct CheckpointJob {
  std::vector<int64_t> acked;  // the outbox rows' ids
  std::vector<Rejected> rejected;
  std::string sink_name;
  // CDC: the transactions that inserted `acked` (parallel to it), and the position to store
  // with the checkpoint (coalesced jobs store the highest).
  std::vector<int64_t> xids;
  std::optional<uint64_t> record;
};

class FaultPoints;

// Bounds how long a checkpoint holds up a relay that is stopping (SIGTERM, or --once ended
// by one). A checkpoint is the last step of a batch, and its statements can wait without end:
// a DELETE on a row another session keeps locked (BEGIN; SELECT ... FOR UPDATE, left open)
// waits until that session ends. Once `stop` is requested, a checkpoint still running `grace`
// later is cancelled (PQcancel; should the server not answer that, the connection's socket is
// shut down), and none starts after that. Its rows stay in the outbox and the next relay
// publishes them again: duplicates, never loss. Without a stop nothing changes: a checkpoint
// waits as long as the server lets it (lock_timeout), then fails and is retried.
//
// Thread-safety: Run may be called from several threads at once, each on its own connection;
// the watching thread is private.
class CheckpointDeadline {
 public:
  // `stop` (not owned, not null) outlives this.
  CheckpointDeadline(const StopSignal* stop, Duration grace);
  ~CheckpointDeadline();
  CheckpointDeadline(const CheckpointDeadline&) = delete;
  CheckpointDeadline& operator=(const CheckpointDeadline&) = delete;

  // Runs `checkpoint`, the transaction of `events` events on `conn`, from the thread that uses
  // `conn`. Its status, or kCancelled when it was cancelled (the connection is then unusable:
  // drop it) or when the deadline had passed before it started. One that committed as the
  // cancel went out is done: its own status is returned.
  Status Run(PGconn* conn, size_t events, const std::function<Status()>& checkpoint);

  // Logs the one warning an abandoned checkpoint gets, for all `events` it held (those of the
  // transaction cancelled and of the batches queued behind it).
  void LogAbandoned(size_t events) const;

 private:
  struct Watched {
    PGcancel* cancel;
    int socket;
    size_t events;
    bool cancelled = false;       // the cancel went out
    TimePoint cancelled_at = {};  // when
    bool shut = false;            // the socket was shut down too
  };
  void Watch();
  // Whether the deadline passed; notes when the stop was first seen. Called with mu_ held.
  bool Passed(TimePoint now);

  const StopSignal* const stop_;
  const Duration grace_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Watched*> watched_;            // running now, guarded by mu_
  std::optional<TimePoint> stopping_since_;  // guarded by mu_
  bool reported_ = false;                    // the wait was logged, guarded by mu_
  bool quit_ = false;                        // guarded by mu_
  std::thread thread_;
};

class PgCheckpointer {
 public:
  // Commits one (coalesced) job in one transaction on `conn`.
  using CommitFn = std::function<Status(PGconn* conn, const CheckpointJob& job)>;

  // The checkpoint connection: `conninfo`'s, whose transactions the server ends when they
  // stay idle for kIdleInTransaction (a relay frozen mid-checkpoint, SIGSTOP or a partition,
  // must not hold the outbox rows' locks against the relay that took over).
  static Result<PgConn> Connect(const std::string& conninfo);
  static constexpr const char* kIdleInTransaction = "5s";

  // A checkpointer on a connection of its own (Connect), or null, with a warning, when that
  // connection cannot be opened (a role at its connection limit): the caller then commits
  // one batch at a time on its own connection.
  static std::unique_ptr<PgCheckpointer> Start(const std::string& conninfo, CommitFn commit,
                                               size_t max_in_flight, FaultPoints* fault_points,
                                               CheckpointDeadline* deadline = nullptr);

  // Commits on `conn` (from Connect). `max_in_flight`: the batches that may be queued or
  // committing at once (at least 1); Submit waits while that many are. `fault_points` (may be
  // null) is reached, as "relay-checkpoint-coalesced", before a transaction that covers two
  // batches or more commits: crash tests kill the relay there, with several batches acked
  // and none deleted. `deadline` (may be null; outlives this) bounds each transaction once the
  // relay stops; when it cancels one, that one and those queued behind it are abandoned,
  // with one warning, and the failure is kCancelled.
  PgCheckpointer(PgConn conn, CommitFn commit, size_t max_in_flight, FaultPoints* fault_points,
                 CheckpointDeadline* deadline);
  ~PgCheckpointer();  // waits for the queued jobs (Drain) and stops the thread
  PgCheckpointer(const PgCheckpointer&) = delete;
  PgCheckpointer& operator=(const PgCheckpointer&) = delete;

  // Queues `job`, after waiting while `max_in_flight` batches are in flight. Returns the
  // failure of an earlier job instead (then nothing is queued, and nothing more will be).
  Status Submit(CheckpointJob job);
  // Waits until every job submitted so far committed; the first failure, if one failed.
  Status Drain();
  // Appends the ids (acked and rejected) of every job submitted and not yet committed.
  void PendingIds(std::vector<int64_t>* out);
  // The failure of a job, if one failed (it stays: nothing more is committed).
  Status failure();
  // How many jobs committed so far (they commit in the order submitted).
  uint64_t committed();

 private:
  void Work();

  const CommitFn commit_;
  const size_t max_in_flight_;
  FaultPoints* const fault_points_;
  CheckpointDeadline* const deadline_;
  PgConn conn_;  // the committing thread's (null after a failure)

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<CheckpointJob> queue_;      // guarded by mu_
  size_t committing_ = 0;                // batches taken by the thread, guarded by mu_
  std::vector<int64_t> committing_ids_;  // their ids, guarded by mu_
  Status failure_;                       // guarded by mu_
  uint64_t committed_ = 0;               // jobs committed, guarded by mu_
  bool stop_ = false;                    // guarded by mu_
  std::thread thread_;
};

}  // namespace courier
