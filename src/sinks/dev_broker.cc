#include "sinks/dev_broker.h"

#include <dirent.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <set>
#include <vector>

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
  broker->nagle_thread_ = std::thread([b = broker.get()] { b->DisableNagleLoop(); });
  return broker;
}

DevBroker::~DevBroker() {
  stopping_ = true;
  if (nagle_thread_.joinable()) nagle_thread_.join();
  if (cluster_ != nullptr) rd_kafka_mock_cluster_destroy(cluster_);
}

// The mock cluster leaves Nagle's algorithm on for the connections it accepts, so a response
// written in two pieces waits for the client's delayed ACK (~40 ms) — real Kafka brokers set
// TCP_NODELAY. The sockets belong to this process, so set it on every connected TCP socket
// as it appears; latency and throughput then resemble a real broker on loopback.
void DevBroker::DisableNagleLoop() {
  std::set<int> done;
  while (!stopping_.load()) {
    if (DIR* dir = opendir("/proc/self/fd")) {
      while (dirent* entry = readdir(dir)) {
        const int fd = std::atoi(entry->d_name);
        if (fd <= 2 || done.count(fd) > 0) continue;
        struct stat st {};
        if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
        int listening = 0;
        socklen_t len = sizeof listening;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening) continue;
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0) done.insert(fd);
      }
      closedir(dir);
    }
    // Closed descriptors get reused: forget the set now and then (setting the option twice
    // is harmless).
    if (done.size() > 4096) done.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
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

void DevBroker::FailNextRequests(int16_t api_key, rd_kafka_resp_err_t error, size_t count) {
  const std::vector<rd_kafka_resp_err_t> errors(count, error);
  rd_kafka_mock_push_request_errors_array(cluster_, api_key, errors.size(), errors.data());
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
