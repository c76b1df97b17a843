#include "sinks/dev_broker.h"

#include <librdkafka/rdkafka_mock.h>

namespace courier {

Result<std::unique_ptr<DevBroker>> DevBroker::Start(int brokers) {
  if (brokers < 1) return InvalidArgumentError("the dev broker needs at least 1 broker");
  ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf({{"log_level", "3"}}));
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
  if (rk == nullptr) return InternalError(std::string("dev broker: ") + err);
  conf.release();
  std::unique_ptr<DevBroker> broker(new DevBroker());
  broker->handle_.reset(rk);
  broker->brokers_ = brokers;
  broker->cluster_ = rd_kafka_mock_cluster_new(rk, brokers);
  if (broker->cluster_ == nullptr) return InternalError("dev broker: cannot create mock cluster");
  broker->bootstrap_ = rd_kafka_mock_cluster_bootstraps(broker->cluster_);
  return broker;
}

DevBroker::~DevBroker() {
  if (cluster_ != nullptr) rd_kafka_mock_cluster_destroy(cluster_);
}

void DevBroker::SetDown(bool down) {
  for (int id = 1; id <= brokers_; ++id) {
    if (down) {
      rd_kafka_mock_broker_set_down(cluster_, id);
    } else {
      rd_kafka_mock_broker_set_up(cluster_, id);
    }
  }
}

Status DevBroker::CreateTopic(const std::string& topic, int partitions) {
  const rd_kafka_resp_err_t err =
      rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 1);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return InvalidArgumentError("create topic " + topic + ": " + rd_kafka_err2str(err));
  }
  return Status::Ok();
}

}  // namespace courier
