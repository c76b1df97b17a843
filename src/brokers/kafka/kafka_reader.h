// Reads courier events back from Kafka topics: `courier tail`, the demo's verdict and the
// tests' checks. Assigns every partition of the topics directly (no consumer group).
//
// Thread-safety: one thread at a time.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "brokers/kafka/kafka_common.h"
#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier {

struct KafkaRecord {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  Event event;  // aggregate_id from the key, payload from the value, ids from headers
};

class KafkaReader {
 public:
  // `brokers` is a bootstrap list ("host:port,..."); `props` are extra librdkafka settings.
  static Result<std::unique_ptr<KafkaReader>> Open(
      const std::string& brokers, std::vector<std::string> topics, bool from_beginning,
      const std::vector<std::pair<std::string, std::string>>& props = {});

  // Which of the topics the cluster does not have (asking creates none). kRetriable when the
  // cluster does not answer.
  Result<std::vector<std::string>> MissingTopics();
  // The next record, or nullopt when none arrived within `timeout`. Topics that do not exist
  // yet are looked up again from time to time.
  Result<std::optional<KafkaRecord>> Poll(Duration timeout);
  // Every record up to the current end of every partition. kRetriable after `timeout`.
  Result<std::vector<KafkaRecord>> ReadToEnd(Duration timeout);
  // ReadToEnd one record at a time, so that a reader of a large topic holds none of it
  // (`courier tail --exit-at-end`, `courier audit`): BeginReadToEnd, then NextToEnd until it
  // gives nullopt (every partition at its end); kRetriable once `deadline` passed first.
  Status BeginReadToEnd();
  Result<std::optional<KafkaRecord>> NextToEnd(TimePoint deadline);
  // Partitions to start at a given offset (the next one to read) instead of the beginning or
  // the end, when they are assigned: a reader that keeps its own positions (a Kafka-sourced
  // projection). Call before the first Poll.
  void StartAt(std::map<std::pair<std::string, int32_t>, int64_t> offsets) {
    start_at_ = std::move(offsets);
  }
  // The oldest offset the broker still holds for the partition (its low watermark): records
  // below it were deleted by retention. kRetriable when the cluster does not answer.
  Result<int64_t> FirstOffset(const std::string& topic, int32_t partition);
  // Partitions currently read.
  size_t assigned_partitions() const { return assigned_.size(); }

 private:
  KafkaReader() = default;
  Status AssignNewPartitions();
  // Adds to at_end_ each assigned partition whose position reached its high watermark.
  Status MarkPartitionsAtTheirEnd();
  // Calls `visit` with the metadata of each of the topics the cluster has.
  Status VisitTopicMetadata(const std::function<void(const rd_kafka_metadata_topic_t&)>& visit);

  KafkaHandle consumer_;
  std::vector<std::string> topics_;
  bool from_beginning_ = true;
  std::set<std::pair<std::string, int32_t>> assigned_;
  std::map<std::pair<std::string, int32_t>, int64_t> start_at_;
  std::set<std::pair<std::string, int32_t>> at_end_;
  TimePoint next_metadata_{};
  std::string stalled_;  // the first partition found short of its end, for the timeout's message
  // NextToEnd's state: when a record last came, and the last error while none did.
  TimePoint quiet_since_{};
  std::string last_error_;
};

// Rebuilds an Event from a consumed message (see the wire format in DESIGN §2).
Event EventFromKafkaMessage(const rd_kafka_message_t* msg);

}  // namespace courier
