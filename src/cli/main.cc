// courier: one binary for the relay and its tools. See `courier --help`.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "cli/commands.h"
#include "cli/config.h"
#include "cli/relay_config.h"
#include "core/encoding.h"
#include "core/http_endpoint.h"
#include "core/log.h"
#include "core/url.h"
#include "courier/relay.h"
#include "inbox/consume.h"
#include "relay/metrics.h"
#include "relay/status_report.h"
#include "sinks/amqp.h"
#include "sinks/dev_broker.h"
#include "sinks/kafka_reader.h"
#include "sinks/nats.h"
#include "sinks/redis.h"
#include "sinks/sink.h"
#include "sources/source.h"

namespace courier::cli {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

}  // namespace

int Fail(const Status& st) {
  const int code = st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound
                       ? kExitUsage
                       : kExitFailure;
  if (log::IsJson()) {
    // Log shippers get the final error as a record like the others.
    log::Error(st.message(), {{"exit_code", code}});
  } else {
    std::fprintf(stderr, "courier: error: %s\n", log::Scrub(st.message()).c_str());
  }
  return code;
}

namespace {

// Set while a stoppable command runs; the signal handler only touches lock-free atomics.
std::atomic<Relay*> g_relay{nullptr};
StopSignal g_stop;

void OnTerminate(int) {
  g_stop.Request();
  if (Relay* relay = g_relay.load()) relay->RequestStop();
}

void InstallSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnTerminate;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // A file size limit (ulimit -f) then fails the file sink's write with EFBIG, which is
  // retried, instead of killing the relay mid-line.
  signal(SIGXFSZ, SIG_IGN);
}

// Passwords given on the command line show in ps and /proc/PID/cmdline to every user of the
// host. Once the arguments are copied, they are remembered (so that no log line or error
// repeats them) and overwritten in place with 'x's, as database clients do.
void HideSecretArguments(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    log::AddSecrets(UrlSecrets(argv[i]));
    const std::string masked = MaskUrlSecrets(argv[i]);
    std::memcpy(argv[i], masked.data(), masked.size());
  }
}

struct CommonFlags {
  std::string config;  // read by ExpandConfig before parsing; declared so every command takes it
  std::string log_level = "info";
  std::string log_format = "logfmt";
};

void AddCommonFlags(CLI::App* cmd, CommonFlags* f) {
  cmd->add_option("--config", f->config,
                  "TOML file whose keys are this command's flag names (flags win); ${VAR} "
                  "reads the environment")
      ->type_name("FILE");
  cmd->add_option("--log-level", f->log_level, "debug, info, warn or error")
      ->type_name("LEVEL")
      ->capture_default_str();
  cmd->add_option("--log-format", f->log_format, "logfmt or json")
      ->type_name("FORMAT")
      ->capture_default_str();
}

Status ApplyCommonFlags(const CommonFlags& f) {
  log::Level level;
  if (!log::ParseLevel(f.log_level, &level)) {
    return InvalidArgumentError("--log-level must be debug, info, warn or error");
  }
  log::SetLevel(level);
  if (f.log_format != "logfmt" && f.log_format != "json") {
    return InvalidArgumentError("--log-format must be logfmt or json");
  }
  log::SetJson(f.log_format == "json");
  return Status::Ok();
}

// /metrics (Prometheus text), /healthz (the process answers), /readyz (CheckReadiness: 200
// while active or standing by, 503 while retrying a failure or while the sink does not ack).
HttpResponse ServeRelay(const std::string& path, const Relay& relay, const RelayFlags& f) {
  const RelayOptions& o = f.options;
  const RelayStats stats = relay.stats();
  if (path == "/metrics") {
    auto status = ReadOutboxStatus(o.source_url, {o.outbox_table, o.dead_letter_table});
    return {200, "text/plain; version=0.0.4; charset=utf-8",
            RenderMetrics(stats, status.ok() ? &*status : nullptr, o.outbox_table)};
  }
  if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
  if (path == "/readyz") {
    std::string sinks = RedactUrl(o.sink_url);
    for (const std::string& extra : o.extra_sink_urls) sinks += ", " + RedactUrl(extra);
    Readiness r =
        CheckReadiness(stats, std::chrono::steady_clock::now(), f.ready_ack_timeout_ms, sinks);
    // The body may quote a sink's or database's error.
    return {r.http_status, "text/plain; charset=utf-8", log::Scrub(std::move(r.body))};
  }
  return {404, "text/plain; charset=utf-8", "try /metrics, /healthz or /readyz\n"};
}

int RunRelay(RelayFlags& flags) {
  // The checks `courier config check` makes (cli/relay_config.h).
  const std::vector<FlagError> errors = CheckRelayFlags(flags);
  if (!errors.empty()) return Fail(errors.front().status);
  auto relay = Relay::Create(flags.options);
  if (!relay.ok()) return Fail(relay.status());
  std::unique_ptr<HttpEndpoint> endpoint;
  if (flags.metrics_port > 0) {
    const Relay& r = **relay;
    const RelayFlags& f = flags;
    auto started =
        HttpEndpoint::Start(flags.metrics_host, flags.metrics_port,
                            [&r, &f](const std::string& path) { return ServeRelay(path, r, f); });
    if (!started.ok()) return Fail(started.status());
    endpoint = std::move(started).value();
    log::Info("serving /metrics, /healthz and /readyz",
              {{"address", flags.metrics_host + ":" + std::to_string(endpoint->port())}});
  }
  g_relay.store(relay->get());
  if (g_stop.requested()) (*relay)->RequestStop();
  Status st = (*relay)->Run();
  g_relay.store(nullptr);
  if (!st.ok()) return Fail(st);
  return 0;
}

int RunMigrate(const std::string& source, const TableNames& tables, const std::string& mode,
               CdcOptions cdc) {
  auto is_cdc = ParseMode(mode);
  if (!is_cdc.ok()) return Fail(is_cdc.status());
  cdc.enabled = *is_cdc;
  MigrateReport report;
  Status st = Migrate(source, tables, cdc, &g_stop, &report);
  if (!st.ok()) return Fail(st);
  auto join = [](const std::vector<std::string>& names) {
    std::string out;
    for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
  };
  std::string what;
  if (!report.created.empty()) what = "created tables " + join(report.created);
  if (!report.existing.empty()) {
    what += (what.empty() ? "" : "; ") + std::string("already there: ") + join(report.existing);
  }
  std::printf("migrated %s: %s%s\n", RedactUrl(source).c_str(), what.c_str(),
              cdc.enabled ? "; publication and replication slot ready" : "");
  return 0;
}

std::string Bytes(int64_t n) {
  char buf[32];
  if (n < 1024) {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(n));
  } else if (n < (1LL << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(n) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(n) / (1 << 20));
  }
  return buf;
}

int RunStatus(const std::string& source, const TableNames& tables, bool json) {
  auto s = ReadOutboxStatus(source, tables);
  if (!s.ok()) return Fail(s.status());
  if (json) {
    std::string slots = "[";
    for (const SlotStatus& slot : s->slots) {
      if (slots.size() > 1) slots += ",";
      char buf[512];
      std::snprintf(buf, sizeof buf,
                    "{\"name\":\"%s\",\"exists\":%s,\"active\":%s,\"confirmed_lsn\":\"%s\","
                    "\"lag_bytes\":%lld,\"retained_bytes\":%lld,\"wal_status\":\"%s\"}",
                    slot.name.c_str(), slot.exists ? "true" : "false",
                    slot.active ? "true" : "false", slot.confirmed_lsn.c_str(),
                    static_cast<long long>(slot.lag_bytes),
                    static_cast<long long>(slot.retained_bytes), slot.wal_status.c_str());
      slots += buf;
    }
    slots += "]";
    std::string leases = "[";
    for (const LeaseStatus& l : s->leases) {
      if (leases.size() > 1) leases += ",";
      nlohmann::json j = {{"name", l.name},
                          {"holder", l.holder},
                          {"epoch", l.epoch},
                          {"live", l.live},
                          {"renewed_ago_s", l.renewed_ago_s},
                          {"expires_in_s", l.expires_in_s},
                          {"published", l.published},
                          {"per_second", l.per_second}};
      leases += j.dump();
    }
    leases += "]";
    std::printf(
        "{\"pending\":%lld,\"oldest_pending_age_s\":%.3f,\"published_retained\":%lld,"
        "\"dead_letters\":%lld,\"relay_active\":%s,\"slots\":%s,\"leases\":%s}\n",
        static_cast<long long>(s->pending), s->oldest_pending_age_s,
        static_cast<long long>(s->published_retained), static_cast<long long>(s->dead_letters),
        s->relay_active ? "true" : "false", slots.c_str(), leases.c_str());
    return 0;
  }
  std::printf("source             %s\n", RedactUrl(source).c_str());
  std::printf("outbox             %s\n", tables.outbox.c_str());
  std::printf("pending events     %lld\n", static_cast<long long>(s->pending));
  std::printf("oldest pending     %.1f s\n", s->oldest_pending_age_s);
  std::printf("published, kept    %lld\n", static_cast<long long>(s->published_retained));
  std::printf("dead letters       %lld  (table %s)\n", static_cast<long long>(s->dead_letters),
              tables.dead_letter.c_str());
  std::printf("active relay       %s\n", s->relay_active ? "yes" : "no");
  for (const LeaseStatus& l : s->leases) {
    if (l.live) {
      std::printf("lease              %s  held by %s (epoch %lld), renewed %.1f s ago\n",
                  l.name.c_str(), l.holder.c_str(), static_cast<long long>(l.epoch),
                  l.renewed_ago_s);
      std::printf(
          "throughput         %.1f events/s over the last minute (%lld since it took over)\n",
          l.per_second, static_cast<long long>(l.published));
    } else if (l.epoch > 0) {
      std::printf("lease              %s  free (last held by %s, expired %.0f s ago)\n",
                  l.name.c_str(), l.holder.c_str(), -l.expires_in_s);
    }
  }
  std::vector<std::string> warnings;
  for (const SlotStatus& slot : s->slots) {
    if (!slot.exists) {
      std::printf("cdc slot           %s  missing\n", slot.name.c_str());
      warnings.push_back("slot " + slot.name +
                         " is gone; the next CDC relay recreates it and re-reads the un-acked "
                         "rows from the outbox");
      continue;
    }
    std::printf("cdc slot           %s  %s  confirmed %s  lag %s  retains %s of WAL\n",
                slot.name.c_str(), slot.active ? "active" : "inactive", slot.confirmed_lsn.c_str(),
                Bytes(slot.lag_bytes).c_str(), Bytes(slot.retained_bytes).c_str());
    if (slot.wal_status == "lost") {
      warnings.push_back("slot " + slot.name +
                         " was invalidated (the WAL it needed is gone); the next CDC relay "
                         "recreates it");
    } else if (!slot.active) {
      warnings.push_back("slot " + slot.name + " is inactive and retains " +
                         Bytes(slot.retained_bytes) +
                         " of WAL, growing with every write; start the relay (courier relay "
                         "--mode cdc) or drop the slot: SELECT pg_drop_replication_slot('" +
                         slot.name + "')");
    }
  }
  for (const std::string& w : warnings) std::printf("warning: %s\n", w.c_str());
  return 0;
}

struct ConsumeFlags {
  ConsumeOptions options;
  std::string handler_timeout = "30s";
  std::string backoff_initial = "200ms";
  std::string backoff_max = "30s";
  std::string claim_idle = "30s";
  std::string retention = "0";
  ConsumeParkedOptions parked;
};

int RunConsume(ConsumeFlags& f, bool parked) {
  ConsumeOptions o = f.options;
  Duration retention{0};
  for (auto [flag, text, out] :
       {std::tuple{"--handler-timeout", &f.handler_timeout, &o.handler_timeout},
        std::tuple{"--backoff-initial", &f.backoff_initial, &o.backoff_initial},
        std::tuple{"--backoff-max", &f.backoff_max, &o.backoff_max},
        std::tuple{"--claim-idle", &f.claim_idle, &o.claim_idle},
        std::tuple{"--inbox-retention", &f.retention, &retention}}) {
    Status st = ParseFlagDuration(flag, *text, out);
    if (!st.ok()) return Fail(st);
  }
  o.retention = std::chrono::duration_cast<std::chrono::seconds>(retention);
  if (parked) return RunConsumeParked(o, f.parked);
  if (o.from_url.empty()) return Fail(InvalidArgumentError("consume needs --from URL"));
  Status st = RunConsumer(o, g_stop);
  if (!st.ok()) return Fail(st);
  return 0;
}

struct TailFlags {
  std::string url;
  bool from_beginning = false;
  bool exit_at_end = false;
  bool wait_for_topic = false;
  long long limit = 0;
};

int TailKafka(const TailFlags& f, const Url& url) {
  std::vector<std::string> topics;
  std::stringstream ss(url.path);
  for (std::string t; std::getline(ss, t, ',');) {
    if (!t.empty()) topics.push_back(t);
  }
  if (topics.empty() || url.path.find('{') != std::string::npos) {
    return Fail(
        InvalidArgumentError("tail needs a concrete topic: kafka://host:port/TOPIC[,TOPIC]"));
  }
  auto reader = KafkaReader::Open(url.hosts, topics, f.from_beginning || f.exit_at_end, url.query);
  if (!reader.ok()) return Fail(reader.status());
  // Like kcat: a topic that is not there is an error (a typo would otherwise print nothing,
  // forever), unless asked to wait for it. Either way the reader creates no topic.
  auto missing = (*reader)->MissingTopics();
  if (!missing.ok()) return Fail(missing.status());
  if (!missing->empty()) {
    std::string names;
    for (const std::string& t : *missing) names += (names.empty() ? "" : ", ") + t;
    if (!f.wait_for_topic) {
      return Fail(
          NotFoundError("no topic " + names + " on kafka://" + url.hosts +
                        " (tail creates none; --wait-for-topic waits until it is created)"));
    }
    log::Info("waiting for the topic to be created", {{"topics", names}});
    while (!missing->empty() && Clock::Real().SleepFor(Duration(500), g_stop)) {
      missing = (*reader)->MissingTopics();
      if (!missing.ok()) return Fail(missing.status());
    }
    if (g_stop.requested()) return 0;
    // Everything in a topic created after the start is new: read it from its beginning.
    reader = KafkaReader::Open(url.hosts, topics, /*from_beginning=*/true, url.query);
    if (!reader.ok()) return Fail(reader.status());
  }
  long long printed = 0;
  auto print = [&](const KafkaRecord& r) {
    const std::string extra = "{\"topic\":\"" + r.topic +
                              "\",\"partition\":" + std::to_string(r.partition) +
                              ",\"offset\":" + std::to_string(r.offset) + "}";
    std::printf("%s\n", EventToJsonLine(r.event, extra).c_str());
    std::fflush(stdout);
    ++printed;
  };
  if (f.exit_at_end) {
    auto records = (*reader)->ReadToEnd(std::chrono::seconds(60));
    if (!records.ok()) return Fail(records.status());
    for (const KafkaRecord& r : *records) {
      if (f.limit > 0 && printed >= f.limit) break;
      print(r);
    }
    return 0;
  }
  bool following = false;
  while (!g_stop.requested() && (f.limit == 0 || printed < f.limit)) {
    auto r = (*reader)->Poll(Duration(200));
    if (!following && (*reader)->assigned_partitions() > 0) {
      log::Info("following",
                {{"topics", url.path}, {"partitions", (*reader)->assigned_partitions()}});
      following = true;
    }
    if (!r.ok()) {
      log::Warn("tail", {{"error", r.status().message()}});
      Clock::Real().SleepFor(Duration(500), g_stop);
      continue;
    }
    if (r->has_value()) print(**r);
  }
  return 0;
}

int TailFile(const TailFlags& f, const Url& url) {
  const std::string path = "/" + url.path;
  std::ifstream in(path);
  if (!in) return Fail(InvalidArgumentError("cannot open " + path));
  if (!f.from_beginning && !f.exit_at_end) in.seekg(0, std::ios::end);
  long long printed = 0;
  std::string line;
  while (!g_stop.requested() && (f.limit == 0 || printed < f.limit)) {
    if (std::getline(in, line)) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
      ++printed;
      continue;
    }
    if (f.exit_at_end) break;
    in.clear();
    Clock::Real().SleepFor(Duration(100), g_stop);
  }
  return 0;
}

int TailRedis(const TailFlags& f) {
  auto endpoint = ParseRedisUrl(f.url);
  if (!endpoint.ok()) return Fail(endpoint.status());
  if (endpoint->stream.find('{') != std::string::npos || endpoint->stream.empty()) {
    return Fail(InvalidArgumentError("tail needs a concrete stream: redis://host:port/STREAM"));
  }
  // Replies wait up to the 200 ms block; the connection's own timeout must be longer.
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  if (!conn.ok()) return Fail(conn.status());
  std::string after = f.from_beginning || f.exit_at_end ? "0" : "$";
  long long printed = 0;
  while (!g_stop.requested() && (f.limit == 0 || printed < f.limit)) {
    auto entries = ReadRedisStream(conn->get(), endpoint->stream, after, Duration(200));
    if (!entries.ok()) return Fail(entries.status());
    if (entries->empty() && f.exit_at_end) break;
    for (const RedisEntry& e : *entries) {
      if (f.limit > 0 && printed >= f.limit) break;
      after = e.id;
      const std::string extra = "{\"stream\":\"" + endpoint->stream + "\",\"id\":\"" + e.id + "\"}";
      std::printf("%s\n", EventToJsonLine(e.event, extra).c_str());
      std::fflush(stdout);
      ++printed;
    }
  }
  return 0;
}

// Prints what a reader with Next(timeout) -> Result<optional<Event>> yields (NATS, RabbitMQ),
// one JSON line each with `extra`, until the limit, the end (--exit-at-end) or a stop.
template <typename Reader>
int PrintEvents(Reader& reader, const std::string& extra, const TailFlags& f) {
  long long printed = 0;
  while (!g_stop.requested() && (f.limit == 0 || printed < f.limit)) {
    auto next = reader.Next(Duration(f.exit_at_end ? 1000 : 200));
    if (!next.ok()) return Fail(next.status());
    if (!next->has_value()) {
      if (f.exit_at_end) break;
      continue;
    }
    std::printf("%s\n", EventToJsonLine(**next, extra).c_str());
    std::fflush(stdout);
    ++printed;
  }
  return 0;
}

int TailNats(const TailFlags& f) {
  auto endpoint = ParseNatsUrl(f.url);
  if (!endpoint.ok()) return Fail(endpoint.status());
  if (endpoint->subject.find('{') != std::string::npos) {
    return Fail(InvalidArgumentError("tail needs a concrete subject: nats://host:port/SUBJECT"));
  }
  auto reader = NatsReader::Open(*endpoint, f.from_beginning || f.exit_at_end);
  if (!reader.ok()) return Fail(reader.status());
  return PrintEvents(**reader, "{\"subject\":\"" + endpoint->subject + "\"}", f);
}

int TailAmqp(const TailFlags& f) {
  auto endpoint = ParseAmqpUrl(f.url);
  if (!endpoint.ok()) return Fail(endpoint.status());
  if (endpoint->queue.empty() && (f.from_beginning || f.exit_at_end)) {
    return Fail(InvalidArgumentError(
        "an exchange keeps no history: --from-beginning and --exit-at-end need a queue to "
        "read, amqp://host:port/VHOST/?queue=NAME (its messages stay in it)"));
  }
  auto reader = AmqpReader::Open(*endpoint);
  if (!reader.ok()) return Fail(reader.status());
  const std::string extra = endpoint->queue.empty()
                                ? "{\"exchange\":\"" + endpoint->exchange + "\"}"
                                : "{\"queue\":\"" + endpoint->queue + "\"}";
  return PrintEvents(**reader, extra, f);
}

int RunTail(const TailFlags& f) {
  auto url = ParseUrl(f.url);
  if (!url.ok()) return Fail(url.status());
  if (url->scheme == "kafka") return TailKafka(f, *url);
  if (url->scheme == "redis") return TailRedis(f);
  if (url->scheme == "nats" || url->scheme == "nats+tls") return TailNats(f);
  if (url->scheme == "amqp" || url->scheme == "amqps") return TailAmqp(f);
  if (url->scheme == "file") return TailFile(f, *url);
  return Fail(
      InvalidArgumentError("tail cannot read '" + url->scheme +
                           "://' URLs; expected kafka://host:port/TOPIC, redis://host:port/STREAM, "
                           "nats://host:port/SUBJECT, amqp://host:port/VHOST/EXCHANGE or "
                           "file:///path"));
}

int RunDevBroker(int brokers, int port, const std::string& bootstrap_file,
                 const std::vector<std::string>& topics, int partitions) {
  auto broker = DevBroker::Start(brokers, port);
  if (!broker.ok()) return Fail(broker.status());
  for (const std::string& t : topics) {
    Status st = (*broker)->CreateTopic(t, partitions);
    if (!st.ok()) return Fail(st);
  }
  const std::string& bootstrap = (*broker)->bootstrap();
  if (!bootstrap_file.empty()) {
    // Written whole, then renamed: a reader never sees half an address.
    const std::string tmp = bootstrap_file + ".tmp";
    std::ofstream(tmp) << bootstrap << "\n";
    if (std::rename(tmp.c_str(), bootstrap_file.c_str()) != 0) {
      return Fail(InvalidArgumentError("cannot write " + bootstrap_file));
    }
  }
  std::printf("%s\n", bootstrap.c_str());
  std::fflush(stdout);
  log::Info("dev broker running; stop it with Ctrl-C or SIGTERM (its data lives in memory)",
            {{"bootstrap", bootstrap}, {"brokers", brokers}});
  while (!g_stop.requested()) Clock::Real().SleepFor(Duration(1000), g_stop);
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{
      "courier moves events from your database's outbox to brokers, crash-safe.\n"
      "Write business rows and an event row in one transaction; the relay publishes committed\n"
      "events, in order per aggregate, and deletes them only after the broker acknowledged.\n\n"
      "Start with:  courier demo      (SQLite + built-in dev broker, nothing to install)\n"
      "Then:        courier migrate --source postgres://app@127.0.0.1/app\n"
      "             courier relay --source postgres://app@127.0.0.1/app \\\n"
      "                           --sink kafka://127.0.0.1:9092/{aggregate_type}"};
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_version_flag("--version", std::string("courier ") + COURIER_VERSION);

  CommonFlags common;
  const std::string kTables = "Tables";

  // relay
  RelayFlags rf;
  CLI::App* relay = app.add_subcommand(
      "relay",
      "Publish committed outbox events to a sink, forever (or --once).\n"
      "Sources: postgres://user:pass@host:port/db (polled, or --mode cdc: its write-ahead log)\n"
      "           (percent-encode the password: '@' is %40, '/' %2F, '?' %3F, '#' %23, '%' %25;\n"
      "           better, keep it out of the command line: --config with ${VAR})\n"
      "         sqlite:///path/app.db\n"
      "Sinks:   kafka://host:port[,host:port]/TOPIC[?librdkafka.property=value...]\n"
      "           TOPIC may use {aggregate_type} and {event_type}; default {aggregate_type}\n"
      "         redis://[user:pass@]host:port/STREAM[?db=N&maxlen=N] (Redis Streams, XADD)\n"
      "           STREAM may use {aggregate_type} and {event_type}; default {aggregate_type}\n"
      "         redis-cache://host:port/PREFIX[?delete_on=Type,Type&ttl=S] (PREFIX:{type}:{id}\n"
      "           = the newest payload; an older event never overwrites a newer one)\n"
      "         nats://host:port[,host:port]/SUBJECT (NATS JetStream, Nats-Msg-Id = event_id)\n"
      "         amqp://user:pass@host:port/VHOST/EXCHANGE[?routing_key=T] (RabbitMQ: publisher\n"
      "           confirms, persistent, mandatory; message_id = event_id; VHOST / is %2F)\n"
      "         amqps:// and nats+tls:// connect with TLS: ?cacert=CA.pem (default: the\n"
      "           system's CAs), &cert=CLIENT.pem&key=CLIENT.key, verify=false (tests only)\n"
      "         http(s)://host:port/PATH (webhook: a POST per event, Idempotency-Key, 2xx acks)\n"
      "         file:///path/events.jsonl (one JSON line per event, fsynced before ack)\n"
      "Exit codes: 0 done or stopped by SIGTERM/SIGINT; 1 failure; 2 bad input.");
  relay->add_option("--source", rf.options.source_url, "Database URL holding the outbox")
      ->type_name("URL")
      ->required();
  relay
      ->add_option("--sink", rf.sinks,
                   "Destination URL; repeat it to fan out (an event is done once every sink "
                   "acked it)")
      ->type_name("URL")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  relay->add_option("--table", rf.options.outbox_table, "Outbox table (may be schema.table)")
      ->type_name("NAME")
      ->capture_default_str()
      ->group(kTables);
  relay
      ->add_option("--dead-letter-table", rf.options.dead_letter_table,
                   "Where events the sink rejects for good are parked")
      ->type_name("NAME")
      ->capture_default_str()
      ->group(kTables);
  relay
      ->add_option("--dead-letter-policy", rf.dead_letter_policy,
                   "park: an event the sink rejects for good holds back the later events of its "
                   "aggregate until `courier dead-letters retry|drop`; skip: they go on without "
                   "it")
      ->type_name("park|skip")
      ->capture_default_str();
  relay
      ->add_option("--mode", rf.mode,
                   "poll: query the outbox table; cdc: stream committed inserts from "
                   "PostgreSQL's write-ahead log (logical replication, wal_level=logical)")
      ->type_name("poll|cdc")
      ->capture_default_str();
  const std::string kCdc = "Change data capture (--mode cdc)";
  relay
      ->add_option("--slot", rf.options.slot,
                   "Replication slot, created if missing (default courier_<db>_<table>_<hash>)")
      ->type_name("NAME")
      ->group(kCdc);
  relay
      ->add_option("--publication", rf.options.publication,
                   "Publication of the outbox, created if missing (default: the table's name)")
      ->type_name("NAME")
      ->group(kCdc);
  const std::string kHa = "High availability and scale-out";
  relay
      ->add_option("--lease", rf.lease,
                   "PostgreSQL: the active relay's lease; a standby (the same command run "
                   "elsewhere) takes over at most this long after it died or lost its session")
      ->type_name("DURATION")
      ->capture_default_str()
      ->group(kHa);
  relay
      ->add_option("--shard", rf.shard,
                   "Polling PostgreSQL: publish only shard K of N (aggregates by hash of "
                   "aggregate_id); run one relay (plus standbys) per shard")
      ->type_name("K/N")
      ->group(kHa);
  const std::string kObs = "Observability";
  relay
      ->add_option("--metrics-port", rf.metrics_port,
                   "Serve /metrics (Prometheus), /healthz and /readyz on this port (0: off)")
      ->type_name("PORT")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535))
      ->group(kObs);
  relay
      ->add_option("--metrics-host", rf.metrics_host,
                   "IPv4 address or host name (localhost) to serve them on; 0.0.0.0 exposes "
                   "them to the network")
      ->type_name("HOST")
      ->capture_default_str()
      ->group(kObs);
  relay
      ->add_option("--ready-ack-timeout", rf.ready_ack_timeout,
                   "/readyz answers 503 once events have waited this long for the sink's ack")
      ->type_name("DURATION")
      ->capture_default_str()
      ->group(kObs);
  relay->add_option("--batch-size", rf.batch_size, "Events fetched and published per batch")
      ->type_name("N")
      ->capture_default_str();
  relay->add_option("--poll-interval", rf.poll_interval, "Wait between polls when idle")
      ->type_name("DURATION")
      ->capture_default_str();
  relay->add_flag("--once", rf.options.once,
                  "Drain what is pending and exit (non-zero with the reason on failure)");
  relay->add_flag("--retain", rf.options.retain,
                  "Stamp published_at instead of deleting; rows are deleted after --retention");
  relay->add_option("--retention", rf.retention, "Retain mode: keep published rows this long")
      ->type_name("DURATION")
      ->capture_default_str();
  relay->add_option("--cleanup-interval", rf.cleanup_interval, "Retain mode: cleaner period")
      ->type_name("DURATION")
      ->capture_default_str();
  relay
      ->add_option("--delivery-timeout", rf.delivery_timeout,
                   "Give up waiting for one event's ack after this long and retry it later; "
                   "0 waits forever (default 0, or 30s with --once)")
      ->type_name("DURATION");
  relay
      ->add_option("--shutdown-timeout", rf.shutdown_timeout,
                   "On SIGTERM, wait this long for in-flight acks")
      ->type_name("DURATION")
      ->capture_default_str();
  relay
      ->add_option("--backoff-initial", rf.backoff_initial,
                   "First wait after a failure; doubles (with jitter) up to --backoff-max")
      ->type_name("DURATION")
      ->capture_default_str();
  relay->add_option("--backoff-max", rf.backoff_max, "Longest wait between retries")
      ->type_name("DURATION")
      ->capture_default_str();
  AddCommonFlags(relay, &common);

  // migrate
  std::string source;
  TableNames tables;
  std::string migrate_mode = "poll";
  CdcOptions migrate_cdc;
  CLI::App* migrate = app.add_subcommand(
      "migrate",
      "Create the outbox and dead-letter tables (idempotent, safe to re-run). With --mode cdc\n"
      "also the publication and the replication slot (run it as the table's owner).");
  migrate->add_option("--source", source, "Database URL")->type_name("URL")->required();
  migrate->add_option("--mode", migrate_mode, "poll, or cdc to prepare change data capture")
      ->type_name("poll|cdc")
      ->capture_default_str();
  migrate
      ->add_option("--slot", migrate_cdc.slot,
                   "CDC: replication slot (default courier_<db>_<table>_<hash>)")
      ->type_name("NAME");
  migrate
      ->add_option("--publication", migrate_cdc.publication,
                   "CDC: publication (default: the table's name)")
      ->type_name("NAME");
  migrate->add_option("--table", tables.outbox, "Outbox table")
      ->type_name("NAME")
      ->capture_default_str();
  migrate->add_option("--dead-letter-table", tables.dead_letter, "Dead-letter table")
      ->type_name("NAME")
      ->capture_default_str();
  AddCommonFlags(migrate, &common);

  // status
  bool status_json = false;
  CLI::App* status = app.add_subcommand(
      "status", "Show backlog, oldest pending event, dead letters and whether a relay is active.");
  status->add_option("--source", source, "Database URL")->type_name("URL")->required();
  status->add_option("--table", tables.outbox, "Outbox table")
      ->type_name("NAME")
      ->capture_default_str();
  status->add_option("--dead-letter-table", tables.dead_letter, "Dead-letter table")
      ->type_name("NAME")
      ->capture_default_str();
  status->add_flag("--json", status_json, "One JSON object instead of text");
  AddCommonFlags(status, &common);

  // dead-letters
  DeadLettersOptions dlo;
  CLI::App* dead = app.add_subcommand(
      "dead-letters",
      "Events the sink rejected for good, parked with the reason (and, under the park policy,\n"
      "the later events of their aggregates, held behind them); those of the outbox --table.\n"
      "  list              show them, oldest first\n"
      "  retry ID...|--all queue parked events for the active relay to publish again (fix the\n"
      "                    cause first); the events held behind them follow, in order\n"
      "  drop ID...|--all  delete them for good; the events held behind them go out");
  dead->add_option("action", dlo.action, "list, retry or drop")
      ->type_name("ACTION")
      ->required()
      ->check(CLI::IsMember({"list", "retry", "drop"}));
  dead->add_option("ids", dlo.ids, "Dead-letter ids (the ID column of list)")
      ->type_name("ID")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  dead->add_option("--source", dlo.source, "Database URL")->type_name("URL")->required();
  dead->add_option("--table", dlo.outbox_table, "Outbox table whose dead letters to act on")
      ->type_name("NAME")
      ->capture_default_str();
  dead->add_option("--dead-letter-table", dlo.dead_letter_table, "Dead-letter table")
      ->type_name("NAME")
      ->capture_default_str();
  dead->add_flag("--all", dlo.all, "retry/drop: every dead letter of the outbox");
  dead->add_flag("--json", dlo.json,
                 "list: one JSON object per dead letter and line (JSON Lines), oldest first");
  dead->add_option("--limit", dlo.limit, "list: show at most the newest N")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  AddCommonFlags(dead, &common);

  // config
  std::string config_action, config_file;
  CLI::App* config = app.add_subcommand(
      "config",
      "check FILE: validate a relay config file without connecting: TOML syntax, unknown keys,\n"
      "unset ${VARS}, values (durations, URLs, policies), required keys; errors name the line.\n"
      "Secrets in URLs are shown as ***.");
  config->add_option("action", config_action, "check")
      ->type_name("ACTION")
      ->required()
      ->check(CLI::IsMember({"check"}));
  config->add_option("file", config_file, "Config file (TOML)")->type_name("FILE")->required();

  // tail
  TailFlags tf;
  CLI::App* tail = app.add_subcommand(
      "tail",
      "Print events arriving at a sink, one JSON line each (kafka://host:port/TOPIC, "
      "redis://host:port/STREAM, nats://host:port/SUBJECT, amqp://host:port/VHOST/EXCHANGE "
      "(new events) or amqp://host:port/VHOST/?queue=NAME (a queue, left as it is), "
      "file:///path).");
  tail->add_option("url", tf.url, "Sink URL with a concrete topic")->type_name("URL")->required();
  tail->add_flag("--from-beginning", tf.from_beginning, "Start at the oldest event, not new ones");
  tail->add_flag("--exit-at-end", tf.exit_at_end,
                 "Print everything there now (from the beginning) and exit");
  tail->add_option("--limit", tf.limit, "Exit after this many events (0: no limit)")
      ->type_name("N")
      ->check(CLI::Range(0LL, std::numeric_limits<long long>::max()));
  tail->add_flag("--wait-for-topic", tf.wait_for_topic,
                 "Kafka: a topic that does not exist yet is waited for (never created), "
                 "instead of exit 2");
  AddCommonFlags(tail, &common);

  // consume
  ConsumeFlags cf;
  CLI::App* consume = app.add_subcommand(
      "consume",
      "Deliver each event of a topic or stream once to a handler in any language, keeping the\n"
      "inbox (courier_inbox) in a database: claim the event_id, call the handler, commit, then\n"
      "acknowledge to the broker. A duplicate is acknowledged without calling the handler.\n"
      "A transient failure (HTTP 5xx, 408, 429, no connection, a timeout, a non-zero exit)\n"
      "is retried with capped backoff until it passes (or --max-attempts times); a permanent\n"
      "one (any other HTTP 4xx, an exit code in --permanent-exit-codes) parks the event in\n"
      "courier_inbox_parked with the reason, and the next ones go on. An unreachable inbox\n"
      "database is waited for; it parks nothing. `consume parked list|retry|drop` manages\n"
      "the parked events.\n"
      "From:    kafka://host:port/TOPIC[,TOPIC] (consumer group = --consumer)\n"
      "         redis://host:port/STREAM (consumer group = --consumer)\n"
      "         nats://host:port/SUBJECT (JetStream durable pull consumer = --consumer)\n"
      "         amqp://user:pass@host:port/VHOST/?queue=NAME (RabbitMQ, manual acks)\n"
      "         (amqps:// and nats+tls:// for TLS, with ?cacert=, cert=, key= as for relay)\n"
      "Handler: --to http(s)://host/path (a POST per event, Idempotency-Key, CloudEvents\n"
      "         headers) or --exec 'COMMAND' (/bin/sh -c, the event as a JSON line on stdin)");
  consume->add_option("--from", cf.options.from_url, "Topic or stream URL (required)")
      ->type_name("URL");
  consume->add_option("--db", cf.options.db_url, "Database holding the inbox (run migrate)")
      ->type_name("URL")
      ->required();
  consume->add_option("--consumer", cf.options.consumer, "Consumer name (inbox key, group)")
      ->type_name("NAME")
      ->required();
  consume->add_option("--to", cf.options.to_url, "Handler URL")->type_name("URL");
  consume->add_option("--exec", cf.options.exec, "Handler command")->type_name("COMMAND");
  consume
      ->add_option("--max-attempts", cf.options.max_attempts,
                   "Park an event after N transient failures (0: retry until it passes)")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  consume
      ->add_option("--permanent-exit-codes", cf.options.permanent_exit_codes,
                   "--exec exit codes that park the event at once (e.g. 3,65)")
      ->type_name("CODE,...")
      ->delimiter(',')
      ->check(CLI::Range(1, 255));
  consume->add_option("--handler-timeout", cf.handler_timeout, "Per call")
      ->type_name("DURATION")
      ->capture_default_str();
  consume->add_option("--backoff-initial", cf.backoff_initial, "First retry delay")
      ->type_name("DURATION")
      ->capture_default_str();
  consume->add_option("--backoff-max", cf.backoff_max, "Longest retry delay")
      ->type_name("DURATION")
      ->capture_default_str();
  consume
      ->add_option("--claim-idle", cf.claim_idle,
                   "How long a delivered event may stay unacknowledged before another instance "
                   "gets it: Redis takes over such entries (XAUTOCLAIM); NATS redelivers after "
                   "it (the consumer's AckWait); Kafka and RabbitMQ ignore it")
      ->type_name("DURATION")
      ->capture_default_str();
  consume
      ->add_option("--inbox-retention", cf.retention,
                   "Prune inbox entries older than this, every minute (0: keep)")
      ->type_name("DURATION")
      ->capture_default_str();
  AddCommonFlags(consume, &common);
  CLI::App* parked = consume->add_subcommand(
      "parked",
      "The events the handler refused for good (courier_inbox_parked), of --consumer in --db:\n"
      "  list              show them, oldest first\n"
      "  retry ID...|--all deliver them to the handler (--to or --exec) once more, through the\n"
      "                    inbox; handled ones are removed, failing ones stay\n"
      "  drop ID...|--all  delete them for good");
  parked->fallthrough();  // --db, --consumer, --to, --exec... are consume's
  parked->add_option("action", cf.parked.action, "list, retry or drop")
      ->type_name("ACTION")
      ->required()
      ->check(CLI::IsMember({"list", "retry", "drop"}));
  parked->add_option("ids", cf.parked.ids, "Parked event ids (the ID column of list)")
      ->type_name("ID")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  parked->add_flag("--all", cf.parked.all, "retry/drop: every parked event of the consumer");
  parked->add_option("--limit", cf.parked.limit, "list: show at most N")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));

  // dev-broker
  int brokers = 1;
  int port = 0;
  int partitions = 4;
  std::string bootstrap_file;
  std::vector<std::string> topics;
  CLI::App* dev = app.add_subcommand(
      "dev-broker",
      "Run the built-in Kafka-protocol broker (librdkafka's mock cluster) for development.\n"
      "Prints its bootstrap address; any Kafka client can connect. Data lives in memory.\n"
      "Each partition keeps only its newest 5 MiB of record batches (at most 100000 batches):\n"
      "for more, create topics with more --partitions. After a group member leaves, the group\n"
      "waits that member's session.timeout.ms less 1 s before assigning partitions again\n"
      "(courier consume asks for 6 s; librdkafka's default is 45 s). See docs/sinks.md.");
  dev->add_option("--brokers", brokers, "Number of brokers")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 32));
  dev->add_option("--port", port,
                  "Listen on 127.0.0.1:PORT (broker N on PORT+N-1), so a restarted broker is\n"
                  "where running relays and consumers look for it (0: any free ports)")
      ->type_name("PORT")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  dev->add_option("--bootstrap-file", bootstrap_file, "Also write the bootstrap address here")
      ->type_name("FILE");
  dev->add_option("--topic", topics, "Create this topic up front (repeatable)")->type_name("TOPIC");
  dev->add_option("--partitions", partitions, "Partitions of --topic topics")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  AddCommonFlags(dev, &common);

  // demo
  DemoOptions demo_options;
  CLI::App* demo = app.add_subcommand(
      "demo",
      "The dual-write problem, live: an orders service commits orders with their events while\n"
      "the relay is SIGKILLed at random; beside it the naive way (write the DB, publish\n"
      "directly) under the same crashes. Prints lost, ghost and duplicate events of each.\n"
      "Exits non-zero if the outbox side loses or ghosts anything.");
  demo->add_option("--orders", demo_options.orders, "Order transactions per strategy")
      ->type_name("N")
      ->capture_default_str();
  demo->add_option("--duration", demo_options.duration, "Spread the orders over this long")
      ->type_name("DURATION")
      ->capture_default_str();
  demo->add_option("--kill-every", demo_options.kill_every,
                   "SIGKILL interval range for the relay and the apps")
      ->type_name("LOW..HIGH")
      ->capture_default_str();
  demo->add_option("--workdir", demo_options.workdir, "Keep the databases and logs here")
      ->type_name("DIR");
  demo->add_option("--seed", demo_options.seed, "Random seed (0: random)")->type_name("N");
  AddCommonFlags(demo, &common);

  DemoAppOptions app_options;
  CLI::App* demo_app = app.add_subcommand(
      "demo-app",
      "The demo's orders service: commits orders (tables orders, order_log) with their\n"
      "OrderCreated/OrderUpdated events until order_log holds --orders rows, ~10% rolled back.\n"
      "--strategy outbox writes the events to the outbox of --db (run migrate first); naive\n"
      "sends them to --bootstrap/--topic directly. Used by examples/inventory.");
  demo_app->add_option("--strategy", app_options.strategy, "outbox or naive")
      ->type_name("NAME")
      ->required();
  demo_app->add_option("--db", app_options.db, "SQLite file of the service")
      ->type_name("PATH")
      ->required();
  demo_app->add_option("--bootstrap", app_options.bootstrap, "naive: Kafka bootstrap")
      ->type_name("HOST:PORT");
  demo_app->add_option("--topic", app_options.topic, "naive: topic")->type_name("TOPIC");
  demo_app->add_option("--orders", app_options.orders, "Stop once order_log holds this many")
      ->type_name("N")
      ->capture_default_str();
  demo_app->add_option("--rate", app_options.rate, "Transactions per second")
      ->type_name("N")
      ->capture_default_str();
  demo_app->add_option("--seed", app_options.seed, "Random seed")->type_name("N");

  // Listed among the commands; `courier help [COMMAND]` is `courier [COMMAND] --help`.
  app.add_subcommand("help", "Show this help, or a command's: courier help COMMAND");

  std::vector<std::string> args(argv, argv + argc);
  if (args.size() >= 2 && args[1] == "help") {
    if (args.size() > 3) {
      std::fprintf(stderr, "courier: error: help takes one command (courier help COMMAND)\n");
      return kExitUsage;
    }
    if (args.size() == 3) {
      try {
        (void)app.get_subcommand(args[2]);
      } catch (const CLI::OptionNotFound&) {
        std::fprintf(stderr,
                     "courier: error: unknown command '%s'; courier help lists the commands\n",
                     log::Scrub(args[2]).c_str());
        return kExitUsage;
      }
    }
    args.erase(args.begin() + 1);
    args.push_back("--help");
  }
  HideSecretArguments(argc, argv);
  auto expanded = ExpandConfig(app, args);
  if (!expanded.ok()) return Fail(expanded.status());
  // The config file's URLs too (their secrets come from ${VARS}).
  for (const std::string& a : *expanded) log::AddSecrets(UrlSecrets(a));
  std::vector<const char*> cargs;
  for (const std::string& a : *expanded) cargs.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(cargs.size()), const_cast<char**>(cargs.data()));
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(
        stderr, "courier: error: %s (see courier %s--help)\n", log::Scrub(e.what()).c_str(),
        app.get_subcommands().empty() ? "" : (app.get_subcommands()[0]->get_name() + " ").c_str());
    return kExitUsage;
  }
  Status st = ApplyCommonFlags(common);
  if (!st.ok()) return Fail(st);
  InstallSignalHandlers();

  if (*relay) return RunRelay(rf);
  if (*migrate) return RunMigrate(source, tables, migrate_mode, migrate_cdc);
  if (*status) return RunStatus(source, tables, status_json);
  if (*tail) return RunTail(tf);
  if (*dead) return RunDeadLetters(dlo);
  if (*config) return CheckConfig(app, relay, rf, config_file);
  if (*consume) return RunConsume(cf, parked->parsed());
  if (*dev) return RunDevBroker(brokers, port, bootstrap_file, topics, partitions);
  if (*demo) return RunDemo(demo_options, g_stop);
  if (*demo_app) return RunDemoApp(app_options);
  return kExitUsage;
}

}  // namespace courier::cli

int main(int argc, char** argv) { return courier::cli::Main(argc, argv); }
