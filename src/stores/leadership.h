// Who may publish an outbox: one active relay per outbox (or per shard of it). The relay is
// handed a Leadership made by MakeLeadership from the source's location: a PostgreSQL lease
// (stores/postgres_lease.h) or, for SQLite, a file lock beside the database
// (stores/sqlite_lock.cc). Tests hand it a fake.
//
// Thread-safety: Acquire/Release/held from the relay thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/clock.h"
#include "courier/relay.h"
#include "courier/status.h"

namespace courier {

class Leadership {
 public:
  virtual ~Leadership() = default;

  // Blocks until this process is the only active relay of the outbox (kCancelled on `stop`);
  // with `wait` false, kFailedPrecondition at once when another relay is active. While held,
  // losing it abandons `fence` (when given), so publishing stops at once; an implementation
  // that cannot lose it while the process lives (a kernel file lock) never touches `fence`.
  virtual Status Acquire(const StopSignal& stop, bool wait, StopSignal* fence) = 0;
  // True from a successful Acquire until it is released or lost.
  virtual bool held() const = 0;
  // Events published so far, for `courier status` where the implementation records it.
  virtual void ReportPublished(int64_t total) { (void)total; }
  // Hands it back, so a standby takes over at once.
  virtual void Release() = 0;
};

struct LeadershipOptions {
  std::string source_url;
  std::string outbox = "courier_outbox";  // the outbox table (TableNames::outbox)
  int shard_index = 0;
  int shard_count = 1;             // above 1: one leader per shard (PostgreSQL only)
  Duration lease = kDefaultLease;  // PostgreSQL: how long a lost leader may believe it leads
  Clock* clock = nullptr;          // times the lease (not owned); null: the real clock
};

// The Leadership of the source at `options.source_url`: on PostgreSQL the lease row
// `<outbox>_lease` and an advisory lock named "courier relay <outbox>" [+ " shard K/N"]; on
// SQLite an exclusive flock on `<database>.courier-relay.lock`.
Result<std::unique_ptr<Leadership>> MakeLeadership(const LeadershipOptions& options);

// SQLite: an exclusive flock on `<database>.courier-relay.lock`, released by the kernel when
// the holder dies, so a restarted or standby relay takes over at once. `describe` names the
// outbox in messages; `clock` times the wait for the lock (null: the real clock).
std::unique_ptr<Leadership> MakeFileLock(std::string database, std::string describe,
                                         Clock* clock = nullptr);

}  // namespace courier
