#include "brokers/dev/dev_broker.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <vector>

namespace {

// The ports the mock cluster's listeners get, in broker order, while this thread creates a
// cluster (null: the kernel picks, as librdkafka asks).
thread_local const std::vector<int>* t_listen_ports = nullptr;
thread_local size_t t_next_listen_port = 0;

int RealBind(int fd, const sockaddr* addr, socklen_t len) {
  return static_cast<int>(syscall(SYS_bind, fd, addr, len));
}

}  // namespace

// librdkafka 2.0.2's mock cluster binds every broker's listener to 127.0.0.1 port 0 and has
// no setting for the port; its metadata then advertises whatever port the kernel chose. A
// broker restarted on other ports strands the clients that knew the old ones (forwarding a
// fixed port would not help: clients reconnect to the advertised addresses). So this
// program's bind() gives those listeners the requested ports: only on the thread that is
// creating a cluster in DevBroker::Start (rd_kafka_mock_cluster_new binds before it starts its
// own thread), only for IPv4 binds to port 0; every other bind passes through unchanged.
// SO_REUSEADDR lets a restarted broker take the port while the old connections linger in
// TIME_WAIT.
extern "C" __attribute__((visibility("default"))) int bind(int fd, const sockaddr* addr,
                                                           socklen_t len) noexcept {
  if (t_listen_ports != nullptr && addr != nullptr && addr->sa_family == AF_INET &&
      len >= sizeof(sockaddr_in) && t_next_listen_port < t_listen_ports->size()) {
    sockaddr_in sin;
    std::memcpy(&sin, addr, sizeof sin);
    if (sin.sin_port == 0) {
      sin.sin_port = htons(static_cast<uint16_t>((*t_listen_ports)[t_next_listen_port++]));
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      return RealBind(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
    }
  }
  return RealBind(fd, addr, len);
}

namespace courier {
namespace {

// Whether 127.0.0.1:port can be listened on, so a busy port is reported as such (the mock
// cluster would only log that it failed).
Status CheckPortFree(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return InternalError(std::string("dev broker: socket: ") + std::strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = RealBind(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin) == 0;
  const int bind_errno = errno;
  close(fd);
  if (ok) return Status::Ok();
  return InvalidArgumentError(
      "dev broker: cannot listen on 127.0.0.1:" + std::to_string(port) + ": " +
      std::strerror(bind_errno) +
      (bind_errno == EADDRINUSE ? " (is another broker running there?)" : ""));
}

// Listener ports when none is given: `brokers` consecutive free ports below the kernel's
// ephemeral range (0 when none is found: the kernel then picks). A broker set down closes its
// listener and, set up, binds the same port again (librdkafka asserts when it cannot): a port
// of the ephemeral range is meanwhile free for any outgoing connection of the machine to take.
int PickListenPort(int brokers) {
  int ephemeral_low = 32768;
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(f, "%d", &ephemeral_low) != 1) ephemeral_low = 32768;
    std::fclose(f);
  }
  constexpr int kLowest = 10000;
  if (ephemeral_low - brokers <= kLowest) return 0;
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(kLowest, ephemeral_low - brokers);
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int base = pick(rng);
    bool free = true;
    for (int i = 0; free && i < brokers; ++i) free = CheckPortFree(base + i).ok();
    if (free) return base;
  }
  return 0;
}

}  // namespace

Result<std::unique_ptr<DevBroker>> DevBroker::Start(int brokers, int port) {
  if (brokers < 1) return InvalidArgumentError("the dev broker needs at least 1 broker");
  if (port < 0 || port > 65535 || (port > 0 && port + brokers - 1 > 65535)) {
    return InvalidArgumentError("dev broker: --port must be 1..65535 (and leave room for " +
                                std::to_string(brokers) + " consecutive ports)");
  }
  if (port == 0) port = PickListenPort(brokers);
  std::vector<int> ports;
  for (int i = 0; port > 0 && i < brokers; ++i) {
    COURIER_RETURN_IF_ERROR(CheckPortFree(port + i));
    ports.push_back(port + i);
  }
  COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf({{"log_level", "3"}}));
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
  if (rk == nullptr) return InternalError(std::string("dev broker: ") + err);
  conf.release();
  std::unique_ptr<DevBroker> broker(new DevBroker());
  broker->handle_.reset(rk);
  broker->brokers_ = brokers;
  t_listen_ports = ports.empty() ? nullptr : &ports;
  t_next_listen_port = 0;
  broker->cluster_ = rd_kafka_mock_cluster_new(rk, brokers);
  t_listen_ports = nullptr;
  if (broker->cluster_ == nullptr) return InternalError("dev broker: cannot create mock cluster");
  broker->bootstrap_ = rd_kafka_mock_cluster_bootstraps(broker->cluster_);
  if (!ports.empty() && broker->bootstrap_.substr(0, broker->bootstrap_.find(',')) !=
                            "127.0.0.1:" + std::to_string(port)) {
    // A librdkafka that binds its listeners elsewhere than in rd_kafka_mock_cluster_new.
    return InternalError("dev broker: this librdkafka does not let the broker listen on port " +
                         std::to_string(port) + " (it listens on " + broker->bootstrap_ + ")");
  }
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
