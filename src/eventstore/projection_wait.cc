// Read-your-writes (courier/projection.h): WaitFor and WaitForPosition read the projection's
// checkpoint until it covers the caller's write, woken by the projection's NOTIFY on each
// commit (kProjectionChannel) and, in case one is missed, every 200 ms.
#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <optional>

#include "core/clock.h"
#include "core/postgres.h"
#include "courier/projection.h"
#include "eventstore/projection_source.h"
#include "eventstore/projection_wait.h"
#include "sources/source.h"

namespace courier {
namespace {

// Where the projection is: its checkpoint's value, or nullopt when it has none yet.
using ReadCheckpoint = std::function<Result<std::optional<int64_t>>(PGconn*)>;

std::string FormatTimeout(std::chrono::milliseconds timeout) {
  if (timeout.count() % 1000 == 0) return std::to_string(timeout.count() / 1000) + "s";
  return std::to_string(timeout.count()) + "ms";
}

// Waits until `done(checkpoint)` and returns the checkpoint; after `timeout`, kRetriable with
// `what` and where the projection is; kCancelled once `stop` is requested.
Result<int64_t> WaitUntil(const std::string& db_url, const ReadCheckpoint& read,
                          const std::function<bool(int64_t)>& done, const std::string& what,
                          std::chrono::milliseconds timeout, const StopSignal* stop) {
  const TimePoint deadline = Clock::Real().Now() + timeout;
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(db_url));
  COURIER_RETURN_IF_ERROR(PgRun(conn.get(), std::string("LISTEN ") + kProjectionChannel));
  while (true) {
    COURIER_ASSIGN_OR_RETURN(std::optional<int64_t> at, read(conn.get()));
    if (at && done(*at)) return *at;
    const std::string where =
        at ? "it is at " + std::to_string(*at) : std::string("it has applied nothing");
    // Interrupted is not timed out: the caller was stopped, the projection may be on time.
    if (stop != nullptr && stop->requested()) {
      return Status(StatusCode::kCancelled,
                    "stopped while waiting: " + what + " yet (" + where + ")");
    }
    const TimePoint now = Clock::Real().Now();
    if (now >= deadline) {
      return RetriableError(what + " within " + FormatTimeout(timeout) + " (" + where + ")");
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    PgWaitReadable(conn.get(), static_cast<int>(std::min<int64_t>(left.count(), 200)));
    if (PQconsumeInput(conn.get()) == 0) return PgError(conn.get(), nullptr);
    while (PGnotify* n = PQnotifies(conn.get())) PQfreemem(n);
  }
}

Result<std::optional<int64_t>> ReadOne(PGconn* conn, const std::string& sql,
                                       const PgParams& params) {
  COURIER_ASSIGN_OR_RETURN(PgResult r, PgExec(conn, sql, params));
  if (PQntuples(r.get()) == 0 || PQgetisnull(r.get(), 0, 0)) return std::optional<int64_t>();
  return std::optional<int64_t>(std::strtoll(PQgetvalue(r.get(), 0, 0), nullptr, 10));
}

}  // namespace

Result<int64_t> WaitForOffset(const std::string& db_url, const std::string& name,
                              const std::string& topic, int32_t partition, int64_t offset,
                              std::chrono::milliseconds timeout, const std::string& offsets_table,
                              const StopSignal* stop) {
  const std::string sql = "SELECT next_offset FROM " + QuoteIdent(offsets_table) +
                          " WHERE name = $1 AND ($2 = '' OR topic = $2) AND partition = $3";
  const PgParams params = {name, topic, std::to_string(partition)};
  const std::string where =
      topic.empty()
          ? "partition " + std::to_string(partition) + " offset " + std::to_string(offset)
          : topic + "[" + std::to_string(partition) + "] offset " + std::to_string(offset);
  // The stored value is the next offset to apply; "it is at" shows the last one applied.
  auto read = [&](PGconn* conn) -> Result<std::optional<int64_t>> {
    auto r = PgExec(conn, sql, params);
    // The projection creates its table when it starts: until then it has applied nothing.
    if (!r.ok() && r.status().code() == StatusCode::kNotFound) return std::optional<int64_t>();
    COURIER_RETURN_IF_ERROR(r.status());
    if (PQntuples(r->get()) > 1) {
      return InvalidArgumentError("projection '" + name +
                                  "' reads several topics: name the topic (--topic)");
    }
    if (PQntuples(r->get()) == 0) return std::optional<int64_t>();
    return std::optional<int64_t>(std::strtoll(PQgetvalue(r->get(), 0, 0), nullptr, 10) - 1);
  };
  return WaitUntil(
      db_url, read, [&](int64_t applied) { return applied >= offset; },
      "projection '" + name + "' has not applied " + where, timeout, stop);
}

Result<int64_t> WaitForEventPosition(const std::string& db_url, const std::string& name,
                                     int64_t position, std::chrono::milliseconds timeout,
                                     const std::string& events_table, const StopSignal* stop) {
  const std::string sql = "SELECT position FROM " +
                          QuoteIdent(DerivedName(events_table, "_projections")) +
                          " WHERE name = $1";
  auto read = [&](PGconn* conn) -> Result<std::optional<int64_t>> {
    auto at = ReadOne(conn, sql, {name});
    // Created by migrate or by the projection when it starts: until then nothing is applied.
    if (!at.ok() && at.status().code() == StatusCode::kNotFound) return std::optional<int64_t>();
    return at;
  };
  return WaitUntil(
      db_url, read, [&](int64_t at) { return at >= position; },
      "projection '" + name + "' has not applied position " + std::to_string(position), timeout,
      stop);
}

Status WaitFor(const std::string& db_url, const std::string& name, const std::string& topic,
               int32_t partition, int64_t offset, std::chrono::milliseconds timeout,
               const std::string& offsets_table) {
  return WaitForOffset(db_url, name, topic, partition, offset, timeout, offsets_table, nullptr)
      .status();
}

Status WaitForPosition(const std::string& db_url, const std::string& name, int64_t position,
                       std::chrono::milliseconds timeout, const std::string& events_table) {
  return WaitForEventPosition(db_url, name, position, timeout, events_table, nullptr).status();
}

}  // namespace courier
