// The built-in Kafka-protocol dev broker: librdkafka's mock cluster, reachable on loopback
// by any Kafka client. Data lives in this process's memory. For development, the demo and
// tests; not a production broker.
//
// Thread-safety: methods may be called from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "courier/status.h"
#include "sinks/kafka_common.h"

typedef struct rd_kafka_mock_cluster_s rd_kafka_mock_cluster_t;

namespace courier {

class DevBroker {
 public:
  static Result<std::unique_ptr<DevBroker>> Start(int brokers = 1);
  ~DevBroker();

  // "127.0.0.1:port[,127.0.0.1:port...]"
  const std::string& bootstrap() const { return bootstrap_; }
  // Simulates an outage of every broker (connections refused/dropped), keeping the data.
  void SetDown(bool down);
  // Creates `topic` with `partitions` partitions (otherwise topics are auto-created).
  Status CreateTopic(const std::string& topic, int partitions);
  // Answers the next `count` requests of Kafka API `api_key` (e.g. 26, EndTxn) with `error`:
  // what a real broker says in situations the mock does not reach by itself (it does not
  // fence an older producer of a transactional.id, for one).
  void FailNextRequests(int16_t api_key, rd_kafka_resp_err_t error, size_t count);

 private:
  DevBroker() = default;
  void DisableNagleLoop();

  KafkaHandle handle_;
  std::atomic<bool> stopping_{false};
  std::thread nagle_thread_;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
  int brokers_ = 1;
  std::string bootstrap_;
};

}  // namespace courier
