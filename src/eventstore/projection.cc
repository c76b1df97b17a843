// The projection engine (courier/projection.h): one loop for both sources
// (eventstore/projection_source.h).
#include "courier/projection.h"

#include <libpq-fe.h>

#include <optional>
#include <utility>

#include "core/backoff.h"
#include "core/clock.h"
#include "core/fault_points.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/url.h"
#include "eventstore/projection_source.h"

namespace courier {
namespace {

Status ValidateOptions(const ProjectionOptions& o) {
  if (o.name.empty()) return InvalidArgumentError("a projection needs a name (--name NAME)");
  if (o.db_url.rfind("postgres", 0) != 0) {
    return InvalidArgumentError("a projection's database is PostgreSQL (postgres://...), not " +
                                RedactUrl(o.db_url));
  }
  // A URL that can never work stops here, with what is wrong, instead of being retried as if
  // the server were down.
  for (const auto& [flag, url] :
       {std::pair{"--db", &o.db_url}, std::pair{"events", &o.events_url}}) {
    if (url->empty()) continue;
    if (auto parsed = ParseUrl(*url); !parsed.ok()) {
      return InvalidArgumentError(std::string("bad PostgreSQL URL (") + flag +
                                  "): " + parsed.status().message());
    }
  }
  if (o.batch_size < 1) return InvalidArgumentError("the batch size must be 1 or more");
  if (!o.from_url.empty() && o.from_url.rfind("kafka://", 0) != 0) {
    return InvalidArgumentError(
        "a projection reads the event store or kafka://host:port/TOPIC, "
        "not " +
        RedactUrl(o.from_url));
  }
  return Status::Ok();
}

// Whether the connection is still usable after a failure (a lost one is made again).
bool Usable(PGconn* conn) { return conn != nullptr && PQstatus(conn) == CONNECTION_OK; }

void Rollback(PGconn* conn) {
  if (Usable(conn)) (void)PgExec(conn, "ROLLBACK");
}

}  // namespace

Projection::Projection(ProjectionOptions options)
    : options_(std::move(options)), stop_(std::make_unique<StopSignal>()) {}

Projection::~Projection() = default;

void Projection::RequestStop() { stop_->Request(); }

Status Projection::Subscribe(const From& from, const ProjectionHandler& handler) {
  const ProjectionOptions& o = options_;
  COURIER_RETURN_IF_ERROR(ValidateOptions(o));
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<ProjectionSource> source,
                           o.from_url.empty() ? MakeEventStoreSource(o) : MakeKafkaSource(o));
  Clock& clock = o.clock != nullptr ? *o.clock : Clock::Real();
  const StopSignal& stop = *stop_;
  Backoff backoff(o.backoff_initial, o.backoff_max, &clock);
  log::Info("projection starting",
            {{"name", o.name},
             {"db", RedactUrl(o.db_url)},
             {"from", o.from_url.empty() ? "event store " + o.events_table : RedactUrl(o.from_url)},
             {"rebuild", from.rebuild}});
  PgConn conn;
  bool rebuild = from.rebuild;
  // Events read but not committed yet: a failed transaction retries them from memory.
  std::vector<ProjectedEvent> pending;
  // After a handler failure, one event per transaction until the failing one has committed,
  // so the events before it are not held back by it.
  std::string failing_event_id;
  auto wait = [&](std::string_view what, const Status& st) {
    log::Warn(what, {{"name", o.name}, {"error", st.message()}});
    backoff.Wait(stop);
  };
  while (!stop.requested()) {
    if (!Usable(conn.get())) {
      conn.reset();
      auto made = PgConnect(o.db_url);
      if (!made.ok()) {
        // A URL libpq refuses, a wrong password or database: retrying cannot help.
        if (made.status().code() == StatusCode::kInvalidArgument) return made.status();
        wait("projection database unavailable; retrying", made.status());
        continue;
      }
      conn = std::move(made).value();
      if (o.idle_in_transaction_timeout.count() > 0) {
        // Integer milliseconds: no quoting, and a bad value is refused by the server.
        if (Status st =
                PgRun(conn.get(), "SET idle_in_transaction_session_timeout = " +
                                      std::to_string(o.idle_in_transaction_timeout.count()));
            !st.ok()) {
          conn.reset();
          wait("projection database unavailable; retrying", st);
          continue;
        }
      }
      if (Status st = source->Prepare(conn.get()); !st.ok()) {
        if (st.code() == StatusCode::kNotFound || st.code() == StatusCode::kInvalidArgument) {
          return st;
        }
        wait("projection cannot start; retrying", st);
        continue;
      }
      if (rebuild) {
        // The reset and the zeroed checkpoint commit together.
        Status st = PgRun(conn.get(), "BEGIN");
        if (st.ok() && from.reset) st = from.reset(conn.get());
        if (st.ok()) st = source->ClearCheckpoint(conn.get());
        if (st.ok()) st = PgRun(conn.get(), "COMMIT");
        if (!st.ok()) {
          Rollback(conn.get());
          if (Usable(conn.get()) && st.code() != StatusCode::kRetriable) return st;
          wait("projection rebuild failed; retrying", st);
          continue;
        }
        log::Info("projection rebuilt: state reset, replaying from the start", {{"name", o.name}});
        rebuild = false;
      }
      // Whatever committed before (even a COMMIT whose answer was lost) is in the checkpoint.
      if (Status st = source->Resume(conn.get()); !st.ok()) {
        // A bad Kafka setting, or records gone from the broker before they were applied.
        if (st.code() == StatusCode::kInvalidArgument ||
            st.code() == StatusCode::kFailedPrecondition) {
          return st;
        }
        wait("projection cannot read its checkpoint; retrying", st);
        conn.reset();
        continue;
      }
      pending.clear();
      failing_event_id.clear();
    }
    if (pending.empty()) {
      auto next = source->Next(o.batch_size, o.poll_interval);
      if (!next.ok()) {
        if (next.status().code() == StatusCode::kNotFound) return next.status();
        wait("projection cannot read events; retrying", next.status());
        continue;
      }
      pending = std::move(next).value();
      if (pending.empty()) continue;
    }
    const size_t n = failing_event_id.empty() ? pending.size() : 1;
    std::vector<ProjectedEvent> batch(pending.begin(), pending.begin() + static_cast<long>(n));
    // The checkpoint first: it takes the checkpoint's row lock, so a second projection of the
    // same name waits here and then finds the checkpoint moved (kAborted).
    Status st = PgRun(conn.get(), "BEGIN");
    if (st.ok()) st = source->SaveCheckpoint(conn.get(), batch);
    if (st.code() == StatusCode::kAborted) {
      Rollback(conn.get());
      log::Warn("projection checkpoint moved by another instance; resuming from it",
                {{"name", o.name}, {"error", st.message()}});
      if (Status r = source->Resume(conn.get()); !r.ok()) conn.reset();
      pending.clear();
      failing_event_id.clear();
      continue;
    }
    // The transaction's id, to find a handler that ended it and began another ("ROLLBACK;
    // BEGIN; ..."): its effects would commit without the checkpoint, again on every retry.
    std::string xact;
    if (st.ok()) {
      auto id = PgExec(conn.get(), "SELECT pg_current_xact_id()::text");
      if (id.ok()) {
        xact = PQgetvalue(id->get(), 0, 0);
      } else {
        st = id.status();
      }
    }
    if (!st.ok()) {
      Rollback(conn.get());
      if (!Usable(conn.get())) conn.reset();
      wait("projection database unavailable; retrying", st);
      continue;
    }
    Status handler_status;
    size_t failed_at = 0;
    for (; failed_at < batch.size(); ++failed_at) {
      handler_status = handler(conn.get(), batch[failed_at]);
      if (!handler_status.ok()) break;
      if (PQtransactionStatus(conn.get()) != PQTRANS_INTRANS) {
        // The handler committed or rolled back on its own: the checkpoint cannot go with its
        // effects any more.
        Rollback(conn.get());
        return FailedPreconditionError(
            "the projection handler ended the transaction itself (COMMIT or ROLLBACK) at event " +
            batch[failed_at].event_id + ": effects and checkpoint must commit together");
      }
    }
    if (!handler_status.ok()) {
      Rollback(conn.get());
      if (stop.requested() || handler_status.code() == StatusCode::kCancelled) {
        // Stopped mid-batch (the handler was cut short): nothing of it committed, so the
        // checkpoint still precedes it and a restart applies it, once.
        log::Info("projection stopping: the batch in hand rolled back",
                  {{"name", o.name},
                   {"first_event_id", batch.front().event_id},
                   {"error", handler_status.message()}});
        break;
      }
      if (!Usable(conn.get())) {
        conn.reset();
        wait("projection database unavailable; retrying", handler_status);
        continue;
      }
      const ProjectedEvent& e = batch[failed_at];
      failing_event_id = e.event_id;
      log::Warn("projection handler failed; retrying", {{"name", o.name},
                                                        {"event_id", e.event_id},
                                                        {"position", e.position},
                                                        {"attempt", backoff.attempt() + 1},
                                                        {"error", handler_status.message()}});
      backoff.Wait(stop);
      continue;
    }
    auto still = PgExec(conn.get(), "SELECT coalesce(pg_current_xact_id_if_assigned()::text, '')");
    if (still.ok() && PQgetvalue(still->get(), 0, 0) != xact) {
      Rollback(conn.get());
      return FailedPreconditionError(
          "the projection handler ended the transaction itself (COMMIT, ROLLBACK or END) in the "
          "batch ending at event " +
          batch.back().event_id + ": effects and checkpoint must commit together");
    }
    ReachFaultPoint(o.fault_points, "project-before-commit");
    st = PgRun(conn.get(), "COMMIT");
    if (!st.ok()) {
      // Committed or not, the checkpoint read back on reconnecting tells.
      conn.reset();
      wait("projection commit failed; resuming from the checkpoint", st);
      continue;
    }
    ReachFaultPoint(o.fault_points, "project-after-commit");
    source->Committed(batch);
    pending.erase(pending.begin(), pending.begin() + static_cast<long>(n));
    applied_.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
    for (const ProjectedEvent& e : batch) {
      if (e.event_id == failing_event_id) failing_event_id.clear();
    }
    backoff.Reset();
    log::Debug("projection batch applied", {{"name", o.name},
                                            {"events", static_cast<int64_t>(n)},
                                            {"last_event_id", batch.back().event_id}});
  }
  log::Info("projection stopped", {{"name", o.name}, {"applied", applied()}});
  return Status::Ok();
}

}  // namespace courier
