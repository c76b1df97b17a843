// The Reader of Kafka as a consumer group: `courier consume` reads through it (brokers/reader.h).
//
// Thread-safety: one thread.
#include <librdkafka/rdkafka.h>

#include <sstream>

#include "brokers/kafka/kafka_common.h"
#include "brokers/kafka/kafka_reader.h"
#include "brokers/reader.h"
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

}  // namespace

Result<std::unique_ptr<Reader>> MakeKafkaGroupReader(const ReaderOptions& options) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options.url));
  auto reader = std::make_unique<KafkaGroupReader>();
  COURIER_RETURN_IF_ERROR(reader->Open(url, options.group));
  return std::unique_ptr<Reader>(std::move(reader));
}

}  // namespace courier
