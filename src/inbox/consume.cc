#include "inbox/consume.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "brokers/http/http.h"
#include "brokers/registry.h"
#include "core/backoff.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/subprocess.h"
#include "core/url.h"
#include "courier/inbox.h"
#include "inbox/inbox_db.h"
#include "sources/source.h"

namespace courier {
namespace {

// Runs the handler command with the event as a JSON line on stdin. An exit code named
// permanent is a refusal (kRejected); any other failure is retried.
Status RunCommand(const ConsumeOptions& o, const Event& e) {
  auto run = RunShell(o.exec, EventToJsonLine(e) + "\n", o.handler_timeout,
                      /*capture_stdout=*/false);
  if (!run.ok()) {
    if (run.status().code() == StatusCode::kRetriable) {
      return RetriableError("handler " + run.status().message());
    }
    return run.status();
  }
  if (run->exit_code == 0) return Status::Ok();
  const bool permanent = std::find(o.permanent_exit_codes.begin(), o.permanent_exit_codes.end(),
                                   run->exit_code) != o.permanent_exit_codes.end();
  const std::string what = "handler exited with " + std::to_string(run->exit_code);
  return permanent ? RejectedError(what + " (a permanent failure)") : RetriableError(what);
}

// A database error that retrying cannot fix: the inbox or parked table is missing (run
// migrate). Anything else (the server away, restarting, a lock timeout) is waited out.
bool PermanentDbError(const Status& st) { return st.code() == StatusCode::kNotFound; }

}  // namespace

Status ValidateHandler(const ConsumeOptions& o) {
  if (o.consumer.empty()) return InvalidArgumentError("--consumer NAME is required");
  if (o.to_url.empty() == o.exec.empty()) {
    return InvalidArgumentError("give the handler as --to http(s)://... or --exec COMMAND (one)");
  }
  if (o.max_attempts < 0) {
    return InvalidArgumentError("--max-attempts must be 0 (no limit) or more");
  }
  for (int code : o.permanent_exit_codes) {
    if (code < 1 || code > 255) {
      return InvalidArgumentError("--permanent-exit-codes takes exit codes from 1 to 255, not " +
                                  std::to_string(code));
    }
  }
  if (!o.to_url.empty()) COURIER_RETURN_IF_ERROR(InitCurl());
  return Status::Ok();
}

Status CallHandler(const ConsumeOptions& o, const Event& e) {
  return o.to_url.empty() ? RunCommand(o, e) : PostEvent(o.to_url, e, o.handler_timeout);
}

Result<ParkedRetry> RetryParked(const ConsumeOptions& o, InboxDb& db, const ParkedEvent& p) {
  COURIER_ASSIGN_OR_RETURN(const Event e, EventFromJsonLine(p.event));
  const Inbox inbox(o.consumer, o.inbox_table);
  Status handler_status;
  bool called = false;
  // The claim, the handler and the parked row's removal commit together.
  auto ran = db.Process(inbox, e.event_id, [&]() -> Status {
    called = true;
    handler_status = CallHandler(o, e);
    COURIER_RETURN_IF_ERROR(handler_status);
    return db.DeleteParked(o.parked_table, o.consumer, p.id).status();
  });
  if (ran.ok()) {
    if (*ran) return ParkedRetry{.handled = true};
    // Handled since (a redelivery after the cause was fixed): the row only goes.
    COURIER_RETURN_IF_ERROR(db.DeleteParked(o.parked_table, o.consumer, p.id).status());
    return ParkedRetry{.handled = false};
  }
  if (!called || handler_status.ok()) return ran.status();  // the database's failure
  COURIER_RETURN_IF_ERROR(db.UpdateParked(o.parked_table, p.id, handler_status.message()));
  return ParkedRetry{.handled = false, .failure = handler_status};
}

Status RunConsumer(const ConsumeOptions& o, const StopSignal& stop) {
  COURIER_RETURN_IF_ERROR(ValidateHandler(o));
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(o.db_url));
  COURIER_ASSIGN_OR_RETURN(
      std::unique_ptr<Reader> source,
      MakeReader(ReaderOptions{.url = o.from_url, .group = o.consumer, .claim_idle = o.claim_idle},
                 "consume"));
  InboxDb db(loc);
  COURIER_RETURN_IF_ERROR(db.Connect());
  const Inbox inbox(o.consumer, o.inbox_table);
  const std::string handler_name = o.to_url.empty() ? "exec" : RedactUrl(o.to_url);
  log::Info("consumer starting", {{"from", RedactUrl(o.from_url)},
                                  {"db", RedactUrl(o.db_url)},
                                  {"consumer", o.consumer},
                                  {"handler", handler_name}});
  Clock& clock = o.clock != nullptr ? *o.clock : Clock::Real();
  Backoff source_backoff(o.backoff_initial, o.backoff_max, &clock);
  TimePoint next_prune = clock.Now();
  int64_t handled = 0, duplicates = 0, parked = 0;
  Status fatal;
  while (!stop.requested() && fatal.ok()) {
    if (o.retention.count() > 0 && clock.Now() >= next_prune) {
      auto pruned = db.Prune(inbox, o.retention);
      if (!pruned.ok()) log::Warn("inbox prune failed", {{"error", pruned.status().message()}});
      next_prune = clock.Now() + std::chrono::seconds(60);
    }
    auto next = source->Next(Duration(500));
    if (!next.ok()) {
      log::Warn("reading failed; retrying", {{"error", next.status().message()}});
      source_backoff.Wait(stop);
      continue;
    }
    source_backoff.Reset();
    if (!next->has_value()) continue;
    const Message& d = **next;
    const Event& e = d.event;
    // One backoff for the event, like the relay's: transient failures of the handler and of
    // the database are retried until they pass, the delay doubling up to --backoff-max.
    Backoff backoff(o.backoff_initial, o.backoff_max, &clock);
    int attempts = 0;  // calls of the handler that failed
    std::optional<Status> park_reason;
    if (e.event_id.empty()) park_reason = RejectedError("the message carries no event_id");
    bool done = false;
    while (!done && !stop.requested()) {
      if (!park_reason) {
        Status handler_status;
        bool called = false;
        Result<bool> ran = db.Process(inbox, e.event_id, [&] {
          called = true;
          handler_status = CallHandler(o, e);
          return handler_status;
        });
        if (ran.ok()) {
          ReachFaultPoint(o.fault_points, "consume-after-commit");
          if (*ran) {
            ++handled;
          } else {
            ++duplicates;
          }
          log::Debug(*ran ? "handled" : "duplicate skipped", {{"event_id", e.event_id}});
          done = true;
          break;
        }
        if (!called || handler_status.ok()) {
          // The inbox's database failed (the claim, or the commit after the handler): not
          // the handler's failure, so nothing is parked for it. The handler may be called
          // again for this event once the database is back (its claim did not commit).
          if (PermanentDbError(ran.status())) {
            fatal = ran.status();
            break;
          }
          log::Warn("inbox database unavailable; retrying",
                    {{"event_id", e.event_id}, {"error", ran.status().message()}});
          db.Reset();
          backoff.Wait(stop);
          continue;
        }
        ++attempts;
        const bool permanent = handler_status.code() == StatusCode::kRejected;
        if (!permanent && (o.max_attempts == 0 || attempts < o.max_attempts)) {
          log::Warn("handler failed; retrying", {{"event_id", e.event_id},
                                                 {"attempt", attempts},
                                                 {"error", handler_status.message()}});
          backoff.Wait(stop);
          continue;
        }
        park_reason = handler_status;
      }
      // Parked: the reason is kept, the message acknowledged, the next ones go on.
      Status st = db.Park(o.parked_table, o.consumer, e, park_reason->message(), attempts);
      if (!st.ok()) {
        if (PermanentDbError(st)) {
          fatal = st;
          break;
        }
        log::Warn("cannot park the event; retrying",
                  {{"event_id", e.event_id}, {"error", st.message()}});
        db.Reset();
        backoff.Wait(stop);
        continue;
      }
      ++parked;
      log::Error(
          "event parked",
          {{"event_id", e.event_id}, {"attempts", attempts}, {"error", park_reason->message()}});
      done = true;
    }
    if (!done) break;  // stopping: the message stays unacknowledged and comes again
    if (Status st = source->Ack(d); !st.ok()) {
      // Redelivered later and skipped by the inbox.
      log::Warn("acknowledgement failed", {{"event_id", e.event_id}, {"error", st.message()}});
    }
  }
  log::Info("consumer stopped",
            {{"handled", handled}, {"duplicates", duplicates}, {"parked", parked}});
  // The message in hand stays unacknowledged and comes again.
  return fatal;
}

}  // namespace courier
