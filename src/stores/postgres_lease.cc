#include "stores/postgres_lease.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "core/log.h"

namespace courier {
namespace {

int64_t SteadyNs(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Runs one statement, waiting for its result until `deadline` at most; kRetriable when the
// deadline passes or the session is gone.
Result<PgResult> ExecBefore(const Clock& clock, PGconn* conn, const std::string& sql,
                            const PgParams& params, TimePoint deadline) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  if (PQsendQueryParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                        nullptr, nullptr, 0) == 0) {
    return PgError(conn, nullptr);
  }
  while (PQisBusy(conn)) {
    const auto left = std::chrono::duration_cast<Duration>(deadline - clock.Now());
    if (left.count() <= 0) return RetriableError("no answer from the database in time");
    pollfd p{PQsocket(conn), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100))) < 0) continue;
    if (PQconsumeInput(conn) == 0) return PgError(conn, nullptr);
  }
  PgResult last;
  while (PGresult* r = PQgetResult(conn)) last.reset(r);
  const ExecStatusType status = last ? PQresultStatus(last.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return PgError(conn, last.get());
  return last;
}

std::string Ms(Duration d) { return std::to_string(d.count()); }

}  // namespace

std::string LeaseHolderName() {
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  return std::string(host) + ":" + std::to_string(::getpid());
}

PostgresLease::PostgresLease(LeaseOptions options)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &Clock::Real()) {}

PostgresLease::~PostgresLease() { Release(); }

Status PostgresLease::TryLock(bool* locked) {
  COURIER_ASSIGN_OR_RETURN(
      PgResult res,
      PgExec(conn_.get(), "SELECT pg_try_advisory_lock(hashtext($1))", {options_.name}));
  *locked = std::string(PQgetvalue(res.get(), 0, 0)) == "t";
  return Status::Ok();
}

Status PostgresLease::WaitForExpiry(const StopSignal& stop) {
  const std::string table = QuoteIdent(options_.table);
  auto inserted = PgExec(conn_.get(),
                         "INSERT INTO " + table +
                             " (name, holder, expires_at) VALUES ($1, $2, now())"
                             " ON CONFLICT (name) DO NOTHING",
                         {options_.name, LeaseHolderName()});
  if (!inserted.ok()) {
    if (inserted.status().code() == StatusCode::kNotFound) {
      return NotFoundError("table " + table + " does not exist in " + options_.describe +
                           "; create it with: courier migrate --source " + options_.describe);
    }
    return inserted.status();
  }
  bool logged = false;
  while (!stop.requested()) {
    COURIER_ASSIGN_OR_RETURN(
        PgResult res, PgExec(conn_.get(),
                             "SELECT greatest(0, ceil(extract(epoch FROM expires_at - now()) *"
                             " 1000))::int8, holder FROM " +
                                 table + " WHERE name = $1",
                             {options_.name}));
    const Duration left(std::stoll(PQgetvalue(res.get(), 0, 0)));
    if (left.count() == 0) return Status::Ok();
    // A holder on this host whose process is gone cannot publish any more: no need to wait
    // (a relay restarted after a crash). Elsewhere only the clock can tell.
    const std::string holder = PQgetvalue(res.get(), 0, 1);
    const std::string self = LeaseHolderName();
    const size_t colon = holder.rfind(':');
    if (colon != std::string::npos &&
        self.compare(0, self.rfind(':') + 1, holder, 0, colon + 1) == 0) {
      const pid_t pid = static_cast<pid_t>(std::atoll(holder.c_str() + colon + 1));
      if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
        log::Info("the previous relay's process is gone; taking over without waiting",
                  {{"holder", holder}});
        return Status::Ok();
      }
    }
    if (!logged) {
      log::Info(
          "waiting for the previous relay's lease to run out",
          {{"holder", PQgetvalue(res.get(), 0, 1)}, {"ms", static_cast<int64_t>(left.count())}});
      logged = true;
    }
    clock_->SleepFor(std::min(left, Duration(200)), stop);
  }
  return CancelledError("stopped while standing by");
}

Status PostgresLease::Acquire(const StopSignal& stop, bool wait, StopSignal* fence) {
  Release();
  COURIER_ASSIGN_OR_RETURN(conn_, PgConnect(options_.conninfo));
  const std::string table = QuoteIdent(options_.table);
  bool logged = false;
  while (true) {
    if (stop.requested()) return CancelledError("stopped while standing by");
    bool locked = false;
    COURIER_RETURN_IF_ERROR(TryLock(&locked));
    if (locked) break;
    if (!wait) {
      return FailedPreconditionError("another relay is active on this outbox (" +
                                     options_.describe +
                                     "); stop it first, or run without --once to stand by");
    }
    if (!logged) {
      log::Info("another relay is active on this outbox; standing by", {{"lease", options_.name}});
      logged = true;
    }
    // A holder whose session lives on but who stopped renewing (frozen, partitioned) is cut
    // off once its lease is a whole period overdue: its own clock has fenced it long before.
    // pg_locks is cluster-wide: only this database's holder is ours to end (a relay of an
    // outbox of the same name in another database holds the same key).
    auto evicted =
        PgExec(conn_.get(),
               "SELECT pg_terminate_backend(l.pid), l.pid FROM pg_locks l JOIN " + table +
                   " t ON t.name = $1 WHERE l.locktype = 'advisory' AND l.granted AND"
                   " l.database = (SELECT oid FROM pg_database WHERE datname ="
                   " current_database()) AND"
                   " l.objid = (hashtext($1)::bigint & 4294967295)::oid AND"
                   " t.expires_at < now() - make_interval(secs => $2::float8 / 1000)",
               {options_.name, Ms(options_.lease)});
    if (evicted.ok() && PQntuples(evicted->get()) > 0) {
      log::Warn("the active relay stopped renewing its lease; ended its session",
                {{"pid", PQgetvalue(evicted->get(), 0, 1)}, {"lease", options_.name}});
    }
    clock_->SleepFor(Duration(500), stop);
  }
  COURIER_RETURN_IF_ERROR(WaitForExpiry(stop));
  if (stop.requested()) return CancelledError("stopped while standing by");
  const TimePoint sent = clock_->Now();
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn_.get(),
                                  "UPDATE " + table +
                                      " SET holder = $2, epoch = epoch + 1, acquired_at ="
                                      " now(), renewed_at = now(), expires_at = now() +"
                                      " make_interval(secs => $3::float8 / 1000)"
                                      " WHERE name = $1 RETURNING epoch",
                                  {options_.name, LeaseHolderName(), Ms(options_.lease)}));
  epoch_ = std::stoll(PQgetvalue(res.get(), 0, 0));
  valid_until_ns_ = SteadyNs(sent + options_.lease * 3 / 4);
  fence_ = fence;
  // The publish path sees the lease's end itself: a relay frozen past it sends nothing when it
  // resumes, even before the renewer below wakes up to notice.
  if (fence_ != nullptr) fence_->BeginTerm(sent + options_.lease * 3 / 4);
  held_ = true;
  quit_.Reset();
  renewer_ = std::thread([this] { Renew(); });
  log::Info(logged ? "took over the outbox" : "holding the outbox lease",
            {{"lease", options_.name},
             {"epoch", epoch_},
             {"lease_ms", static_cast<int64_t>(options_.lease.count())}});
  return Status::Ok();
}

void PostgresLease::Renew() {
  const std::string sql = "UPDATE " + QuoteIdent(options_.table) +
                          " SET renewed_at = now(), expires_at = now() + make_interval(secs =>"
                          " $3::float8 / 1000), published = $4, per_second = $5"
                          " WHERE name = $1 AND epoch = $2";
  // The last minute of published counts, from the start of the term: what is published
  // before the first renewal counts too.
  std::deque<std::pair<TimePoint, int64_t>> samples = {{clock_->Now(), published_.load()}};
  while (true) {
    if (!clock_->SleepFor(options_.lease / 4, quit_)) return;
    const TimePoint sent = clock_->Now();
    const TimePoint valid_until{std::chrono::nanoseconds(valid_until_ns_.load())};
    if (sent >= valid_until) return Lose("the lease was not renewed in time");
    const int64_t published = published_.load();
    samples.emplace_back(sent, published);
    while (samples.size() > 1 && sent - samples.front().first > std::chrono::seconds(60)) {
      samples.pop_front();
    }
    const double secs = std::chrono::duration<double>(sent - samples.front().first).count();
    const double rate =
        secs > 0 ? static_cast<double>(published - samples.front().second) / secs : 0;
    auto res = ExecBefore(*clock_, conn_.get(), sql,
                          {options_.name, std::to_string(epoch_), Ms(options_.lease),
                           std::to_string(published), std::to_string(rate)},
                          valid_until);
    if (!res.ok()) return Lose(res.status().message());
    if (std::string(PQcmdTuples(res->get())) != "1") {
      return Lose("another relay holds the lease now");
    }
    valid_until_ns_ = SteadyNs(sent + options_.lease * 3 / 4);
    if (fence_ != nullptr) fence_->Extend(sent + options_.lease * 3 / 4);
  }
}

bool PostgresLease::held() const {
  return held_.load() && clock_->Now() < TimePoint(std::chrono::nanoseconds(valid_until_ns_));
}

void PostgresLease::Lose(const std::string& why) {
  held_ = false;
  if (fence_ != nullptr) fence_->Abandon();
  log::Error("lost the outbox lease; stopped publishing",
             {{"lease", options_.name}, {"reason", why}});
}

void PostgresLease::Release() {
  quit_.Request();
  if (renewer_.joinable()) renewer_.join();
  if (held_ && !held()) {
    // The deadline passed before the renewer ran (a frozen process that resumed): the lease
    // may be another relay's by now, so it is not handed back, only reported as lost.
    Lose("the lease ran out before it was renewed");
  } else if (conn_ && held_) {
    // Best effort: a standby otherwise waits for the lease to expire.
    (void)ExecBefore(*clock_, conn_.get(),
                     "UPDATE " + QuoteIdent(options_.table) +
                         " SET expires_at = now() WHERE name = $1 AND epoch = $2",
                     {options_.name, std::to_string(epoch_)}, clock_->Now() + Duration(2000));
  }
  held_ = false;
  fence_ = nullptr;
  conn_.reset();
}

}  // namespace courier
