// `courier consume`: delivers each event of a broker to a handler in any language (an HTTP
// endpoint or a command) once per consumer, keeping the inbox in courier's database.
//
// Per message: BEGIN; claim (consumer, event_id) in the inbox; call the handler (a duplicate
// skips it); COMMIT; then acknowledge the message to the broker (Kafka: commit the offset;
// Redis Streams: XACK; NATS JetStream: AckSync; RabbitMQ: basic.ack). A crash between the commit
// and the ack redelivers the message and the inbox skips it. A failing handler rolls the claim back
// and is retried with backoff; after `max_attempts` (or at once for a permanent refusal: HTTP 4xx
// other than 408/429) the event is parked in courier_inbox_parked with the reason and the message
// acknowledged, so one poison event does not stop the others.
//
// Thread-safety: Run() on one thread; RequestStop() from any thread or a signal handler.
#pragma once

#include <chrono>
#include <string>

#include "core/clock.h"
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
  int max_attempts = 5;
  Duration handler_timeout{30000};
  Duration backoff_initial{200};
  Duration backoff_max{10000};
  // Redis Streams: entries another instance read but did not acknowledge for this long are
  // taken over (the instance died). NATS: the consumer's AckWait.
  Duration claim_idle{30000};
  // Inbox entries older than this are pruned every minute; zero keeps them.
  std::chrono::seconds retention{0};
  std::string inbox_table = "courier_inbox";
  std::string parked_table = "courier_inbox_parked";
};

// Runs until `stop` is requested (then finishes the message in hand) or a start-up error.
Status RunConsumer(const ConsumeOptions& options, const StopSignal& stop);

}  // namespace courier
