// The CDC source's replication stream: a replication connection that runs START_REPLICATION
// on the outbox's slot, hands out its CopyData messages, and reports the positions the source
// gives it in standby status updates. What the positions are is the LSN ledger's business
// (cdc/lsn_ledger.h); this only says them.
//
// The stream reads the server continuously, from a reader thread of its own, into a queue the
// relay thread takes messages from. The walsender decodes the WAL only as fast as its client
// reads: read only between batches, it would sit idle while the relay publishes a batch and
// checkpoints it, and decode the next batch only once asked. Read on, it keeps decoding while
// the relay is busy, so fetching batch N+1 overlaps publishing N and checkpointing N-1. The
// queue is bounded in bytes: once full the reader stops reading, TCP's flow control holds the
// server back, and memory stays bounded whatever the backlog.
//
// The reader thread also sends the standby status updates every status interval (and at once
// when the server asks for one), with the positions the relay last handed over, so the server
// neither times out the stream nor keeps WAL while a sink holds the relay thread in a long
// wait.
//
// Thread-safety: one caller thread (the relay's) calls every public method; the stream owns
// the reader thread. `mu_` serialises libpq calls on the connection between the two (the
// reader waits for the socket outside it); `queue_mu_` guards the queue and the stream's end.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/postgres.h"
#include "sources/pgoutput.h"

namespace courier::cdc {

using pgoutput::Lsn;

class ReplicationStream {
 public:
  // What the queue holds at most, in bytes of messages read and not yet handed out.
  static constexpr size_t kDefaultMaxQueuedBytes = size_t{16} << 20;

  explicit ReplicationStream(Duration status_interval,
                             size_t max_queued_bytes = kDefaultMaxQueuedBytes)
      : status_interval_(status_interval), max_queued_bytes_(max_queued_bytes) {}
  ~ReplicationStream() { Close(); }
  ReplicationStream(const ReplicationStream&) = delete;
  ReplicationStream& operator=(const ReplicationStream&) = delete;

  // Connects, reads the cluster's system identifier, streams `slot` from `start` with the
  // pgoutput plugin reading `publication` (and logical messages), and starts the reader
  // thread. A slot dropped or taken since it was checked is kRetriable.
  Status Start(const std::string& conninfo, const std::string& slot, const std::string& publication,
               Lsn start);

  // The next CopyData message, without blocking; false when none is queued. Once the messages
  // read before the stream ended are handed out, it is kRetriable whatever the server's
  // reason: the stream restarts from the slot after reconnecting. publication_missing() then
  // says whether the reason was that the publication does not exist.
  Result<bool> Next(std::string* out);

  // Waits up to `timeout` for a message, or until `stop` (seen within 20 ms). Returns at once
  // when the stream ended (Next reports why) or is not started.
  void Wait(const StopSignal& stop, Duration timeout);
  // Waits up to `timeout` for a message; as Wait without a stop signal.
  void WaitReadable(Duration timeout);
  // Bytes of the messages queued and not handed out yet.
  size_t queued_bytes() const;

  // The positions to report from now on. Sends them at once when `confirmed` moved (after a
  // checkpoint, so once per batch at most: a restart then repeats little), when `force` (the
  // server asked), or when a status interval passed since the last report.
  void Report(Lsn received, Lsn confirmed, bool force);

  // Stops the reader thread, reports the last positions, ends the stream and drops what is
  // queued.
  void Close();

  uint64_t system_id() const { return system_id_; }
  // The stream ended because the publication does not exist: the server's undefined_object.
  // A publication dropped and created again under the slot fails every restart this way.
  bool publication_missing() const { return publication_missing_; }

 private:
  enum class Read { kDrained, kBudget, kEnded };

  void ReadLoop(PGconn* conn);
  // Moves up to `budget` bytes of messages from the connection to `incoming` (reusing
  // `spares`' buffers); kEnded with `why` set when the stream ended. Requires mu_.
  Read ReadLocked(PGconn* conn, size_t budget, std::vector<std::string>* incoming,
                  std::vector<std::string>* spares, Status* why, bool* reply_requested);
  void SendStatusLocked();  // requires mu_
  void StopReader();
  // Waits until a message is queued, the stream ended, `deadline`, or `stop` when given.
  void WaitQueued(const StopSignal* stop, TimePoint deadline);

  const Duration status_interval_;
  const size_t max_queued_bytes_;
  std::string slot_;  // set before the reader starts
  uint64_t system_id_ = 0;
  std::atomic<bool> publication_missing_{false};

  std::mutex mu_;
  PgConn repl_;  // guarded by mu_; reset only once the reader stopped
  std::atomic<Lsn> received_{0};
  std::atomic<Lsn> confirmed_{0};
  Lsn sent_confirmed_ = 0;   // guarded by mu_
  TimePoint last_status_{};  // guarded by mu_

  mutable std::mutex queue_mu_;
  std::condition_variable queued_cv_;  // a message queued, the stream ended
  std::condition_variable room_cv_;    // the queue drained to its low-water mark, or stop
  std::deque<std::string> queue_;      // guarded by queue_mu_
  size_t queued_bytes_ = 0;            // guarded by queue_mu_
  // Why the stream ended, once it did: Next's answer after the queue. Guarded by queue_mu_.
  std::optional<Status> ended_;
  bool running_ = false;  // a stream is started; guarded by queue_mu_
  bool stop_ = false;     // the reader is to stop; guarded by queue_mu_
  // Emptied message buffers handed back for the reader to fill again (no allocation per
  // message once warm). Guarded by queue_mu_.
  std::vector<std::string> spare_;

  std::thread reader_;
};

}  // namespace courier::cdc
