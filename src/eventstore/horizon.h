// The horizon of an event store on PostgreSQL: the highest position below which every event
// that will ever commit has committed. A reader (ReadAll, `courier relay --event-store`,
// subscriptions) reads (checkpoint, horizon] in position order and never past it, so it never
// skips an event that commits late with a lower position (the bug of readers that trust
// max(position)).
//
// Why it holds: positions come from an identity with CACHE 1, so they increase in the order
// they are allocated. Let M be max(position) as seen by a statement's snapshot S. A position
// P < M not visible at S was allocated before M, hence before S, by a transaction T still
// running at S (or rolled back). T allocated P inside an INSERT, and an INSERT holds
// RowExclusiveLock on the table from before it allocates until its transaction ends. So every
// such T is among the holders of that lock when they are listed after S; once each of those
// transactions has ended, every position <= M is final, and a snapshot taken then sees all of
// them. Transactions that allocate after S get positions above M.
//
// The holders are named by their virtual transaction id (pg_locks.virtualtransaction), not by
// xid: S's list of in-progress xids misses a transaction that allocated its position before
// it was assigned an xid (nextval runs before the row is written, and only the write assigns
// the xid), so a horizon that waits only on pg_snapshot_xip(S) can pass such a position.
// Transactions that hold the lock for other reasons (an UPDATE stamping published_at) only
// delay the horizon, as do those that begin writing after S; under steady load it trails the
// newest commit by about one writing transaction.
//
// A horizon never skips a gap after a timeout: a transaction that stays open holds it back,
// and Blockers() says which (pid, xid, age), for logs and `courier status`.
//
// Reads of (checkpoint, horizon] must use a snapshot taken after Advance() returned, i.e. a new
// statement outside a REPEATABLE READ/SERIALIZABLE transaction, and on a connection that has
// not itself written the table in an open transaction (it would wait for itself: its own lock
// is left out, and its own uncommitted rows are no one's business yet).
//
// Thread-safety: a PgHorizon is used by one thread, with a connection of that thread.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "courier/status.h"

namespace courier {

// A transaction writing the events table: what the horizon waits for.
struct HorizonBlocker {
  std::string vxid;              // pg_locks.virtualtransaction ("-1/<xid>": a prepared one)
  int pid = 0;                   // 0: a prepared transaction
  std::string xid;               // "" while it has none
  double age_seconds = 0;        // since its transaction began (0 when unknown)
  std::string ToString() const;  // "pid 1234, xid 5678, open for 12.3 s"
};

// The transactions holding RowExclusiveLock on `table` now, other than `conn`'s own.
Result<std::vector<HorizonBlocker>> TableWriters(PGconn* conn, const std::string& table);

class PgHorizon {
 public:
  // `table` as configured (schema-qualified or not); `start` a position already known final
  // (a checkpoint).
  explicit PgHorizon(std::string table, int64_t start = 0);

  // Moves the horizon as far as it is known to be safe and returns it. Never waits for another
  // transaction: when writers were running it remembers them and the max(position) it saw, and
  // a later call moves to that position once they have all ended.
  Result<int64_t> Advance(PGconn* conn);

  int64_t safe() const { return safe_; }
  // Whether a candidate above safe() waits on running writers (listed by blockers()).
  bool waiting() const { return pending_; }
  // The position the horizon moves to once blockers() have ended.
  int64_t candidate() const { return pending_ ? candidate_ : safe_; }
  const std::vector<HorizonBlocker>& blockers() const { return blockers_; }

 private:
  // Takes a new candidate: max(position) by a fresh snapshot, then the table's writers.
  Status Sample(PGconn* conn);
  // Drops the blockers that have ended; true when none is left.
  Result<bool> BlockersEnded(PGconn* conn);

  std::string table_;
  int64_t safe_;
  bool pending_ = false;
  int64_t candidate_ = 0;
  std::vector<HorizonBlocker> blockers_;
};

// Waits, polling with a growing pause (1 ms up to 50 ms), until the horizon reaches the
// max(position) seen when it started; kRetriable naming the oldest blocker when `wait` runs out.
Result<int64_t> WaitForHorizon(PGconn* conn, const std::string& table, int64_t start,
                               std::chrono::milliseconds wait);

}  // namespace courier
