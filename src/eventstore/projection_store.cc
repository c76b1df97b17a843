// A projection's event-store source: EventStore::ReadAll (gap-safe: it never returns a
// position whose transaction may still commit) on a connection of its own, and the checkpoint
// in `<events>_projections(name, position, updated_at)` of the projection's database.
#include <libpq-fe.h>

#include <cstdlib>
#include <ctime>
#include <thread>
#include <utility>

#include "core/log.h"
#include "core/url.h"
#include "courier/event_store.h"
#include "eventstore/projection_source.h"
#include "sources/source.h"

namespace courier {
namespace {

// "2026-01-02T03:04:05.123456Z" → microseconds since the epoch (0 when it does not parse).
int64_t MicrosFromIso(const std::string& text) {
  std::tm tm{};
  const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return 0;
  int64_t micros = 0;
  if (*rest == '.') {
    int digits = 0;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest) {
      if (digits++ < 6) micros = micros * 10 + (*rest - '0');
    }
    for (; digits < 6; ++digits) micros *= 10;
  }
  return static_cast<int64_t>(timegm(&tm)) * 1000000 + micros;
}

ProjectedEvent ToProjected(RecordedEvent r) {
  ProjectedEvent p;
  p.event_id = std::move(r.event_id);
  p.stream_type = std::move(r.stream_type);
  p.stream_id = std::move(r.stream_id);
  p.event_type = std::move(r.event_type);
  p.payload = std::move(r.payload);
  p.headers = std::move(r.headers);
  // As `courier relay --event-store` publishes them.
  p.headers.emplace_back("version", std::to_string(r.version));
  p.headers.emplace_back("position", std::to_string(r.position));
  p.version = r.version;
  p.position = r.position;
  p.created_at_us = MicrosFromIso(r.created_at);
  return p;
}

class EventStoreProjectionSource final : public ProjectionSource {
 public:
  explicit EventStoreProjectionSource(const ProjectionOptions& o)
      : name_(o.name),
        events_url_(o.events_url.empty() ? o.db_url : o.events_url),
        store_(o.events_table),
        events_table_(QuoteIdent(o.events_table)),
        table_(QuoteIdent(DerivedName(o.events_table, "_projections"))) {}

  Status Prepare(PGconn* conn) override {
    COURIER_RETURN_IF_ERROR(Events());
    // The events first: a mistyped --events-table leaves no checkpoint table behind.
    Status st = PgExec(events_.get(), "SELECT 1 FROM " + events_table_ + " LIMIT 0").status();
    if (st.code() == StatusCode::kNotFound) {
      return NotFoundError("no event store " + events_table_ + " in " + RedactUrl(events_url_) +
                           " (courier migrate --event-store creates it)");
    }
    if (!st.ok()) {
      events_.reset();
      return st;
    }
    // The same table `courier migrate --event-store` makes beside the events, for a projection
    // kept in another database.
    return PgRun(conn, "CREATE TABLE IF NOT EXISTS " + table_ +
                           " (name text PRIMARY KEY, position bigint NOT NULL "
                           "DEFAULT 0, updated_at timestamptz NOT NULL "
                           "DEFAULT now())");
  }

  Status Resume(PGconn* conn) override {
    COURIER_ASSIGN_OR_RETURN(
        PgResult r, PgExec(conn, "SELECT position FROM " + table_ + " WHERE name = $1", {name_}));
    has_row_ = PQntuples(r.get()) == 1;
    committed_ = has_row_ ? std::strtoll(PQgetvalue(r.get(), 0, 0), nullptr, 10) : 0;
    handed_ = committed_;
    log::Info("projection resuming after its checkpoint",
              {{"name", name_}, {"position", committed_}});
    return Status::Ok();
  }

  Result<std::vector<ProjectedEvent>> Next(int limit, Duration timeout) override {
    COURIER_RETURN_IF_ERROR(Events());
    auto read = store_.ReadAll(events_.get(), handed_, static_cast<size_t>(limit));
    if (!read.ok()) {
      if (PQstatus(events_.get()) != CONNECTION_OK) {
        events_.reset();
        return read.status();
      }
      if (read.status().code() == StatusCode::kRetriable) {
        // The horizon still waits on a transaction that may commit a lower position (ReadAll
        // waited, and names it): never passed, and read again at once, without the backoff
        // that would delay the catch-up after it ends.
        log::Warn(
            "projection waits for a transaction that may still commit an event",
            {{"name", name_}, {"after_position", handed_}, {"error", read.status().message()}});
        return std::vector<ProjectedEvent>();
      }
      return read.status();
    }
    std::vector<ProjectedEvent> out;
    out.reserve(read->size());
    for (RecordedEvent& r : *read) out.push_back(ToProjected(std::move(r)));
    if (out.empty()) {
      std::this_thread::sleep_for(timeout);
    } else {
      handed_ = out.back().position;
    }
    return out;
  }

  Status SaveCheckpoint(PGconn* conn, const std::vector<ProjectedEvent>& batch) override {
    const std::string position = std::to_string(batch.back().position);
    Result<PgResult> r =
        has_row_ ? PgExec(conn,
                          "UPDATE " + table_ +
                              " SET position = $2, updated_at = now() WHERE name = $1 AND "
                              "position = $3",
                          {name_, position, std::to_string(committed_)})
                 : PgExec(conn,
                          "INSERT INTO " + table_ +
                              " (name, position) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                          {name_, position});
    COURIER_RETURN_IF_ERROR(r.status());
    if (std::atoi(PQcmdTuples(r->get())) != 1) {
      return Status(StatusCode::kAborted,
                    "the checkpoint is no longer at position " + std::to_string(committed_));
    }
    return PgExec(conn, "SELECT pg_notify($1, $2)", {kProjectionChannel, name_}).status();
  }

  void Committed(const std::vector<ProjectedEvent>& batch) override {
    committed_ = batch.back().position;
    has_row_ = true;
  }

  Status ClearCheckpoint(PGconn* conn) override {
    return PgExec(conn, "DELETE FROM " + table_ + " WHERE name = $1", {name_}).status();
  }

 private:
  // The connection ReadAll uses, (re)made when needed: never inside the projection's
  // transaction, as ReadAll waits for the transactions writing the events.
  Status Events() {
    if (events_ != nullptr && PQstatus(events_.get()) == CONNECTION_OK) return Status::Ok();
    events_.reset();
    COURIER_ASSIGN_OR_RETURN(events_, PgConnect(events_url_));
    return Status::Ok();
  }

  const std::string name_;
  const std::string events_url_;
  const EventStore store_;
  const std::string events_table_;  // quoted
  const std::string table_;         // quoted
  PgConn events_;
  bool has_row_ = false;  // the checkpoint's row exists (UPDATE it, else INSERT it)
  int64_t committed_ = 0;
  int64_t handed_ = 0;
};

}  // namespace

Result<std::unique_ptr<ProjectionSource>> MakeEventStoreSource(const ProjectionOptions& o) {
  return std::unique_ptr<ProjectionSource>(new EventStoreProjectionSource(o));
}

}  // namespace courier
