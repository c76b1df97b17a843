// A Reader takes a broker's messages back as courier events, one at a time, and acknowledges
// each once its consumer is done with it. `courier consume` reads through one (as a consumer
// group, acking after the inbox committed); every broker that can be read implements it in its
// folder and names its factory in the registry (brokers/registry.h).
//
// Thread-safety: a Reader is used by one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/clock.h"
#include "courier/event.h"
#include "courier/status.h"

namespace courier {

struct ReaderOptions {
  std::string url;
  // The consumer group (Kafka group.id, Redis Streams group, NATS durable): members of one
  // group share the messages, and an acknowledged message is not given to the group again.
  std::string group;
  // Redis Streams: entries another member read but did not acknowledge for this long are
  // taken over (the member died). NATS: the consumer's AckWait.
  Duration claim_idle{30000};
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

// One per readable broker, each in its folder; the registry names them.
Result<std::unique_ptr<Reader>> MakeKafkaGroupReader(const ReaderOptions& options);
Result<std::unique_ptr<Reader>> MakeRedisGroupReader(const ReaderOptions& options);
Result<std::unique_ptr<Reader>> MakeNatsGroupReader(const ReaderOptions& options);
Result<std::unique_ptr<Reader>> MakeAmqpGroupReader(const ReaderOptions& options);

}  // namespace courier
