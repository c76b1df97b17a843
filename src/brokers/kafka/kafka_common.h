// librdkafka handles and settings shared by the Kafka sink, the Kafka reader and the dev
// broker.
//
// Thread-safety: librdkafka handles are thread-safe; the helpers are pure.
#pragma once

#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
struct KafkaConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
struct KafkaHeadersDeleter {
  void operator()(rd_kafka_headers_t* h) const { rd_kafka_headers_destroy(h); }
};
using KafkaHandle = std::unique_ptr<rd_kafka_t, KafkaDeleter>;
using KafkaConf = std::unique_ptr<rd_kafka_conf_t, KafkaConfDeleter>;
using KafkaHeaders = std::unique_ptr<rd_kafka_headers_t, KafkaHeadersDeleter>;

// A configuration with each property set; an unknown property or bad value is
// kInvalidArgument naming it (secret values are not repeated).
Result<KafkaConf> MakeKafkaConf(const std::vector<std::pair<std::string, std::string>>& props);

// The settings every courier producer starts from (the relay's Kafka sink, the command log):
// idempotent, acks=all, so the broker's retries neither lose, reorder nor duplicate what one
// producer sends; `delivery_timeout` 0 waits for an ack however long the broker is away.
std::vector<std::pair<std::string, std::string>> KafkaProducerSettings(const std::string& bootstrap,
                                                                       Duration delivery_timeout);

// The wire headers of DESIGN §2: event_id, event_type, aggregate_type, then the event's own.
// (EventFromKafkaMessage in kafka_reader.h reads them back.)
KafkaHeaders MakeEventHeaders(const Event& event);

// Asks for `topic`'s metadata once, synchronously (up to `timeout`): librdkafka parks the first
// messages for a topic it has no metadata for until a broker thread wakes up (up to a second),
// so a producer that asks first sends its first message to a topic at once.
void FetchTopicMetadata(rd_kafka_t* producer, const std::string& topic,
                        Duration timeout = Duration(5000));

// Errors the broker or client will give again for the same message, whatever the retries.
bool IsPermanentKafkaError(rd_kafka_resp_err_t err);

}  // namespace courier
