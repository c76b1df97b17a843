#include "brokers/kafka/kafka_reader.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "core/uuid.h"

namespace courier {

Event EventFromKafkaMessage(const rd_kafka_message_t* msg) {
  Event e;
  if (msg->key != nullptr) e.aggregate_id.assign(static_cast<const char*>(msg->key), msg->key_len);
  if (msg->payload != nullptr) {
    e.payload.assign(static_cast<const char*>(msg->payload), msg->len);
  }
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name;
    const void* value;
    size_t size;
    for (size_t i = 0;
         rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      std::string v = value != nullptr ? std::string(static_cast<const char*>(value), size) : "";
      if (std::strcmp(name, "event_id") == 0) {
        e.event_id = std::move(v);
      } else if (std::strcmp(name, "event_type") == 0) {
        e.event_type = std::move(v);
      } else if (std::strcmp(name, "aggregate_type") == 0) {
        e.aggregate_type = std::move(v);
      } else {
        e.headers.emplace_back(name, std::move(v));
      }
    }
  }
  rd_kafka_timestamp_type_t ts_type;
  const int64_t ts = rd_kafka_message_timestamp(msg, &ts_type);
  if (ts > 0) e.created_at_us = ts * 1000;
  return e;
}

Result<std::unique_ptr<KafkaReader>> KafkaReader::Open(
    const std::string& brokers, std::vector<std::string> topics, bool from_beginning,
    const std::vector<std::pair<std::string, std::string>>& props) {
  std::vector<std::pair<std::string, std::string>> all = {
      {"bootstrap.servers", brokers},
      {"group.id", "courier-reader-" + NewUuidV7()},
      {"enable.auto.commit", "false"},
      {"enable.partition.eof", "true"},
      {"auto.offset.reset", from_beginning ? "earliest" : "latest"},
      // A reader never creates what it reads: a broker with auto.create.topics.enable would
      // otherwise create a mistyped topic on a metadata request naming it (see
      // VisitTopicMetadata for brokers that cannot be told).
      {"allow.auto.create.topics", "false"},
  };
  all.insert(all.end(), props.begin(), props.end());
  COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf(all));
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err);
  if (rk == nullptr) return InvalidArgumentError(std::string("Kafka consumer: ") + err);
  conf.release();
  std::unique_ptr<KafkaReader> reader(new KafkaReader());
  reader->consumer_.reset(rk);
  rd_kafka_poll_set_consumer(rk);
  reader->topics_ = std::move(topics);
  reader->from_beginning_ = from_beginning;
  return reader;
}

// Metadata requests that name a topic make a broker that does not know it create it when
// auto.create.topics.enable is on and the request cannot say otherwise (protocol versions
// before 4, as the dev broker speaks; allow.auto.create.topics=false needs 4). So a topic is
// named only once it is known to exist; until then every topic is listed, which creates none.
Status KafkaReader::VisitTopicMetadata(
    const std::function<void(const rd_kafka_metadata_topic_t&)>& visit) {
  std::set<std::string> existing;
  for (const auto& [topic, partition] : assigned_) existing.insert(topic);
  const bool all_known =
      existing.size() == std::set<std::string>(topics_.begin(), topics_.end()).size();
  auto request = [&](rd_kafka_topic_t* only, const std::string& what) -> Status {
    const rd_kafka_metadata_t* md = nullptr;
    const rd_kafka_resp_err_t err =
        rd_kafka_metadata(consumer_.get(), only == nullptr ? 1 : 0, only, &md, 5000);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return RetriableError("Kafka metadata for " + what + ": " + rd_kafka_err2str(err));
    }
    for (int t = 0; t < md->topic_cnt; ++t) {
      if (std::find(topics_.begin(), topics_.end(), md->topics[t].topic) != topics_.end()) {
        visit(md->topics[t]);
      }
    }
    rd_kafka_metadata_destroy(md);
    return Status::Ok();
  };
  if (!all_known) return request(nullptr, "the cluster's topics");
  for (const std::string& topic : topics_) {
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(consumer_.get(), topic.c_str(), nullptr);
    Status st = request(rkt, topic);
    rd_kafka_topic_destroy(rkt);
    COURIER_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

Result<std::vector<std::string>> KafkaReader::MissingTopics() {
  std::set<std::string> found;
  COURIER_RETURN_IF_ERROR(VisitTopicMetadata([&](const rd_kafka_metadata_topic_t& t) {
    if (t.err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) found.insert(t.topic);
  }));
  std::vector<std::string> missing;
  for (const std::string& topic : topics_) {
    if (found.count(topic) == 0) missing.push_back(topic);
  }
  return missing;
}

Status KafkaReader::AssignNewPartitions() {
  const TimePoint now = Clock::Real().Now();
  if (now < next_metadata_) return Status::Ok();
  next_metadata_ = now + std::chrono::milliseconds(500);
  bool added = false;
  COURIER_RETURN_IF_ERROR(VisitTopicMetadata([&](const rd_kafka_metadata_topic_t& t) {
    if (t.err != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    for (int p = 0; p < t.partition_cnt; ++p) {
      if (assigned_.emplace(t.topic, t.partitions[p].id).second) added = true;
    }
  }));
  if (!added) return Status::Ok();
  rd_kafka_topic_partition_list_t* list =
      rd_kafka_topic_partition_list_new(static_cast<int>(assigned_.size()));
  for (const auto& [topic, partition] : assigned_) {
    int64_t offset = RD_KAFKA_OFFSET_BEGINNING;
    if (auto at = start_at_.find({topic, partition}); at != start_at_.end()) {
      offset = at->second;
    } else if (!from_beginning_) {
      // A concrete end offset, resolved now: every event produced after this call is read.
      int64_t low = 0, high = 0;
      const rd_kafka_resp_err_t werr = rd_kafka_query_watermark_offsets(
          consumer_.get(), topic.c_str(), partition, &low, &high, 5000);
      if (werr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        assigned_.clear();
        rd_kafka_topic_partition_list_destroy(list);
        return RetriableError(std::string("Kafka offsets for ") + topic + ": " +
                              rd_kafka_err2str(werr));
      }
      offset = high;
    }
    rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset = offset;
  }
  // Partitions seen for the first time after start are read from their beginning: the events
  // in them are new to this reader.
  from_beginning_ = true;
  const rd_kafka_resp_err_t err = rd_kafka_assign(consumer_.get(), list);
  rd_kafka_topic_partition_list_destroy(list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return RetriableError(std::string("Kafka assign: ") + rd_kafka_err2str(err));
  }
  return Status::Ok();
}

Result<std::optional<KafkaRecord>> KafkaReader::Poll(Duration timeout) {
  COURIER_RETURN_IF_ERROR(AssignNewPartitions());
  rd_kafka_message_t* msg =
      rd_kafka_consumer_poll(consumer_.get(), static_cast<int>(timeout.count()));
  if (msg == nullptr) return std::optional<KafkaRecord>();
  std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> guard(
      msg, rd_kafka_message_destroy);
  const std::string topic = msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "";
  if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    at_end_.emplace(topic, msg->partition);
    return std::optional<KafkaRecord>();
  }
  if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return RetriableError(std::string("Kafka consume: ") + rd_kafka_message_errstr(msg));
  }
  at_end_.erase({topic, msg->partition});
  KafkaRecord record;
  record.topic = topic;
  record.partition = msg->partition;
  record.offset = msg->offset;
  record.event = EventFromKafkaMessage(msg);
  return std::optional<KafkaRecord>(std::move(record));
}

Result<int64_t> KafkaReader::FirstOffset(const std::string& topic, int32_t partition) {
  int64_t low = 0, high = 0;
  const rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(consumer_.get(), topic.c_str(),
                                                                   partition, &low, &high, 5000);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return RetriableError("Kafka offsets for " + topic + "[" + std::to_string(partition) +
                          "]: " + rd_kafka_err2str(err));
  }
  return low;
}

// A partition is at its end when librdkafka says so (PARTITION_EOF) or, checked after a quiet
// spell, when the consumer's position has reached the partition's high watermark: an EOF event
// is emitted once per reaching the end, and one lost to a reconnect must not stall the read.
Status KafkaReader::MarkPartitionsAtTheirEnd() {
  rd_kafka_topic_partition_list_t* list =
      rd_kafka_topic_partition_list_new(static_cast<int>(assigned_.size()));
  for (const auto& [topic, partition] : assigned_) {
    if (at_end_.count({topic, partition}) == 0) {
      rd_kafka_topic_partition_list_add(list, topic.c_str(), partition);
    }
  }
  Status st = Status::Ok();
  if (rd_kafka_position(consumer_.get(), list) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < list->cnt; ++i) {
      const rd_kafka_topic_partition_t& tp = list->elems[i];
      int64_t low = 0, high = 0;
      const rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
          consumer_.get(), tp.topic, tp.partition, &low, &high, 5000);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        st = RetriableError(std::string("Kafka offsets for ") + tp.topic + ": " +
                            rd_kafka_err2str(err));
        continue;
      }
      // An empty partition has no position yet (RD_KAFKA_OFFSET_INVALID) and nothing to read.
      if (high == low || (tp.offset >= 0 && tp.offset >= high)) {
        at_end_.emplace(tp.topic, tp.partition);
      } else if (stalled_.empty()) {
        stalled_ = std::string(tp.topic) + "[" + std::to_string(tp.partition) + "] at offset " +
                   std::to_string(tp.offset) + " of " + std::to_string(high);
      }
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  return st;
}

Status KafkaReader::BeginReadToEnd() {
  next_metadata_ = {};
  quiet_since_ = Clock::Real().Now();
  last_error_.clear();
  return AssignNewPartitions();
}

Result<std::optional<KafkaRecord>> KafkaReader::NextToEnd(TimePoint deadline) {
  // No partition: no such topic, nothing was ever published.
  while (at_end_.size() < assigned_.size()) {
    const TimePoint now = Clock::Real().Now();
    if (now >= deadline) {
      stalled_.clear();
      (void)MarkPartitionsAtTheirEnd();
      if (at_end_.size() == assigned_.size()) break;
      return RetriableError("timed out reading Kafka topics to their end (" +
                            std::to_string(at_end_.size()) + " of " +
                            std::to_string(assigned_.size()) + " partitions at their end" +
                            (stalled_.empty() ? "" : "; " + stalled_) +
                            (last_error_.empty() ? "" : "; last error: " + last_error_) + ")");
    }
    if (now - quiet_since_ >= std::chrono::seconds(2)) {
      quiet_since_ = now;
      if (Status st = MarkPartitionsAtTheirEnd(); !st.ok()) last_error_ = st.message();
      continue;
    }
    auto r = Poll(Duration(100));
    if (!r.ok()) {
      if (r.status().code() != StatusCode::kRetriable) return r.status();
      last_error_ = r.status().message();
      continue;
    }
    if (r->has_value()) {
      quiet_since_ = Clock::Real().Now();
      return r;
    }
  }
  return std::optional<KafkaRecord>();
}

Result<std::vector<KafkaRecord>> KafkaReader::ReadToEnd(Duration timeout) {
  std::vector<KafkaRecord> records;
  const TimePoint deadline = Clock::Real().Now() + timeout;
  COURIER_RETURN_IF_ERROR(BeginReadToEnd());
  while (true) {
    COURIER_ASSIGN_OR_RETURN(std::optional<KafkaRecord> r, NextToEnd(deadline));
    if (!r.has_value()) return records;
    records.push_back(std::move(*r));
  }
}

}  // namespace courier
