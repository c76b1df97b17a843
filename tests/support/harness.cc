#include "support/harness.h"

#include <amqp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "brokers/amqp/amqp.h"
#include "brokers/nats/nats.h"
#include "brokers/redis/redis.h"
#include "core/postgres.h"

namespace courier::test {
namespace {

bool IsRoot() { return ::geteuid() == 0; }

// Runs argv (as the postgres user when we are root) and waits.
Status RunAsPostgres(std::vector<std::string> argv, const std::string& log) {
  if (IsRoot()) argv.insert(argv.begin(), {"/usr/sbin/runuser", "-u", "postgres", "--"});
  COURIER_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(argv, log, log));
  auto code = p.Wait(Duration(120000));
  if (!code || *code != 0) {
    return InternalError("command failed: " + argv[IsRoot() ? 4 : 0] + " (see " + log + ")");
  }
  return Status::Ok();
}

}  // namespace

bool PortAccepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// SIGTERM to a server started by a test, and wait for it.
Status StopChild(std::optional<Subprocess>& process, const std::string& name) {
  if (!process) return Status::Ok();
  process->Signal(SIGTERM);
  auto code = process->Wait(Duration(30000));
  process.reset();
  if (!code) return InternalError(name + " did not stop");
  return Status::Ok();
}

int FreePort() {
  static std::mt19937 rng{std::random_device{}()};
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = std::uniform_int_distribution<int>(20000, 32000)(rng);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (free) return port;
  }
  return 0;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/courier-test-XXXXXX";
  path_ = mkdtemp(tmpl);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WaitUntil(const std::function<bool()>& condition, Duration timeout) {
  const TimePoint deadline = Clock::Real().Now() + timeout;
  while (Clock::Real().Now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

Result<std::unique_ptr<PostgresServer>> PostgresServer::Start(bool durable) {
  std::unique_ptr<PostgresServer> s(new PostgresServer());
  s->bin_ = "/usr/lib/postgresql/15/bin";
  if (!std::filesystem::exists(s->bin_ + "/initdb")) {
    return FailedPreconditionError(
        "PostgreSQL 15 is not installed (apt-get install postgresql-15)");
  }
  char tmpl[] = "/tmp/courier-pg-XXXXXX";
  s->dir_ = mkdtemp(tmpl);
  if (IsRoot()) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) return FailedPreconditionError("no postgres user");
    if (::chown(s->dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) return InternalError("chown");
  }
  COURIER_RETURN_IF_ERROR(RunAsPostgres({s->bin_ + "/initdb", "-D", s->dir_ + "/data", "-A",
                                         "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"},
                                        s->dir_ + "/initdb.log"));
  s->port_ = FreePort();
  {
    std::ofstream conf(s->dir_ + "/data/postgresql.conf", std::ios::app);
    conf << "listen_addresses = '127.0.0.1'\n"
         << "port = " << s->port_ << "\n"
         << "unix_socket_directories = '" << s->dir_ << "'\n"
         << "wal_level = logical\nmax_replication_slots = 100\nmax_wal_senders = 50\n"
         << "max_connections = 200\n"
         // PREPARE TRANSACTION (the lab's 2pc strategy); 0, the server's default, refuses it.
         << "max_prepared_transactions = 50\n"
         // Test speed: data survives a server crash (the OS keeps it), not a host crash.
         << (durable ? "" : "fsync = off\n");
  }
  {
    // Every role is trusted, except kPasswordCheckedRole (first match wins): the tests of wrong
    // and percent-encoded passwords log in as it.
    const std::string hba_path = s->dir_ + "/data/pg_hba.conf";
    const std::string initdb_rules = ReadFile(hba_path);
    std::ofstream hba(hba_path, std::ios::trunc);
    hba << "host all " << kPasswordCheckedRole << " 127.0.0.1/32 scram-sha-256\n"
        << initdb_rules
        << "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n";
  }
  COURIER_RETURN_IF_ERROR(s->StartAgain());
  return s;
}

Status PostgresServer::PgCtl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {bin_ + "/pg_ctl", "-D", dir_ + "/data", "-l",
                                   dir_ + "/server.log"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunAsPostgres(argv, dir_ + "/pg_ctl.log");
}

Status PostgresServer::StartAgain() {
  COURIER_RETURN_IF_ERROR(PgCtl({"-w", "-t", "60", "start"}));
  running_ = true;
  return Status::Ok();
}

Status PostgresServer::Stop(bool immediate) {
  COURIER_RETURN_IF_ERROR(
      PgCtl({"-w", "-t", "60", "-m", immediate ? "immediate" : "fast", "stop"}));
  running_ = false;
  return Status::Ok();
}

Status PostgresServer::Restart(bool immediate) {
  COURIER_RETURN_IF_ERROR(Stop(immediate));
  return StartAgain();
}

PostgresServer::~PostgresServer() {
  if (running_) (void)Stop(true);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string PostgresServer::Url(const std::string& db) const {
  return "postgres://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

Result<std::string> PostgresServer::NewDatabase(const std::string& prefix) {
  const std::string name =
      prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(next_db_++);
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(Url("postgres")));
  COURIER_RETURN_IF_ERROR(PgRun(conn.get(), "CREATE DATABASE " + name));
  return Url(name);
}

PostgresServer& SharedPostgres() {
  static std::unique_ptr<PostgresServer> server = [] {
    auto s = PostgresServer::Start();
    if (!s.ok()) {
      std::fprintf(stderr, "cannot start PostgreSQL for tests: %s\n", s.status().message().c_str());
      std::abort();
    }
    return std::move(s).value();
  }();
  return *server;
}

CommandResult RunCourier(const std::vector<std::string>& args, Duration timeout) {
  TempDir dir;
  std::vector<std::string> argv = {COURIER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult result;
  auto p = Subprocess::Spawn(argv, dir.File("out"), dir.File("err"));
  if (!p.ok()) return result;
  auto code = p->Wait(timeout);
  result.exit_code = code ? *code : -1;
  result.out = ReadFile(dir.File("out"));
  result.err = ReadFile(dir.File("err"));
  return result;
}

Result<Subprocess> SpawnCourier(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<std::string> argv = {COURIER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return Subprocess::Spawn(argv, log_path.empty() ? "/dev/null" : log_path,
                           log_path.empty() ? "/dev/null" : log_path);
}

Result<std::vector<std::string>> PgQuery(const std::string& url, const std::string& sql) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn.get(), sql));
  std::vector<std::string> rows;
  for (int i = 0; i < PQntuples(res.get()); ++i) {
    rows.emplace_back(PQgetisnull(res.get(), i, 0) ? "" : PQgetvalue(res.get(), i, 0));
  }
  return rows;
}

void DropReplicationSlots(const std::string& url) {
  WaitUntil(
      [&] {
        auto left = PgQuery(url,
                            "SELECT count(pg_drop_replication_slot(slot_name)) FROM"
                            " pg_replication_slots WHERE database = current_database() AND NOT"
                            " active");
        auto remaining = PgQuery(url,
                                 "SELECT count(*) FROM pg_replication_slots WHERE database ="
                                 " current_database()");
        return left.ok() && remaining.ok() && !remaining->empty() && (*remaining)[0] == "0";
      },
      Duration(10000));
}

Result<std::unique_ptr<RedisServer>> RedisServer::Start() {
  if (!std::filesystem::exists("/usr/bin/redis-server")) {
    return FailedPreconditionError("redis-server is not installed (apt-get install redis-server)");
  }
  std::unique_ptr<RedisServer> s(new RedisServer());
  s->port_ = FreePort();
  COURIER_RETURN_IF_ERROR(s->StartAgain());
  return s;
}

std::string RedisServer::Url(const std::string& stream) const {
  return "redis://127.0.0.1:" + std::to_string(port_) + (stream.empty() ? "" : "/" + stream);
}

Status RedisServer::StartAgain() {
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p,
      Subprocess::Spawn({"/usr/bin/redis-server", "--port", std::to_string(port_), "--bind",
                         "127.0.0.1", "--dir", dir_.path(), "--appendonly", "yes", "--appendfsync",
                         "always", "--save", "", "--protected-mode", "no", "--logfile",
                         dir_.File("redis.log")}));
  process_.emplace(std::move(p));
  auto endpoint = ParseRedisUrl(Url());
  if (!endpoint.ok()) return endpoint.status();
  const bool up = WaitUntil([&] {
    auto conn = ConnectRedis(*endpoint, Duration(1000));
    if (!conn.ok()) return false;
    auto* reply = static_cast<redisReply*>(redisCommand(conn->get(), "PING"));
    const bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
    if (reply != nullptr) freeReplyObject(reply);
    return ok;
  });
  if (!up) return InternalError("redis-server did not start; see " + dir_.File("redis.log"));
  return Status::Ok();
}

Status RedisServer::Stop() { return StopChild(process_, "redis-server"); }

Result<std::unique_ptr<WebhookServer>> WebhookServer::Start() {
  std::unique_ptr<WebhookServer> s(new WebhookServer());
  s->port_ = FreePort();
  COURIER_RETURN_IF_ERROR(s->StartAgain());
  return s;
}

std::string WebhookServer::Url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/" + path;
}

Status WebhookServer::StartAgain() {
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p,
      Subprocess::Spawn({"/usr/bin/python3", COURIER_SOURCE_DIR "/tests/support/webhook_server.py",
                         std::to_string(port_), log()},
                        dir_.File("server.out"), dir_.File("server.out")));
  process_.emplace(std::move(p));
  if (!WaitUntil([&] { return PortAccepts(port_); })) {
    return InternalError("webhook server did not start; see " + dir_.File("server.out"));
  }
  return Status::Ok();
}

Status WebhookServer::Stop() { return StopChild(process_, "webhook server"); }

Result<std::unique_ptr<TestCertificates>> TestCertificates::Make() {
  std::unique_ptr<TestCertificates> c(new TestCertificates());
  const std::string log = c->dir_.File("openssl.log");
  auto run = [&](std::vector<std::string> args) -> Status {
    args.insert(args.begin(), "/usr/bin/openssl");
    COURIER_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(args, log, log));
    auto code = p.Wait(Duration(60000));
    if (!code || *code != 0) return InternalError("openssl failed: " + ReadFile(log));
    return Status::Ok();
  };
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                       "-nodes"};
  for (const std::string name : {"ca", "other-ca"}) {
    std::vector<std::string> args = {"req", "-x509"};
    args.insert(args.end(), ec.begin(), ec.end());
    args.insert(args.end(),
                {"-keyout", c->dir_.File(name + ".key"), "-out", c->dir_.File(name + ".pem"),
                 "-days", "3", "-subj", "/CN=courier test " + name});
    COURIER_RETURN_IF_ERROR(run(args));
  }
  std::ofstream(c->dir_.File("leaf.ext")) << "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                          << "extendedKeyUsage=serverAuth,clientAuth\n";
  std::vector<std::string> args = {"req"};
  args.insert(args.end(), ec.begin(), ec.end());
  args.insert(args.end(),
              {"-keyout", c->key(), "-out", c->dir_.File("leaf.csr"), "-subj", "/CN=localhost"});
  COURIER_RETURN_IF_ERROR(run(args));
  COURIER_RETURN_IF_ERROR(run({"x509", "-req", "-in", c->dir_.File("leaf.csr"), "-CA", c->ca(),
                               "-CAkey", c->dir_.File("ca.key"), "-CAcreateserial", "-out",
                               c->cert(), "-days", "3", "-extfile", c->dir_.File("leaf.ext")}));
  return c;
}

Result<std::unique_ptr<NatsServer>> NatsServer::Start(const TestCertificates* tls) {
  if (!std::filesystem::exists("/usr/sbin/nats-server")) {
    return FailedPreconditionError("nats-server is not installed (apt-get install nats-server)");
  }
  std::unique_ptr<NatsServer> s(new NatsServer());
  s->tls_ = tls;
  s->port_ = FreePort();
  COURIER_RETURN_IF_ERROR(s->StartAgain());
  return s;
}

std::string NatsServer::Url(const std::string& subject) const {
  const std::string path = subject.empty() ? "" : "/" + subject;
  if (tls_ == nullptr) return "nats://127.0.0.1:" + std::to_string(port_) + path;
  return "nats+tls://localhost:" + std::to_string(port_) + path + "?cacert=" + tls_->ca() +
         "&cert=" + tls_->cert() + "&key=" + tls_->key();
}

Status NatsServer::StartAgain() {
  std::vector<std::string> argv = {"/usr/sbin/nats-server", "-js", "-a",       "127.0.0.1", "-p",
                                   std::to_string(port_),   "-sd", dir_.path()};
  if (tls_ != nullptr) {
    argv.insert(argv.end(), {"--tlsverify", "--tlscert", tls_->cert(), "--tlskey", tls_->key(),
                             "--tlscacert", tls_->ca()});
  }
  COURIER_ASSIGN_OR_RETURN(Subprocess p,
                           Subprocess::Spawn(argv, dir_.File("nats.log"), dir_.File("nats.log")));
  process_.emplace(std::move(p));
  if (!WaitUntil([&] { return PortAccepts(port_); })) {
    return InternalError("nats-server did not start; see " + dir_.File("nats.log"));
  }
  return Status::Ok();
}

Status NatsServer::Stop() { return StopChild(process_, "nats-server"); }

Status NatsServer::AddStream(const std::string& name, const std::vector<std::string>& subjects) {
  COURIER_ASSIGN_OR_RETURN(NatsEndpoint endpoint, ParseNatsUrl(Url()));
  COURIER_ASSIGN_OR_RETURN(natsConnection * conn, ConnectNats(endpoint));
  jsCtx* js = nullptr;
  natsStatus s = NATS_OK;
  // Connected in the background: JetStream calls fail until then.
  WaitUntil([&] { return natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED; });
  s = natsConnection_JetStream(&js, conn, nullptr);
  std::vector<const char*> subs;
  for (const std::string& sub : subjects) subs.push_back(sub.c_str());
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = name.c_str();
  cfg.Subjects = subs.data();
  cfg.SubjectsLen = static_cast<int>(subs.size());
  cfg.Storage = js_FileStorage;
  jsErrCode code = static_cast<jsErrCode>(0);
  if (s == NATS_OK) s = js_AddStream(nullptr, js, &cfg, nullptr, &code);
  if (js != nullptr) jsCtx_Destroy(js);
  natsConnection_Destroy(conn);
  if (s != NATS_OK) return InternalError(std::string("js_AddStream: ") + natsStatus_GetText(s));
  return Status::Ok();
}

Result<std::unique_ptr<RabbitMqServer>> RabbitMqServer::Start() {
  if (!std::filesystem::exists("/usr/lib/rabbitmq/bin/rabbitmq-server")) {
    return FailedPreconditionError(
        "rabbitmq-server is not installed (apt-get install rabbitmq-server)");
  }
  // A node that exits while booting (a port taken meanwhile) is tried again on fresh ports.
  Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::unique_ptr<RabbitMqServer> s(new RabbitMqServer());
    COURIER_ASSIGN_OR_RETURN(s->certs_, TestCertificates::Make());
    std::set<int> ports;
    while (ports.size() < 4) ports.insert(FreePort());
    auto it = ports.begin();
    s->port_ = *it++;
    s->tls_port_ = *it++;
    s->dist_port_ = *it++;
    s->epmd_port_ = *it;
    std::ofstream(s->dir_.File("rabbitmq.conf"))
        << "listeners.tcp.default = 127.0.0.1:" << s->port_ << "\n"
        << "listeners.ssl.default = 127.0.0.1:" << s->tls_port_ << "\n"
        << "ssl_options.cacertfile = " << s->certs_->ca() << "\n"
        << "ssl_options.certfile = " << s->certs_->cert() << "\n"
        << "ssl_options.keyfile = " << s->certs_->key() << "\n"
        << "ssl_options.verify = verify_peer\n"
        << "ssl_options.fail_if_no_peer_cert = false\n"
        << "max_message_size = 1048576\n"
        << "disk_free_limit.absolute = 1MB\n";
    std::ofstream(s->dir_.File("enabled_plugins")) << "[].\n";
    last = s->StartAgain();
    if (last.ok()) return s;
    std::fprintf(stderr, "%s\n", last.message().c_str());
  }
  return last;
}

RabbitMqServer::~RabbitMqServer() {
  (void)Stop();
  // The Erlang port mapper the node started lives on; it serves no other node.
  auto p = Subprocess::Spawn({"/usr/bin/epmd", "-port", std::to_string(epmd_port_), "-kill"},
                             "/dev/null", "/dev/null");
  if (p.ok()) p->Wait(Duration(5000));
}

std::string RabbitMqServer::Url(const std::string& exchange, const std::string& query) const {
  return "amqp://guest:guest@127.0.0.1:" + std::to_string(port_) + "/%2F/" + exchange +
         (query.empty() ? "" : "?" + query);
}

std::string RabbitMqServer::TlsUrl(const std::string& exchange, const std::string& query) const {
  return "amqps://guest:guest@localhost:" + std::to_string(tls_port_) + "/%2F/" + exchange + "?" +
         query;
}

Status RabbitMqServer::StartAgain() {
  const std::string d = dir_.path();
  const std::string node = "courier" + std::to_string(port_) + "@localhost";
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p,
      Subprocess::Spawn(
          {"/usr/bin/env", "HOME=" + d, "RABBITMQ_NODENAME=" + node,
           "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1", "RABBITMQ_NODE_PORT=" + std::to_string(port_),
           "RABBITMQ_DIST_PORT=" + std::to_string(dist_port_),
           "ERL_EPMD_PORT=" + std::to_string(epmd_port_), "RABBITMQ_MNESIA_BASE=" + d + "/mnesia",
           "RABBITMQ_LOG_BASE=" + d + "/log", "RABBITMQ_LOGS=" + d + "/rabbit.log",
           "RABBITMQ_PID_FILE=" + d + "/rabbit.pid", "RABBITMQ_CONFIG_FILE=" + d + "/rabbitmq.conf",
           "RABBITMQ_ADVANCED_CONFIG_FILE=" + d + "/advanced.config",
           "RABBITMQ_ENABLED_PLUGINS_FILE=" + d + "/enabled_plugins",
           "RABBITMQ_CONF_ENV_FILE=" + d + "/rabbitmq-env.conf",
           "/usr/lib/rabbitmq/bin/rabbitmq-server"},
          dir_.File("server.out"), dir_.File("server.out"), "",
          // Its own process group: the script's Erlang VM gets the stop too (it outlived the
          // test, one per run, when only the script was signalled).
          /*own_group=*/true));
  process_.emplace(std::move(p));
  auto endpoint = ParseAmqpUrl(Url(""));
  if (!endpoint.ok()) return endpoint.status();
  // The port opens once the broker has booted; logging in proves it serves.
  const bool up = WaitUntil(
      [&] {
        if (!process_->Running()) return true;
        return PortAccepts(port_) && PortAccepts(tls_port_) &&
               AmqpSession::Connect(*endpoint, Duration(2000)).ok();
      },
      Duration(120000));
  if (!up || !process_->Running()) {
    // The temp dir goes with the server object: keep the end of its logs in the message.
    auto tail = [](const std::string& text) {
      return text.substr(text.size() > 1500 ? text.size() - 1500 : 0);
    };
    return InternalError("rabbitmq-server did not start; its output ends with:\n" +
                         tail(ReadFile(dir_.File("server.out"))) + "\nrabbit.log ends with:\n" +
                         tail(ReadFile(dir_.File("rabbit.log"))));
  }
  return Status::Ok();
}

Status RabbitMqServer::Stop() { return StopChild(process_, "rabbitmq-server"); }

Status RabbitMqServer::DeclareExchange(const std::string& name) {
  COURIER_ASSIGN_OR_RETURN(AmqpEndpoint endpoint, ParseAmqpUrl(Url("")));
  COURIER_ASSIGN_OR_RETURN(auto session, AmqpSession::Connect(endpoint, Duration(5000)));
  return session->DeclareExchange(name, "topic");
}

Status RabbitMqServer::DeclareQueue(const std::string& queue, const std::string& exchange,
                                    const std::string& binding_key) {
  COURIER_ASSIGN_OR_RETURN(AmqpEndpoint endpoint, ParseAmqpUrl(Url("")));
  COURIER_ASSIGN_OR_RETURN(auto session, AmqpSession::Connect(endpoint, Duration(5000)));
  return session->DeclareQueue(queue, exchange, binding_key);
}

Result<int64_t> RabbitMqServer::QueueLength(const std::string& queue) {
  COURIER_ASSIGN_OR_RETURN(AmqpEndpoint endpoint, ParseAmqpUrl(Url("")));
  COURIER_ASSIGN_OR_RETURN(auto session, AmqpSession::Connect(endpoint, Duration(5000)));
  amqp_bytes_t name;
  name.len = queue.size();
  name.bytes = const_cast<char*>(queue.data());
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(session->conn(), static_cast<amqp_channel_t>(session->channel()), name,
                         /*passive=*/1, 0, 0, 0, amqp_empty_table);
  COURIER_RETURN_IF_ERROR(session->RpcStatus("queue.declare"));
  return static_cast<int64_t>(ok->message_count);
}

Result<std::unique_ptr<SilentServer>> SilentServer::Start() {
  std::unique_ptr<SilentServer> s(new SilentServer());
  s->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (s->listen_fd_ < 0 || ::bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(s->listen_fd_, 64) != 0 ||
      ::getsockname(s->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      ::pipe2(s->wake_, O_CLOEXEC) != 0) {
    return InternalError(std::string("silent server: ") + std::strerror(errno));
  }
  s->port_ = ntohs(addr.sin_port);
  SilentServer* self = s.get();
  s->thread_ = std::thread([self] {
    std::vector<int> open;
    while (true) {
      pollfd fds[2] = {{self->listen_fd_, POLLIN, 0}, {self->wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
      if (fds[1].revents != 0) break;
      if ((fds[0].revents & POLLIN) != 0) {
        const int fd = ::accept4(self->listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          open.push_back(fd);
          ++self->accepted_;
        }
      }
    }
    for (int fd : open) ::close(fd);
  });
  return s;
}

SilentServer::~SilentServer() {
  if (thread_.joinable()) {
    const char byte = 1;
    (void)!::write(wake_[1], &byte, 1);
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_[0], wake_[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

}  // namespace courier::test
