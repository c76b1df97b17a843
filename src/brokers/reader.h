// A Reader takes a broker's messages back as courier events, one at a time, and acknowledges
// each once its consumer is done with it. `courier consume` reads through one as a consumer
// group (acking after the inbox committed); `courier tail` and the tests' checks read without a
// group, from the oldest message or from new ones, acknowledging nothing. Every broker that can
// be read implements both in its folder and names its factory in the registry
// (brokers/registry.h).
//
// Thread-safety: a Reader is used by one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier {

struct ReaderOptions {
  std::string url;
  // The consumer group (Kafka group.id, Redis Streams group, NATS durable): members of one
  // group share the messages, and an acknowledged message is not given to the group again.
  // Empty: read without a group; nothing is acknowledged (Ack does nothing), a queue's
  // messages stay in it, and no topic, stream or queue is created.
  std::string group;
  // Redis Streams: entries another member read but did not acknowledge for this long are
  // taken over (the member died). NATS: the consumer's AckWait.
  Duration claim_idle{30000};
  // Without a group: start at the oldest message there, not at the next new one.
  bool from_beginning = false;
  // Without a group: read what is there and end; Next's nullopt then means the end (Kafka:
  // every partition read up to where it ended when reading began; the others: nothing
  // arrived within the timeout).
  bool to_end = false;
  // Kafka without a group: a topic that does not exist is waited for (Next gives nothing
  // until it is created, and then its first message) instead of kNotFound.
  bool wait_for_topic = false;
};

// One message as the sink wrote it, and where it was.
struct Message {
  Event event;            // key, payload and headers rebuilt as the event the sink sent
  std::string topic;      // Kafka topic, Redis stream, NATS subject or RabbitMQ queue
  std::string id;         // Redis: the entry id
  int32_t partition = 0;  // Kafka
  int64_t offset = 0;     // Kafka: the offset; RabbitMQ: the delivery tag
  // The reader's own state for Ack (the NATS message; the RabbitMQ connection it came on).
  std::shared_ptr<void> handle;
  uint64_t generation = 0;
  // Where it was, as the JSON object `courier tail` prints with the event:
  // {"topic":…,"partition":…,"offset":…}, {"stream":…,"id":…}, {"subject":…}, {"queue":…}
  // or {"exchange":…}.
  std::string where;
  // A file's line as the sink wrote it (the file reader gives it as it is, not re-encoded).
  std::string line;
};

class Reader {
 public:
  virtual ~Reader() = default;
  // The next message, or nullopt when none arrived within `timeout`. An error is worth
  // retrying (the broker away) unless it is kInvalidArgument (the URL or its settings).
  virtual Result<std::optional<Message>> Next(Duration timeout) = 0;
  // Acknowledges `message` (and, for Kafka, the partition up to it). A message not
  // acknowledged comes again, to this reader or another member of its group.
  virtual Status Ack(const Message& message) = 0;
};

// One per readable broker, each in its folder (a group reader when options.group is set, else
// a plain one); the registry names them. What a reader refuses in its URL it refuses here,
// before connecting.
Result<std::unique_ptr<Reader>> MakeKafkaReader(const ReaderOptions& options);
Result<std::unique_ptr<Reader>> MakeRedisReader(const ReaderOptions& options);
Result<std::unique_ptr<Reader>> MakeNatsReader(const ReaderOptions& options);
Result<std::unique_ptr<Reader>> MakeAmqpReader(const ReaderOptions& options);
Result<std::unique_ptr<Reader>> MakeFileReader(const ReaderOptions& options);

}  // namespace courier
