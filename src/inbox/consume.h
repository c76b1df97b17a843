// `courier consume`: delivers each event of a broker to a handler in any language (an HTTP
// endpoint or a command) once per consumer, keeping the inbox in courier's database.
//
// Per message: BEGIN; claim (consumer, event_id) in the inbox; call the handler (a duplicate
// skips it); COMMIT; then acknowledge the message to the broker (Kafka: commit the offset;
// Redis Streams: XACK; NATS JetStream: AckSync; RabbitMQ: basic.ack). A crash between the commit
// and the ack redelivers the message and the inbox skips it.
//
// Failures, as the relay classes a sink's: a transient failure of the handler (HTTP 5xx, 408,
// 429, a connection error, a timeout, a non-zero exit) rolls the claim back and is retried with
// capped backoff until it passes (or, with `max_attempts`, that many times); a permanent one
// (any other HTTP 4xx, an exit code listed in `permanent_exit_codes`) parks the event at once
// in courier_inbox_parked with the reason, and the message is acknowledged, so one poison event
// does not stop the others. A failure of the inbox's database is not the handler's: it is
// retried without counting an attempt and never parks anything (a missing table stops the
// consumer instead).
//
// Thread-safety: Run() on one thread; RequestStop() from any thread or a signal handler.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/event.h"
#include "core/fault_points.h"
#include "courier/status.h"

namespace courier {

struct ConsumeOptions {
  // kafka://hosts/TOPIC[,TOPIC], redis://host:port/STREAM, nats://host:port/SUBJECT or
  // amqp://host:port/VHOST/?queue=NAME
  std::string from_url;
  std::string db_url;    // postgres://... or sqlite:///path: where the inbox lives
  std::string consumer;  // the inbox's consumer name, also the Kafka group / Redis group
  std::string to_url;    // http(s)://handler: POST per event, 2xx means handled
  std::string exec;      // or a shell command: the event as a JSON line on stdin, exit 0
  // Handler calls failing transiently before the event is parked; 0: no limit.
  int max_attempts = 0;
  // --exec exit codes that mean "this event can never be handled": parked at once.
  std::vector<int> permanent_exit_codes;
  Duration handler_timeout{30000};
  Duration backoff_initial{200};
  Duration backoff_max{30000};
  // Redis Streams: entries another instance read but did not acknowledge for this long are
  // taken over (the instance died). NATS: the consumer's AckWait.
  Duration claim_idle{30000};
  // Inbox entries older than this are pruned every minute; zero keeps them.
  std::chrono::seconds retention{0};
  std::string inbox_table = "courier_inbox";
  std::string parked_table = "courier_inbox_parked";
  // Injected (not owned): the clock that times backoff and pruning (null: the real one), and
  // the fault points (null in normal runs; the CLI sets them from COURIER_FAILPOINTS).
  Clock* clock = nullptr;
  FaultPoints* fault_points = nullptr;
};

class InboxDb;
struct ParkedEvent;

// Runs until `stop` is requested (then finishes the message in hand), a start-up error or a
// permanent error of the inbox's database.
Status RunConsumer(const ConsumeOptions& options, const StopSignal& stop);

// Checks the handler options (consumer, --to or --exec, attempts, exit codes).
Status ValidateHandler(const ConsumeOptions& options);
// Calls the handler once for `event`: kRejected for a permanent refusal, kRetriable (or
// another code) for a failure worth retrying.
Status CallHandler(const ConsumeOptions& options, const Event& event);

struct ParkedRetry {
  bool handled = false;  // false: already handled since (the row is removed), or `failure`
  Status failure;        // the handler's failure; the row stays, its attempts counted
};
// `consume parked retry`: delivers a parked event to the handler once, through the inbox: the
// claim, the handler and the row's removal commit together. An error is the database's.
Result<ParkedRetry> RetryParked(const ConsumeOptions& options, InboxDb& db,
                                const ParkedEvent& parked);

}  // namespace courier
