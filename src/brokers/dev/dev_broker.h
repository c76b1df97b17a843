// The built-in Kafka-protocol dev broker: librdkafka's mock cluster, reachable on loopback
// by any Kafka client. Data lives in this process's memory. For development, the demo and
// tests; not a production broker.
//
// Retention is the mock's, fixed: each partition keeps its newest 5 MiB of record batches
// (kDevBrokerPartitionBytes), and at most 100 000 batches; older batches are dropped as new
// ones arrive, so a consumer that falls further behind than that misses them.
//
// Transactions are the mock's too: producers may begin, commit and abort them, but the mock
// writes no commit or abort markers and answers every fetch with its end as the last stable
// offset and no aborted transactions, so a read_committed consumer also sees the records of
// open and aborted transactions (rdkafka_mock_handlers.c, Fetch). What must stay unseen
// unless committed cannot be shown on this broker by aborting its transaction.
//
// Thread-safety: methods may be called from any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "brokers/kafka/kafka_common.h"
#include "courier/status.h"

typedef struct rd_kafka_mock_cluster_s rd_kafka_mock_cluster_t;

namespace courier {

// What one partition of the dev broker keeps (librdkafka's mock cluster, rdkafka_mock.c:
// max_size and max_cnt of a partition; not configurable).
inline constexpr size_t kDevBrokerPartitionBytes = 5 * 1024 * 1024;
inline constexpr size_t kDevBrokerPartitionBatches = 100000;

// The partitions a topic needs on the dev broker to keep `events` events of at most
// `bytes_per_event` bytes each (record and batch overhead included), and at least `minimum`.
inline int DevBrokerPartitionsFor(int64_t events, int64_t bytes_per_event, int minimum = 4) {
  const int64_t by_bytes =
      (events * bytes_per_event + static_cast<int64_t>(kDevBrokerPartitionBytes) - 1) /
      static_cast<int64_t>(kDevBrokerPartitionBytes);
  // One batch per event at worst (a producer that sends each event on its own).
  const int64_t by_batches = (events + static_cast<int64_t>(kDevBrokerPartitionBatches) - 1) /
                             static_cast<int64_t>(kDevBrokerPartitionBatches);
  return static_cast<int>(std::max<int64_t>({minimum, by_bytes, by_batches}));
}

class DevBroker {
 public:
  // Broker i (from 1) listens on 127.0.0.1:port+i-1, so a restarted broker is found where
  // clients already look for it. `port` 0: free ports below the kernel's ephemeral range, so
  // that no outgoing connection takes one while its broker is set down (SetDown).
  static Result<std::unique_ptr<DevBroker>> Start(int brokers = 1, int port = 0);
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
