// Command log: the write side of listen-to-yourself. A command handler turns the command into
// an event and appends it to Kafka FIRST; the database is changed later, by a projector that
// consumes the topic and stores the consumed offsets in the same transaction as its effects
// (docs/event-sourcing.md). Append returns only once the broker acknowledged the event
// (idempotent producer, acks=all), with the partition and offset it got: the caller can then
// wait for the projector to pass that offset (read-your-writes).
//
//   auto log = courier::CommandLog::Open({.url = "kafka://127.0.0.1:9092/{aggregate_type}"});
//   if (!log.ok()) { ... log.status() says why ... }
//   auto at = (*log)->Append({.stream_type = "account", .stream_id = "acct-1",
//                             .event_type = "FundsDeposited", .payload = R"({"amount":100})"});
//   if (!at.ok()) { ... kRetriable: not acknowledged in time, send again (same event_id) ... }
//   // at->topic, at->partition, at->offset
//
// On the wire it is what the relay's Kafka sink writes for an outbox event (DESIGN §2): key =
// stream_id, value = payload, headers event_id, event_type, aggregate_type (= stream_type)
// plus the event's own, timestamp = when Append was called. So every courier consumer
// (`courier consume`, `courier project --from kafka://`, `courier tail`) reads it.
//
// The same in any language, with any Kafka client:
//   1. a producer with enable.idempotence=true and acks=all (so the broker's retries neither
//      lose nor reorder nor duplicate what one producer sends);
//   2. produce key = stream_id, value = payload, headers event_id (a fresh UUID, kept across
//      retries of the same command), event_type, aggregate_type;
//   3. wait for the delivery report; its partition and offset are the command's position;
//      report success to the caller only then. No report within your deadline: the outcome
//      is unknown; send it again with the same event_id (consumers dedupe by event_id).
//
// Thread-safety: a CommandLog may be shared; Append may be called from several threads at
// once (each waits for its own acknowledgement).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "courier/event.h"
#include "courier/status.h"

namespace courier {

struct CommandLogOptions {
  // kafka://host:port[,host:port]/TOPIC[?librdkafka.property=value&...]; TOPIC may use
  // {aggregate_type} and {event_type} (default {aggregate_type}), as the Kafka sink's URL.
  std::string url;
  // How long Append waits for the broker's acknowledgement before it returns kRetriable.
  std::chrono::milliseconds timeout{10000};
};

struct CommandEvent {
  std::string stream_type;  // aggregate_type on the wire; routes to a topic
  std::string stream_id;    // the key: every event of a stream goes to one partition, in order
  std::string event_type;
  std::string payload;   // passed through untouched
  Headers headers;       // optional, sent as Kafka headers
  std::string event_id;  // optional; a fresh UUIDv7 when empty. Keep it when sending again.
};

// Where the broker stored an event. Offsets grow per partition: a projector that consumed
// (topic, partition) up to offset has applied this event.
struct LogPosition {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string event_id;  // the event's, as sent (the generated one when none was given)
};

class CommandLog {
 public:
  // Checks the URL and creates the producer (nothing is sent yet). kInvalidArgument for a bad
  // URL or librdkafka property.
  static Result<std::unique_ptr<CommandLog>> Open(const CommandLogOptions& options);
  ~CommandLog();
  CommandLog(const CommandLog&) = delete;
  CommandLog& operator=(const CommandLog&) = delete;

  // Sends the event and waits for the broker's acknowledgement. Errors:
  //  - kRetriable: not acknowledged within the timeout (broker down or unreachable). The event
  //    may still have been written: send it again with the same event_id;
  //  - kRejected: the broker refuses this event for good (too large, invalid topic);
  //  - kInvalidArgument: the event misses stream_type, stream_id or event_type;
  //  - kFatal: the producer hit a fatal error; open a new CommandLog.
  Result<LogPosition> Append(const CommandEvent& event);

  // A fresh event_id (UUIDv7): set it in the CommandEvent before the first Append, so that
  // sending the command again after a timeout carries the same id.
  static std::string NewEventId();

 private:
  struct Impl;
  explicit CommandLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace courier
