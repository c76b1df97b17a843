// The relay's flags and the checks on them that `courier relay` and `courier config check` share:
// both call CheckRelayFlags and then Relay::Create, so a setting the relay refuses at start-up
// is refused by config check too, with the same message.
//
// Thread-safety: none; used by main() before anything runs.
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <string>
#include <vector>

#include "cli/config.h"
#include "core/clock.h"
#include "courier/relay.h"
#include "courier/status.h"

namespace courier::cli {

// The relay's flags as given (strings: their parsers below name the flag in every error).
// Their defaults are RelayOptions' own, shown in --help: each is defined once, in relay.h.
struct RelayFlags {
  RelayOptions options;
  std::vector<std::string> sinks;
  std::string mode = options.mode == RelayOptions::Mode::kCdc ? "cdc" : "poll";
  std::string outbox_format = "courier";
  bool event_store = false;  // --event-store: outbox_table names an event store
  std::string batch_size = std::to_string(options.batch_size);
  // Empty when not given: options' default, which a SQLite outbox ignores; given, it is
  // refused there (CheckRelayFlags).
  std::string checkpoints_in_flight;
  std::string poll_interval = FormatDuration(options.poll_interval);
  std::string retention = FormatDuration(options.retention);
  std::string cleanup_interval = FormatDuration(options.cleanup_interval);
  std::string delivery_timeout;  // empty: 0, or 30s with --once (CheckRelayFlags)
  std::string shutdown_timeout = FormatDuration(options.shutdown_timeout);
  std::string backoff_initial = FormatDuration(options.backoff_initial);
  std::string backoff_max = FormatDuration(options.backoff_max);
  std::string dead_letter_policy =
      options.dead_letter_policy == RelayOptions::DeadLetterPolicy::kSkip ? "skip" : "park";
  std::string lease = FormatDuration(options.lease);
  std::string shard;
  std::string format =
      options.change_format == RelayOptions::ChangeFormat::kDebezium ? "debezium" : "courier";
  int metrics_port = 0;
  std::string metrics_host = "127.0.0.1";
  // /readyz (CheckReadiness): a setting of the command's HTTP endpoint, not of the relay.
  Duration ready_ack_timeout_ms{30000};
  std::string ready_ack_timeout = FormatDuration(ready_ack_timeout_ms);
};

// --delivery-timeout when not given: with --once an unacked event fails after this long (the
// run must end); without it, 0 (it waits for its ack as long as the broker is away).
inline constexpr Duration kOnceDeliveryTimeout{30000};

// poll → false, cdc → true.
Result<bool> ParseMode(const std::string& mode);

// --outbox-format: courier → false, debezium → true.
Status ParseOutboxFormat(const std::string& text, bool* debezium);

// Debezium's Outbox Event Router's topic: outbox.event.<aggregatetype>.
inline constexpr const char* kDebeziumOutboxRoute = "outbox.event.{aggregate_type}";
// `sink_url` routed there when it names no topic, stream or subject (Kafka, Redis, NATS);
// otherwise unchanged.
std::string WithDebeziumRoute(const std::string& sink_url);

// A duration flag's value; the error names the flag.
Status ParseFlagDuration(const char* flag, const std::string& text, Duration* out);

// One refused value: the key (flag name without "--") and, for a repeated flag (--sink), which
// of its values.
struct FlagError {
  std::string key;
  size_t index = 0;
  Status status;
};

// Fills flags.options from the flags and checks everything that needs no I/O beyond name
// resolution: each value (durations, numbers, policy, shard), each sink's URL and parameters
// (CheckSink: what its Open would refuse) and the metrics address. Every error, not just the
// first; empty when all are good. Relay::Create then checks the rest (lease, shard range,
// source URL, table names).
std::vector<FlagError> CheckRelayFlags(RelayFlags& flags);

// What the config file's `key` takes, as `cmd`'s flag of that name does (ConfigToArgs).
ConfigKey ConfigKeyOf(const CLI::App& cmd, const std::string& key);

// Prepends the settings of the --config file (if any) to the arguments, so that flags given on
// the command line (parsed later, last one wins) override the file. The first error.
Result<std::vector<std::string>> ExpandConfig(CLI::App& app, std::vector<std::string> args);

// `courier config check FILE`: everything the relay would check before connecting, every error
// of the file on its own line (`file:line: what is wrong`). Returns the exit code.
int CheckConfig(CLI::App& app, CLI::App* relay, RelayFlags& flags, const std::string& file);

}  // namespace courier::cli
