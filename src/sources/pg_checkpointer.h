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
                                               size_t max_in_flight, FaultPoints* fault_points);

  // Commits on `conn` (from Connect). `max_in_flight`: the batches that may be queued or
  // committing at once (at least 1); Submit waits while that many are. `fault_points` (may be
  // null) is reached, as "relay-checkpoint-coalesced", before a transaction that covers two
  // batches or more commits: crash tests kill the relay there, with several batches acked
  // and none deleted.
  PgCheckpointer(PgConn conn, CommitFn commit, size_t max_in_flight, FaultPoints* fault_points);
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
