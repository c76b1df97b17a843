#include "eventstore/horizon.h"

#include <algorithm>
#include <cstdio>

#include "core/clock.h"
#include "core/encoding.h"
#include "core/postgres.h"

namespace courier {
namespace {

// {"3/15","-1/742"}: virtual transaction ids hold digits, '-' and '/' only.
std::string TextArray(const std::vector<HorizonBlocker>& blockers) {
  std::string out = "{";
  for (const HorizonBlocker& b : blockers) {
    if (out.size() > 1) out += ",";
    out += "\"" + b.vxid + "\"";
  }
  return out + "}";
}

}  // namespace

std::string HorizonBlocker::ToString() const {
  char age[32];
  std::snprintf(age, sizeof(age), "%.1f", age_seconds);
  std::string out = pid != 0 ? "pid " + std::to_string(pid) : "prepared transaction " + vxid;
  if (!xid.empty()) out += ", xid " + xid;
  if (age_seconds > 0) out += std::string(", open for ") + age + " s";
  return out;
}

Result<std::vector<HorizonBlocker>> TableWriters(PGconn* conn, const std::string& table) {
  // granted only: a writer still queued for the lock has not allocated a position yet, and
  // will allocate one above anything visible now.
  COURIER_ASSIGN_OR_RETURN(
      PgResult res,
      PgExec(conn,
             "SELECT l.virtualtransaction, coalesce(l.pid, 0),"
             " coalesce(a.backend_xid::text, ''),"
             " coalesce(extract(epoch FROM clock_timestamp() - a.xact_start), 0)::float8"
             " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
             " WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' AND l.granted"
             " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
             " AND l.relation = to_regclass($1)"
             " AND l.pid IS DISTINCT FROM pg_backend_pid()"
             " ORDER BY a.xact_start NULLS FIRST",
             {QuoteIdent(table)}));
  std::vector<HorizonBlocker> out;
  for (int i = 0; i < PQntuples(res.get()); ++i) {
    HorizonBlocker b;
    b.vxid = PQgetvalue(res.get(), i, 0);
    b.pid = static_cast<int>(ParseInt64(PQgetvalue(res.get(), i, 1)).value_or(0));
    b.xid = PQgetvalue(res.get(), i, 2);
    b.age_seconds = std::atof(PQgetvalue(res.get(), i, 3));
    out.push_back(std::move(b));
  }
  return out;
}

PgHorizon::PgHorizon(std::string table, int64_t start) : table_(std::move(table)), safe_(start) {}

Status PgHorizon::Sample(PGconn* conn) {
  // Two statements, in this order: the writers are listed after the snapshot that saw M, so
  // every transaction that allocated a position below M and had not committed by then is
  // among them (horizon.h).
  COURIER_ASSIGN_OR_RETURN(
      PgResult max, PgExec(conn, "SELECT coalesce(max(position), 0) FROM " + QuoteIdent(table_)));
  const int64_t m = ParseInt64(PQgetvalue(max.get(), 0, 0)).value_or(0);
  if (m <= safe_) return Status::Ok();
  COURIER_ASSIGN_OR_RETURN(std::vector<HorizonBlocker> writers, TableWriters(conn, table_));
  if (writers.empty()) {
    safe_ = m;
    return Status::Ok();
  }
  pending_ = true;
  candidate_ = m;
  blockers_ = std::move(writers);
  return Status::Ok();
}

Result<bool> PgHorizon::BlockersEnded(PGconn* conn) {
  // A running transaction holds at least the lock on its own virtual transaction id (a
  // prepared one keeps its locks under "-1/<xid>"): no lock left under the id, it has ended.
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT v FROM unnest($1::text[]) v WHERE EXISTS"
                                  " (SELECT 1 FROM pg_locks l WHERE l.virtualtransaction = v)",
                                  {TextArray(blockers_)}));
  std::vector<HorizonBlocker> running;
  for (int i = 0; i < PQntuples(res.get()); ++i) {
    const std::string vxid = PQgetvalue(res.get(), i, 0);
    for (const HorizonBlocker& b : blockers_) {
      if (b.vxid == vxid) running.push_back(b);
    }
  }
  blockers_ = std::move(running);
  return blockers_.empty();
}

Result<int64_t> PgHorizon::Advance(PGconn* conn) {
  if (pending_) {
    COURIER_ASSIGN_OR_RETURN(bool ended, BlockersEnded(conn));
    if (!ended) return safe_;
    safe_ = std::max(safe_, candidate_);
    pending_ = false;
  }
  COURIER_RETURN_IF_ERROR(Sample(conn));
  return safe_;
}

Result<int64_t> WaitForHorizon(PGconn* conn, const std::string& table, int64_t start,
                               std::chrono::milliseconds wait) {
  PgHorizon horizon(table, start);
  COURIER_ASSIGN_OR_RETURN(int64_t safe, horizon.Advance(conn));
  if (!horizon.waiting()) return safe;
  // Done once the first candidate is safe: writers that began later need not be waited for.
  const int64_t target = horizon.candidate();
  Clock& clock = Clock::Real();
  const StopSignal never;
  const TimePoint deadline = clock.Now() + wait;
  Duration pause(1);
  while (safe < target) {
    if (clock.Now() >= deadline) {
      return RetriableError("the events table " + QuoteIdent(table) + " has a writer still open (" +
                            horizon.blockers().front().ToString() + "): events above position " +
                            std::to_string(safe) +
                            " may still commit below newer ones; try again when it ends");
    }
    clock.SleepFor(pause, never);
    pause = std::min(pause * 2, Duration(50));
    COURIER_ASSIGN_OR_RETURN(safe, horizon.Advance(conn));
  }
  return safe;
}

}  // namespace courier
