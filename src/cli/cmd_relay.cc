// `courier relay`: publish committed outbox events to the sinks, serving /metrics,
// /status.json, a status page, /healthz and /readyz beside it.
#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/relay_config.h"
#include "core/http_endpoint.h"
#include "core/log.h"
#include "core/url.h"
#include "courier/relay.h"
#include "relay/metrics.h"
#include "relay/status_page.h"
#include "relay/status_report.h"
#include "stores/postgres_lease.h"

namespace courier::cli {
namespace {

// /metrics (Prometheus text), /status.json (the same series as JSON, with the state and the
// lease) and / or /status (the page that shows them), /healthz (the process answers), /readyz
// (CheckReadiness: 200 while active or standing by, 503 while retrying a failure or while the
// sink does not ack).
HttpResponse ServeRelay(const std::string& path, const Relay& relay, const RelayFlags& f) {
  const RelayOptions& o = f.options;
  if (path == "/" || path == "/status") {
    return {200, "text/html; charset=utf-8", StatusPageHtml()};
  }
  if (path == "/metrics" || path == "/status.json") {
    // One snapshot, rendered either way: both carry the same numbers.
    const RelayStats stats = relay.stats();
    auto status = ReadOutboxStatus(o.source_url, {o.outbox_table, o.dead_letter_table});
    const OutboxStatus* read = status.ok() ? &*status : nullptr;
    const std::vector<MetricFamily> families = CollectMetrics(stats, read);
    if (path == "/metrics") {
      return {200, "text/plain; version=0.0.4; charset=utf-8",
              RenderPrometheus(families, "outbox=\"" + EscapeLabelValue(o.outbox_table) + "\"")};
    }
    return {200, "application/json",
            RelayStatusJson(families, stats, read, o.outbox_table, LeaseHolderName())};
  }
  if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
  if (path == "/readyz") {
    std::string sinks = RedactUrl(o.sink_url);
    for (const std::string& extra : o.extra_sink_urls) sinks += ", " + RedactUrl(extra);
    Readiness r = CheckReadiness(relay.stats(), std::chrono::steady_clock::now(),
                                 f.ready_ack_timeout_ms, sinks);
    // The body may quote a sink's or database's error.
    return {r.http_status, "text/plain; charset=utf-8", log::Scrub(std::move(r.body))};
  }
  return {404, "text/plain; charset=utf-8",
          "try / (the status page), /status.json, /metrics, /healthz or /readyz\n"};
}

}  // namespace

CLI::App* AddRelayCommand(CLI::App& app, RelayFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
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
      "           = the newest payload, or a captured table's row; an older event never\n"
      "           overwrites a newer one)\n"
      "         nats://host:port[,host:port]/SUBJECT (NATS JetStream, Nats-Msg-Id = event_id)\n"
      "         amqp://user:pass@host:port/VHOST/EXCHANGE[?routing_key=T] (RabbitMQ: publisher\n"
      "           confirms, persistent, mandatory; message_id = event_id; VHOST / is %2F)\n"
      "         amqps:// and nats+tls:// connect with TLS: ?cacert=CA.pem (default: the\n"
      "           system's CAs), &cert=CLIENT.pem&key=CLIENT.key, verify=false (tests only)\n"
      "         http(s)://host:port/PATH (webhook: a POST per event, Idempotency-Key, 2xx acks)\n"
      "         file:///path/events.jsonl (one JSON line per event, fsynced before ack)\n"
      "         groonga://host:port/PREFIX (search index of captured tables: a document per\n"
      "           row, never an older version; docs/table-cdc.md)\n"
      "Exit codes: 0 done or stopped by SIGTERM/SIGINT; 1 failure; 2 bad input.");
  AddSourceOption(cmd, &f->options.source_url);
  cmd->add_option("--sink", f->sinks,
                  "Destination URL; repeat it to fan out (an event is done once every sink "
                  "acked it)")
      ->type_name("URL")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  AddTableOptions(cmd, &f->options.outbox_table, &f->options.dead_letter_table, "Tables");
  AddEventStoreOption(cmd, &f->event_store, "Tables");
  cmd->add_option("--dead-letter-policy", f->dead_letter_policy,
                  "park: an event the sink rejects for good holds back the later events of its "
                  "aggregate until `courier dead-letters retry|drop`; skip: they go on without "
                  "it")
      ->type_name("park|skip")
      ->capture_default_str();
  cmd->add_option("--mode", f->mode,
                  "poll: query the outbox table; cdc: stream committed inserts from "
                  "PostgreSQL's write-ahead log (logical replication, wal_level=logical)")
      ->type_name("poll|cdc")
      ->capture_default_str();
  const std::string kCdc = "Change data capture (--mode cdc)";
  cmd->add_option("--outbox-format", f->outbox_format,
                  "courier: courier's outbox table; debezium: Debezium's outbox table (id, "
                  "aggregatetype, aggregateid, type, payload) read as its Outbox Event Router "
                  "does: key aggregateid, header id, default topic outbox.event.{aggregatetype}")
      ->type_name("courier|debezium")
      ->capture_default_str()
      ->group(kCdc);
  cmd->add_option("--slot", f->options.slot,
                  "Replication slot, created if missing (default courier_<db>_<table>_<hash>)")
      ->type_name("NAME")
      ->group(kCdc);
  cmd->add_option("--publication", f->options.publication,
                  "Publication of the outbox, created if missing (default: the table's name)")
      ->type_name("NAME")
      ->group(kCdc);
  AddCaptureOption(cmd, &f->options.capture, kCdc);
  cmd->add_option("--format", f->format,
                  "Shape of captured tables' events: courier, or debezium (Debezium's change "
                  "event envelope)")
      ->type_name("courier|debezium")
      ->capture_default_str()
      ->group(kCdc);
  const std::string kHa = "High availability and scale-out";
  cmd->add_option("--lease", f->lease,
                  "PostgreSQL: the active relay's lease; a standby (the same command run "
                  "elsewhere) takes over at most this long after it died or lost its session")
      ->type_name("DURATION")
      ->capture_default_str()
      ->group(kHa);
  cmd->add_option("--shard", f->shard,
                  "Polling PostgreSQL: publish only shard K of N (aggregates by hash of "
                  "aggregate_id); run one relay (plus standbys) per shard")
      ->type_name("K/N")
      ->group(kHa);
  const std::string kObs = "Observability";
  cmd->add_option("--metrics-port", f->metrics_port,
                  "Serve /metrics (Prometheus), /healthz, /readyz, a status page at / (live "
                  "throughput, backlog, lag, dead letters, lease) and its /status.json (the "
                  "same numbers as /metrics) on this port (0: off)")
      ->type_name("PORT")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535))
      ->group(kObs);
  cmd->add_option("--metrics-host", f->metrics_host,
                  "IPv4 address or host name (localhost) to serve them on; 0.0.0.0 exposes "
                  "them to the network")
      ->type_name("HOST")
      ->capture_default_str()
      ->group(kObs);
  cmd->add_option("--ready-ack-timeout", f->ready_ack_timeout,
                  "/readyz answers 503 once events have waited this long for the sink's ack")
      ->type_name("DURATION")
      ->capture_default_str()
      ->group(kObs);
  cmd->add_option("--batch-size", f->batch_size, "Events fetched and published per batch")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--checkpoints-in-flight", f->checkpoints_in_flight,
                  "PostgreSQL: batches whose checkpoint may still be committing while "
                  "the next ones are fetched and published (0: one batch at a time; refused "
                  "with a SQLite source, which checkpoints each batch before the next)")
      ->type_name("N")
      ->default_str(std::to_string(f->options.checkpoints_in_flight));
  cmd->add_option("--poll-interval", f->poll_interval, "Wait between polls when idle")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_flag("--once", f->options.once,
                "Drain what is pending and exit (non-zero with the reason on failure)");
  cmd->add_flag("--retain", f->options.retain,
                "Stamp published_at instead of deleting; rows are deleted after --retention");
  cmd->add_option("--retention", f->retention, "Retain mode: keep published rows this long")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--cleanup-interval", f->cleanup_interval, "Retain mode: cleaner period")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--delivery-timeout", f->delivery_timeout,
                  "Give up waiting for one event's ack after this long and retry it later; "
                  "0 waits forever (default 0, or " +
                      FormatDuration(kOnceDeliveryTimeout) + " with --once)")
      ->type_name("DURATION");
  cmd->add_option("--shutdown-timeout", f->shutdown_timeout,
                  "On SIGTERM, wait this long for in-flight acks, then as long for their "
                  "checkpoint (PostgreSQL: one still waiting, on a row lock, is cancelled: "
                  "its events go "
                  "out again with the next relay)")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--backoff-initial", f->backoff_initial,
                  "First wait after a failure; doubles (with jitter) up to --backoff-max")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--backoff-max", f->backoff_max, "Longest wait between retries")
      ->type_name("DURATION")
      ->capture_default_str();
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunRelay(RelayFlags& flags) {
  // The checks `courier config check` makes (cli/relay_config.h).
  const std::vector<FlagError> errors = CheckRelayFlags(flags);
  if (!errors.empty()) return Fail(errors.front().status);
  flags.options.fault_points = FaultPointsFromEnvironment();
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
    log::Info("serving the status page, /status.json, /metrics, /healthz and /readyz",
              {{"address", flags.metrics_host + ":" + std::to_string(endpoint->port())}});
  }
  SetRunningRelay(relay->get());
  if (StopRequest().requested()) (*relay)->RequestStop();
  Status st = (*relay)->Run();
  SetRunningRelay(nullptr);
  if (!st.ok()) return Fail(st);
  return 0;
}

}  // namespace courier::cli
