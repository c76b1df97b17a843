// `courier consume` (each event once to a handler, through the inbox) and `courier consume
// parked` (cli/consume_parked.cc).
#include <CLI/CLI.hpp>
#include <chrono>
#include <string>
#include <tuple>

#include "cli/commands.h"
#include "cli/relay_config.h"
#include "inbox/consume.h"

namespace courier::cli {

CLI::App* AddConsumeCommand(CLI::App& app, ConsumeFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
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
  cmd->add_option("--from", f->options.from_url, "Topic or stream URL (required)")
      ->type_name("URL");
  cmd->add_option("--db", f->options.db_url, "Database holding the inbox (run migrate)")
      ->type_name("URL")
      ->required();
  cmd->add_option("--consumer", f->options.consumer, "Consumer name (inbox key, group)")
      ->type_name("NAME")
      ->required();
  cmd->add_option("--to", f->options.to_url, "Handler URL")->type_name("URL");
  cmd->add_option("--exec", f->options.exec, "Handler command")->type_name("COMMAND");
  cmd->add_option("--max-attempts", f->options.max_attempts,
                  "Park an event after N transient failures (0: retry until it passes)")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  cmd->add_option("--permanent-exit-codes", f->options.permanent_exit_codes,
                  "--exec exit codes that park the event at once (e.g. 3,65)")
      ->type_name("CODE,...")
      ->delimiter(',')
      ->check(CLI::Range(1, 255));
  cmd->add_option("--handler-timeout", f->handler_timeout, "Per call")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--backoff-initial", f->backoff_initial, "First retry delay")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--backoff-max", f->backoff_max, "Longest retry delay")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--claim-idle", f->claim_idle,
                  "How long a delivered event may stay unacknowledged before another instance "
                  "gets it: Redis takes over such entries (XAUTOCLAIM); NATS redelivers after "
                  "it (the consumer's AckWait); Kafka and RabbitMQ ignore it")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--inbox-retention", f->retention,
                  "Prune inbox entries older than this, every minute (0: keep)")
      ->type_name("DURATION")
      ->capture_default_str();
  AddCommonFlags(cmd, common);
  CLI::App* parked = cmd->add_subcommand(
      "parked",
      "The events the handler refused for good (courier_inbox_parked), of --consumer in --db:\n"
      "  list              show them, oldest first\n"
      "  retry ID...|--all deliver them to the handler (--to or --exec) once more, through the\n"
      "                    inbox; handled ones are removed, failing ones stay\n"
      "  drop ID...|--all  delete them for good");
  parked->fallthrough();  // --db, --consumer, --to, --exec... are consume's
  parked->add_option("action", f->parked.action, "list, retry or drop")
      ->type_name("ACTION")
      ->required()
      ->check(CLI::IsMember({"list", "retry", "drop"}));
  parked->add_option("ids", f->parked.ids, "Parked event ids (the ID column of list)")
      ->type_name("ID")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  parked->add_flag("--all", f->parked.all, "retry/drop: every parked event of the consumer");
  parked->add_option("--limit", f->parked.limit, "list: show at most N")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  f->parked_command = parked;
  return cmd;
}

int RunConsume(const ConsumeFlags& f) {
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
  if (f.parked_command->parsed()) return RunConsumeParked(o, f.parked);
  if (o.from_url.empty()) return Fail(InvalidArgumentError("consume needs --from URL"));
  o.fault_points = FaultPointsFromEnvironment();
  Status st = RunConsumer(o, StopRequest());
  if (!st.ok()) return Fail(st);
  return 0;
}

}  // namespace courier::cli
