// Kafka's readers (brokers/reader.h): a consumer group for `courier consume`, and every
// partition assigned directly (KafkaReader) for `courier tail` and the tests' checks.
//
// Thread-safety: one thread.
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <sstream>

#include "brokers/kafka/kafka_common.h"
#include "brokers/kafka/kafka_reader.h"
#include "brokers/reader.h"
#include "core/log.h"
#include "core/url.h"

namespace courier {
namespace {

// A Kafka consumer group named after the consumer; offsets are committed only after the
// event's transaction committed, one by one.
class KafkaGroupReader final : public Reader {
 public:
  Status Open(const Url& url, const std::string& group) {
    std::vector<std::pair<std::string, std::string>> props = {
        {"bootstrap.servers", url.hosts},
        {"group.id", group},
        {"enable.auto.commit", "false"},
        {"auto.offset.reset", "earliest"},
        // A restarted consumer gets its partitions within seconds: the group hands a stopped
        // member's partitions on after this long (the dev broker, after a member left, also
        // waits this long less a second for the others; librdkafka's 45 s made a restart sit
        // idle ~43 s). The URL's query may set both.
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1000"},
    };
    props.insert(props.end(), url.query.begin(), url.query.end());
    COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf(props));
    char err[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err);
    if (rk == nullptr) return InvalidArgumentError(std::string("Kafka consumer: ") + err);
    conf.release();
    consumer_.reset(rk);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
    std::stringstream ss(url.path);
    for (std::string t; std::getline(ss, t, ',');) {
      if (!t.empty()) rd_kafka_topic_partition_list_add(topics, t.c_str(), RD_KAFKA_PARTITION_UA);
    }
    const rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    const int count = topics->cnt;
    rd_kafka_topic_partition_list_destroy(topics);
    if (count == 0 || url.path.find('{') != std::string::npos) {
      return InvalidArgumentError("consume needs concrete topics: kafka://host:port/TOPIC[,TOPIC]");
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return InvalidArgumentError(std::string("Kafka subscribe: ") + rd_kafka_err2str(e));
    }
    return Status::Ok();
  }

  ~KafkaGroupReader() override {
    if (consumer_) rd_kafka_consumer_close(consumer_.get());
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    rd_kafka_message_t* msg =
        rd_kafka_consumer_poll(consumer_.get(), static_cast<int>(timeout.count()));
    if (msg == nullptr) return std::optional<Message>();
    Message d;
    Status st;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        st = RetriableError(std::string("Kafka: ") + rd_kafka_message_errstr(msg));
      }
      rd_kafka_message_destroy(msg);
      if (!st.ok()) return st;
      return std::optional<Message>();
    }
    d.event = EventFromKafkaMessage(msg);
    d.topic = rd_kafka_topic_name(msg->rkt);
    d.partition = msg->partition;
    d.offset = msg->offset;
    rd_kafka_message_destroy(msg);
    return std::optional<Message>(std::move(d));
  }

  Status Ack(const Message& d) override {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, d.topic.c_str(), d.partition)->offset = d.offset + 1;
    const rd_kafka_resp_err_t e = rd_kafka_commit(consumer_.get(), list, /*async=*/0);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return RetriableError(std::string("Kafka offset commit: ") + rd_kafka_err2str(e));
    }
    return Status::Ok();
  }

 private:
  KafkaHandle consumer_;
};

// Every partition of the topics read directly, no group: new messages, or from the oldest,
// or (to_end) everything up to where each partition ended when reading began.
class KafkaTailReader final : public Reader {
 public:
  Status Open(const Url& url, const ReaderOptions& o) {
    std::stringstream ss(url.path);
    for (std::string t; std::getline(ss, t, ',');) {
      if (!t.empty()) topics_.push_back(t);
    }
    if (topics_.empty() || url.path.find('{') != std::string::npos) {
      return InvalidArgumentError("tail needs a concrete topic: kafka://host:port/TOPIC[,TOPIC]");
    }
    url_ = url;
    to_end_ = o.to_end;
    COURIER_ASSIGN_OR_RETURN(
        reader_, KafkaReader::Open(url.hosts, topics_, o.from_beginning || o.to_end, url.query));
    // Like kcat: a topic that is not there is an error (a typo would otherwise print nothing,
    // forever), unless it is to be waited for. Either way the reader creates no topic.
    COURIER_ASSIGN_OR_RETURN(std::vector<std::string> missing, reader_->MissingTopics());
    if (missing.empty()) return Status::Ok();
    std::string names;
    for (const std::string& t : missing) names += (names.empty() ? "" : ", ") + t;
    if (!o.wait_for_topic) {
      return NotFoundError("no topic " + names + " on kafka://" + url.hosts +
                           " (tail creates none; --wait-for-topic waits until it is created)");
    }
    log::Info("waiting for the topic to be created", {{"topics", names}});
    waiting_ = true;
    return Status::Ok();
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    if (waiting_) {
      COURIER_ASSIGN_OR_RETURN(std::vector<std::string> missing, reader_->MissingTopics());
      if (!missing.empty()) {
        Clock::Real().SleepFor(std::min(timeout, Duration(500)), StopSignal());
        return std::optional<Message>();
      }
      // Everything in a topic created after the start is new: read it from its beginning.
      COURIER_ASSIGN_OR_RETURN(
          reader_, KafkaReader::Open(url_.hosts, topics_, /*from_beginning=*/true, url_.query));
      waiting_ = false;
    }
    if (to_end_) {
      // One record at a time: the topic may be larger than memory (courier audit). Read on
      // as long as records come; a minute without one while a partition is short of its end
      // is an error.
      if (!read_to_end_) {
        COURIER_RETURN_IF_ERROR(reader_->BeginReadToEnd());
        read_to_end_ = true;
        last_record_ = Clock::Real().Now();
      }
      COURIER_ASSIGN_OR_RETURN(std::optional<KafkaRecord> r,
                               reader_->NextToEnd(last_record_ + std::chrono::seconds(60)));
      if (!r.has_value()) return std::optional<Message>();
      last_record_ = Clock::Real().Now();
      return std::optional<Message>(ToMessage(std::move(*r)));
    }
    auto r = reader_->Poll(timeout);
    if (!following_ && reader_->assigned_partitions() > 0) {
      log::Info("following",
                {{"topics", url_.path}, {"partitions", reader_->assigned_partitions()}});
      following_ = true;
    }
    if (!r.ok()) {
      // The cluster away or a partition moving: said, and read again.
      log::Warn("tail", {{"error", r.status().message()}});
      Clock::Real().SleepFor(std::min(timeout, Duration(500)), StopSignal());
      return std::optional<Message>();
    }
    if (!r->has_value()) return std::optional<Message>();
    return std::optional<Message>(ToMessage(std::move(**r)));
  }

  Status Ack(const Message&) override { return Status::Ok(); }

 private:
  static Message ToMessage(KafkaRecord r) {
    Message m;
    m.where = "{\"topic\":\"" + r.topic + "\",\"partition\":" + std::to_string(r.partition) +
              ",\"offset\":" + std::to_string(r.offset) + "}";
    m.event = std::move(r.event);
    m.topic = std::move(r.topic);
    m.partition = r.partition;
    m.offset = r.offset;
    return m;
  }

  Url url_;
  std::vector<std::string> topics_;
  std::unique_ptr<KafkaReader> reader_;
  bool to_end_ = false;
  bool waiting_ = false;
  bool read_to_end_ = false;
  bool following_ = false;
  TimePoint last_record_{};
};

}  // namespace

Result<std::unique_ptr<Reader>> MakeKafkaReader(const ReaderOptions& options) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options.url));
  if (options.group.empty()) {
    auto reader = std::make_unique<KafkaTailReader>();
    COURIER_RETURN_IF_ERROR(reader->Open(url, options));
    return std::unique_ptr<Reader>(std::move(reader));
  }
  auto reader = std::make_unique<KafkaGroupReader>();
  COURIER_RETURN_IF_ERROR(reader->Open(url, options.group));
  return std::unique_ptr<Reader>(std::move(reader));
}

}  // namespace courier
