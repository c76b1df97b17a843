// The CDC source's replication stream: a replication connection that runs START_REPLICATION
// on the outbox's slot, hands out its CopyData messages, and reports the positions the source
// gives it in standby status updates, both when they move and, from a keepalive thread, every
// status interval, so the server neither times out the stream nor keeps WAL while a sink holds
// the relay thread in a long wait. What the positions are is the LSN ledger's business
// (cdc/lsn_ledger.h); this only says them.
//
// Thread-safety: one caller thread (the relay's) plus the keepalive thread the stream owns;
// `mu_` serialises libpq calls on the connection between them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "core/clock.h"
#include "core/postgres.h"
#include "sources/pgoutput.h"

namespace courier::cdc {

using pgoutput::Lsn;

class ReplicationStream {
 public:
  explicit ReplicationStream(Duration status_interval) : status_interval_(status_interval) {}
  ~ReplicationStream() { Close(); }
  ReplicationStream(const ReplicationStream&) = delete;
  ReplicationStream& operator=(const ReplicationStream&) = delete;

  // Connects, reads the cluster's system identifier, streams `slot` from `start` with the
  // pgoutput plugin reading `publication` (and logical messages), and starts the keepalive
  // thread. A slot dropped or taken since it was checked is kRetriable.
  Status Start(const std::string& conninfo, const std::string& slot, const std::string& publication,
               Lsn start);

  // The next CopyData message, without blocking; false when none is buffered. When the stream
  // ended it is kRetriable whatever the server's reason: the stream restarts from the slot
  // after reconnecting. publication_missing() then says whether the reason was that the
  // publication does not exist.
  Result<bool> Next(std::string* out);

  // Waits up to `timeout` for a message (kept for Next), or until `stop`. Returns at once when
  // the connection is broken: Next reports why.
  void Wait(const StopSignal& stop, Duration timeout);
  // A message is kept for Next.
  bool buffered() const { return !stash_.empty(); }
  // Blocks up to `timeout` until the connection has input.
  void WaitReadable(Duration timeout);

  // The positions to report from now on. Sends them at once when `confirmed` moved (after a
  // checkpoint, so once per batch at most: a restart then repeats little), when `force` (the
  // server asked), or when a status interval passed since the last report.
  void Report(Lsn received, Lsn confirmed, bool force);

  // Reports the last positions, ends the stream and stops the keepalive thread.
  void Close();

  uint64_t system_id() const { return system_id_; }
  // The stream ended because the publication does not exist: the server's undefined_object.
  // A publication dropped and created again under the slot fails every restart this way.
  bool publication_missing() const { return publication_missing_; }

 private:
  void SendStatusLocked();  // requires mu_
  void StartKeepalive();
  void StopKeepalive();

  const Duration status_interval_;
  std::string slot_;
  uint64_t system_id_ = 0;
  bool publication_missing_ = false;
  std::string stash_;  // a message read by Wait(), not yet handed out (caller's thread)

  std::mutex mu_;
  PgConn repl_;  // guarded by mu_
  std::atomic<Lsn> received_{0};
  std::atomic<Lsn> confirmed_{0};
  Lsn sent_confirmed_ = 0;   // guarded by mu_
  TimePoint last_status_{};  // guarded by mu_

  std::thread keepalive_;
  std::mutex keepalive_mu_;
  std::condition_variable keepalive_cv_;
  bool keepalive_stop_ = false;  // guarded by keepalive_mu_
};

}  // namespace courier::cdc
