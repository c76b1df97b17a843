// The one test harness: real servers on loopback, on free ports, in temp dirs.
//  - PostgresServer: a PostgreSQL 15 cluster (initdb as the postgres user when run as root),
//    wal_level=logical, max_prepared_transactions=50 (PREPARE TRANSACTION), stopped and
//    removed at the end.
//  - DevBroker (src/brokers/dev/dev_broker.h): librdkafka's mock cluster, in the test process.
//  - RunCourier / SpawnCourier: the real `courier` binary.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/subprocess.h"
#include "courier/status.h"

namespace courier::test {

class PostgresServer {
 public:
  // The one role whose password the server checks (scram-sha-256); a test creates it with
  // CREATE ROLE ... PASSWORD. Every other role is trusted, so a password is accepted unread.
  static constexpr const char* kPasswordCheckedRole = "courier_password_user";

  // `durable`: fsync on, as in production (benchmarks); tests run with fsync off for speed.
  static Result<std::unique_ptr<PostgresServer>> Start(bool durable = false);
  ~PostgresServer();

  // postgres://postgres@127.0.0.1:PORT/DB
  std::string Url(const std::string& db) const;
  // A fresh, empty database; returns its URL.
  Result<std::string> NewDatabase(const std::string& prefix = "t");
  // Restarts the server; `immediate` is a crash (no shutdown checkpoint).
  Status Restart(bool immediate);
  Status Stop(bool immediate);
  Status StartAgain();
  int port() const { return port_; }

 private:
  PostgresServer() = default;
  Status PgCtl(const std::vector<std::string>& args);
  std::string dir_;
  std::string bin_;
  int port_ = 0;
  int next_db_ = 0;
  bool running_ = false;
};

// The server shared by all tests of one binary (started on first use).
PostgresServer& SharedPostgres();

// A new temp dir, removed by the caller's TempDir destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// redis-server on a free loopback port, with an append-only file fsynced on every write, so
// that acked entries survive a stop and start (as a production setup would require).
class RedisServer {
 public:
  static Result<std::unique_ptr<RedisServer>> Start();
  // redis://127.0.0.1:PORT/STREAM
  std::string Url(const std::string& stream = "") const;
  int port() const { return port_; }
  // SIGTERM and wait; then StartAgain() on the same port and data.
  Status Stop();
  Status StartAgain();

 private:
  RedisServer() = default;
  TempDir dir_;
  int port_ = 0;
  std::optional<Subprocess> process_;
};

// A webhook receiver (tests/support/webhook_server.py) on a free loopback port; every
// accepted POST is a JSON line in log().
class WebhookServer {
 public:
  static Result<std::unique_ptr<WebhookServer>> Start();
  // http://127.0.0.1:PORT/PATH
  std::string Url(const std::string& path) const;
  std::string log() const { return dir_.File("requests.jsonl"); }
  Status Stop();
  Status StartAgain();

 private:
  WebhookServer() = default;
  TempDir dir_;
  int port_ = 0;
  std::optional<Subprocess> process_;
};

// A test CA, a certificate it signed for localhost and 127.0.0.1 (server and client use), and
// a second CA that signed nothing here; made with the openssl command in a temp dir.
class TestCertificates {
 public:
  static Result<std::unique_ptr<TestCertificates>> Make();
  std::string ca() const { return dir_.File("ca.pem"); }
  std::string cert() const { return dir_.File("leaf.pem"); }
  std::string key() const { return dir_.File("leaf.key"); }
  std::string other_ca() const { return dir_.File("other-ca.pem"); }

 private:
  TestCertificates() = default;
  TempDir dir_;
};

// nats-server with JetStream (file storage in a temp dir) on a free loopback port. With
// certificates it speaks only TLS and wants a client certificate signed by the test CA.
class NatsServer {
 public:
  static Result<std::unique_ptr<NatsServer>> Start(const TestCertificates* tls = nullptr);
  // nats://127.0.0.1:PORT/SUBJECT, or with TLS
  // nats+tls://localhost:PORT/SUBJECT?cacert=CA&cert=CERT&key=KEY
  std::string Url(const std::string& subject = "") const;
  // A file-backed stream capturing `subjects`.
  Status AddStream(const std::string& name, const std::vector<std::string>& subjects);
  Status Stop();
  Status StartAgain();

 private:
  NatsServer() = default;
  TempDir dir_;
  const TestCertificates* tls_ = nullptr;
  int port_ = 0;
  std::optional<Subprocess> process_;
};

// rabbitmq-server (its own node name, epmd port and data dir) on a free loopback port;
// messages above 1 MiB are refused (max_message_size), so tests can provoke that cheaply.
class RabbitMqServer {
 public:
  static Result<std::unique_ptr<RabbitMqServer>> Start();
  ~RabbitMqServer();
  // amqp://guest:guest@127.0.0.1:PORT/%2F/EXCHANGE[?QUERY]
  std::string Url(const std::string& exchange, const std::string& query = "") const;
  // amqps://guest:guest@localhost:TLS_PORT/%2F/EXCHANGE?QUERY: the node's TLS listener, with
  // a certificate from certificates(); client certificates are checked when sent.
  std::string TlsUrl(const std::string& exchange, const std::string& query) const;
  const TestCertificates& certificates() const { return *certs_; }
  // A durable topic exchange, and durable queues bound to it.
  Status DeclareExchange(const std::string& name);
  Status DeclareQueue(const std::string& queue, const std::string& exchange,
                      const std::string& binding_key);
  // Messages in a queue (the last message's count is accurate once confirms are in).
  Result<int64_t> QueueLength(const std::string& queue);
  Status Stop();
  Status StartAgain();

 private:
  RabbitMqServer() = default;
  TempDir dir_;
  std::unique_ptr<TestCertificates> certs_;
  int port_ = 0;
  int tls_port_ = 0;
  int dist_port_ = 0;
  int epmd_port_ = 0;
  std::optional<Subprocess> process_;
};

// groonga (Debian's groonga-bin) as an HTTP server on a free loopback port, its database in a
// temp dir (groonga_server.cc). Command() reads through groonga's own HTTP API with plain
// libcurl, independently of the sink's client.
class GroongaServer {
 public:
  static Result<std::unique_ptr<GroongaServer>> Start();
  // groonga://127.0.0.1:PORT/PREFIX
  std::string Url(const std::string& prefix = "") const;
  int port() const { return port_; }
  // GET /d/COMMAND?ARGS&command_version=3: the answer's body, or the error groonga gave.
  Result<std::string> Command(const std::string& command,
                              const std::vector<std::pair<std::string, std::string>>& args);
  Status Stop();
  Status StartAgain();

 private:
  GroongaServer() = default;
  TempDir dir_;
  int port_ = 0;
  std::optional<Subprocess> process_;
};

// A TCP listener on 127.0.0.1 (port 0, read back) that accepts every connection and never
// sends or reads a byte: a server that hangs. Connections stay open until destruction.
class SilentServer {
 public:
  static Result<std::unique_ptr<SilentServer>> Start();
  ~SilentServer();
  int port() const { return port_; }
  // Connections accepted so far.
  int accepted() const { return accepted_.load(); }

 private:
  SilentServer() = default;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // written to stop the accepting thread
  int port_ = 0;
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `courier args...` to completion (killed after `timeout`).
CommandResult RunCourier(const std::vector<std::string>& args, Duration timeout = Duration(60000));
// Starts `courier args...`; its stderr goes to `log_path` when given.
Result<Subprocess> SpawnCourier(const std::vector<std::string>& args,
                                const std::string& log_path = "");

// SIGTERM to a server the test started, and wait for it.
Status StopChild(std::optional<Subprocess>& process, const std::string& name);

// Whether something accepts TCP connections on 127.0.0.1:port.
bool PortAccepts(int port);

// Polls `condition` until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& condition, Duration timeout = Duration(30000));

// A free TCP port on 127.0.0.1 below the ephemeral range.
int FreePort();

std::string ReadFile(const std::string& path);

// Runs SQL on PostgreSQL, returning the first column of every row.
Result<std::vector<std::string>> PgQuery(const std::string& url, const std::string& sql);

// Drops every replication slot of the URL's database, waiting (up to 10 s) for walsenders
// of stopped relays to let go of them.
void DropReplicationSlots(const std::string& url);

}  // namespace courier::test
