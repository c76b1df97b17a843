// The PostgreSQL implementation of Leadership (stores/leadership.h): one active relay per outbox
// (or per shard of it): an advisory lock elects it, a lease fences it.
//
// The lock (pg_try_advisory_lock on a session of its own) makes the election immediate and
// exclusive. The lease row (`<outbox>_lease`) bounds how long a relay that lost its session
// can go on believing it is active: the holder renews `expires_at = now() + lease` every
// lease/4 and stops publishing (abandoning in-flight sends) once lease * 3/4 has passed since
// the last renewal it *sent* that succeeded — before the row can expire. A standby that gets
// the lock still waits until `expires_at` has passed in the database's clock. So a fenced
// relay has stopped before its successor starts, without trusting wall clocks: each side
// measures the same interval with its own monotonic clock.
//
// A holder whose session is alive but who stopped renewing (frozen process, SIGSTOP, a
// network partition that keeps the TCP session half-open) is cut off by the standby with
// pg_terminate_backend once its lease is a whole lease period overdue.
//
// Thread-safety: Acquire/Release/held from the relay thread; the renewer runs on its own
// thread and only touches `fence` and atomics.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "core/clock.h"
#include "core/postgres.h"
#include "courier/relay.h"
#include "courier/status.h"
#include "stores/leadership.h"

namespace courier {

// This process's name in the lease row's holder column (`host:pid`): what `courier status` and
// the relay's status page show as the lease's holder.
std::string LeaseHolderName();

struct LeaseOptions {
  std::string conninfo;
  std::string describe;  // the source URL without secrets, for messages
  std::string table;     // the lease table (TableNames::Leases())
  std::string name;      // "courier relay <outbox>" [+ " shard K/N"]: the lock and row key
  Duration lease = kDefaultLease;
  // Measures the lease and times the renewals and waits (not owned); null: the real clock.
  Clock* clock = nullptr;
};

class PostgresLease final : public Leadership {
 public:
  explicit PostgresLease(LeaseOptions options);
  ~PostgresLease() override;

  // Blocks until this process holds the lock and the previous holder's lease has run out, then
  // renews the lease in the background until Release(). If renewing fails for too long,
  // `fence` is abandoned (publishing stops at once) and held() turns false. `fence` also
  // carries the lease's deadline (StopSignal::BeginTerm/Extend), so it turns abandoned by
  // itself when renewals stop arriving, however late the renewer thread runs. kCancelled on
  // `stop`; kFailedPrecondition at once when `wait` is false and another relay is active;
  // kNotFound when the lease table is missing (run courier migrate).
  Status Acquire(const StopSignal& stop, bool wait, StopSignal* fence) override;
  // False once the lease is lost or its deadline has passed (also before the renewer noticed).
  bool held() const override;
  int64_t epoch() const { return epoch_; }
  // Events published so far; each renewal stores it with the rate over the last minute in
  // the lease row, for `courier status`.
  void ReportPublished(int64_t total) override { published_ = total; }
  // Hands the lease back (expires_at = now(), so a standby takes over at once when this
  // relay stops cleanly) and ends the session, with it the lock.
  void Release() override;

 private:
  Status TryLock(bool* locked);
  Status WaitForExpiry(const StopSignal& stop);
  void Renew();
  void Lose(const std::string& why);

  LeaseOptions options_;
  Clock* clock_;  // options_.clock, or the real one
  PgConn conn_;
  int64_t epoch_ = 0;
  StopSignal* fence_ = nullptr;
  std::atomic<bool> held_{false};
  std::atomic<int64_t> valid_until_ns_{0};  // steady clock: stop publishing at this point
  std::atomic<int64_t> published_{0};
  StopSignal quit_{};  // Release() asks the renewer to end
  std::thread renewer_;
};

}  // namespace courier
