#include "cli/relay_config.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>

#include "brokers/sink.h"
#include "cli/commands.h"
#include "cli/config.h"
#include "core/encoding.h"
#include "core/http_endpoint.h"
#include "core/url.h"
#include "relay/relay_internal.h"
#include "sources/cdc/capture_setup.h"
#include "sources/source.h"

namespace courier::cli {

Result<bool> ParseMode(const std::string& mode) {
  if (mode == "poll") return false;
  if (mode == "cdc") return true;
  return InvalidArgumentError("--mode must be poll or cdc, not '" + mode + "'");
}

Status ParseFlagDuration(const char* flag, const std::string& text, Duration* out) {
  auto d = ParseDuration(text);
  if (!d.ok()) return InvalidArgumentError(std::string(flag) + ": " + d.status().message());
  *out = *d;
  return Status::Ok();
}

namespace {

// K/N with two whole numbers that fit an int; the range (0 <= K < N) is Relay::Create's.
Status ParseShard(const std::string& text, RelayOptions* o) {
  const size_t slash = text.find('/');
  const std::optional<int64_t> k = slash == std::string::npos
                                       ? std::nullopt
                                       : ParseInt64(std::string_view(text).substr(0, slash));
  const std::optional<int64_t> n = slash == std::string::npos
                                       ? std::nullopt
                                       : ParseInt64(std::string_view(text).substr(slash + 1));
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (!k || !n || *k < 0 || *k > kMax || *n < 1 || *n > kMax) {
    return InvalidArgumentError("--shard must be K/N (e.g. 0/4), not '" + text + "'");
  }
  o->shard_index = static_cast<int>(*k);
  o->shard_count = static_cast<int>(*n);
  return Status::Ok();
}

}  // namespace

Status ParseOutboxFormat(const std::string& text, bool* debezium) {
  if (text != "courier" && text != "debezium") {
    return InvalidArgumentError("--outbox-format must be courier or debezium, not '" + text + "'");
  }
  *debezium = text == "debezium";
  return Status::Ok();
}

std::string WithDebeziumRoute(const std::string& sink_url) {
  auto url = ParseUrl(sink_url);
  if (!url.ok() || !url->path.empty()) return sink_url;
  static const std::set<std::string> kRouted = {"kafka", "redis", "rediss", "nats", "nats+tls"};
  if (kRouted.count(url->scheme) == 0) return sink_url;
  std::string out = sink_url;
  const size_t start = out.find("://");
  if (start == std::string::npos) return sink_url;
  const size_t end = out.find_first_of("/?#", start + 3);
  if (end == std::string::npos) return out + "/" + kDebeziumOutboxRoute;
  if (out[end] == '/') return out.insert(end + 1, kDebeziumOutboxRoute);
  return out.insert(end, std::string("/") + kDebeziumOutboxRoute);
}

std::vector<FlagError> CheckRelayFlags(RelayFlags& f) {
  std::vector<FlagError> errors;
  auto check = [&](const char* key, Status st) {
    if (!st.ok()) errors.push_back({key, 0, std::move(st)});
  };
  RelayOptions& o = f.options;
  bool debezium = false;
  check("outbox-format", ParseOutboxFormat(f.outbox_format, &debezium));
  if (debezium) {
    o.outbox_format = RelayOptions::OutboxFormat::kDebezium;
    // Debezium's Outbox Event Router routes to outbox.event.<aggregatetype>: so does a sink
    // URL that names no topic (stream, subject).
    for (std::string& sink : f.sinks) sink = WithDebeziumRoute(sink);
  }
  if (f.event_store) {
    if (debezium) {
      check("event-store",
            InvalidArgumentError("--event-store publishes an event store; --outbox-format "
                                 "debezium is for an outbox"));
    }
    o.outbox_format = RelayOptions::OutboxFormat::kEventStore;
    if (o.outbox_table == RelayOptions{}.outbox_table) o.outbox_table = "courier_events";
  }
  if (!f.sinks.empty()) {
    o.sink_url = f.sinks.front();
    o.extra_sink_urls.assign(f.sinks.begin() + 1, f.sinks.end());
  }
  auto cdc = ParseMode(f.mode);
  check("mode", cdc.status());
  if (cdc.ok()) o.mode = *cdc ? RelayOptions::Mode::kCdc : RelayOptions::Mode::kPoll;
  check("poll-interval", ParseFlagDuration("--poll-interval", f.poll_interval, &o.poll_interval));
  check("retention", ParseFlagDuration("--retention", f.retention, &o.retention));
  check("cleanup-interval",
        ParseFlagDuration("--cleanup-interval", f.cleanup_interval, &o.cleanup_interval));
  check("shutdown-timeout",
        ParseFlagDuration("--shutdown-timeout", f.shutdown_timeout, &o.shutdown_timeout));
  check("ready-ack-timeout",
        ParseFlagDuration("--ready-ack-timeout", f.ready_ack_timeout, &f.ready_ack_timeout_ms));
  check("backoff-initial",
        ParseFlagDuration("--backoff-initial", f.backoff_initial, &o.backoff_initial));
  check("backoff-max", ParseFlagDuration("--backoff-max", f.backoff_max, &o.backoff_max));
  check("lease", ParseFlagDuration("--lease", f.lease, &o.lease));
  if (!f.shard.empty()) check("shard", ParseShard(f.shard, &o));
  if (f.format == "courier" || f.format == "debezium") {
    o.change_format = f.format == "debezium" ? RelayOptions::ChangeFormat::kDebezium
                                             : RelayOptions::ChangeFormat::kCourier;
  } else {
    check("format",
          InvalidArgumentError("--format must be courier or debezium, not '" + f.format + "'"));
  }
  for (size_t i = 0; i < o.capture.size(); ++i) {
    Status st = cdc::ParseCaptureList({o.capture[i]}).status();
    if (!st.ok()) errors.push_back({"capture", i, std::move(st)});
  }
  if (f.dead_letter_policy == "park") {
    o.dead_letter_policy = RelayOptions::DeadLetterPolicy::kPark;
  } else if (f.dead_letter_policy == "skip") {
    o.dead_letter_policy = RelayOptions::DeadLetterPolicy::kSkip;
  } else {
    check("dead-letter-policy",
          InvalidArgumentError("--dead-letter-policy must be park or skip, not '" +
                               f.dead_letter_policy + "'"));
  }
  // --once must end: by default an unacked event fails instead of waiting forever.
  const std::string delivery = f.delivery_timeout.empty()
                                   ? FormatDuration(o.once ? kOnceDeliveryTimeout : Duration(0))
                                   : f.delivery_timeout;
  check("delivery-timeout", ParseFlagDuration("--delivery-timeout", delivery, &o.delivery_timeout));
  // A whole number: std::stoll read "1e3" as 1 and "500 events" as 500.
  const std::optional<int64_t> batch = ParseInt64(f.batch_size);
  if (batch && *batch >= 1 && *batch <= 1000000) {
    o.batch_size = static_cast<size_t>(*batch);
  } else {
    check("batch-size", InvalidArgumentError("--batch-size must be a whole number from 1 to "
                                             "1000000, not '" +
                                             f.batch_size + "'"));
  }
  const std::optional<int64_t> in_flight = ParseInt64(f.checkpoints_in_flight);
  if (f.checkpoints_in_flight.empty()) {
    // Not given: the default.
  } else if (!in_flight || *in_flight < 0 || *in_flight > 64) {
    check("checkpoints-in-flight",
          InvalidArgumentError("--checkpoints-in-flight must be a whole number from 0 to 64, "
                               "not '" +
                               f.checkpoints_in_flight + "'"));
  } else if (auto loc = ParseSourceUrl(o.source_url);
             loc.ok() && loc->kind == SourceLocation::Kind::kSqlite) {
    // As the other PostgreSQL-only settings (--mode cdc, --shard): refused rather than
    // silently without effect.
    check("checkpoints-in-flight",
          InvalidArgumentError("--checkpoints-in-flight applies to PostgreSQL (its checkpoints "
                               "commit on a connection of their own); a SQLite outbox checkpoints "
                               "each batch before the next: leave it out"));
  } else {
    o.checkpoints_in_flight = static_cast<size_t>(*in_flight);
  }
  // The address HttpEndpoint::Start will bind (a name such as localhost is resolved).
  if (f.metrics_port > 0) {
    Status st = CheckListenAddress(f.metrics_host, f.metrics_port);
    if (!st.ok()) check("metrics-host", InvalidArgumentError("--metrics-host: " + st.message()));
  }
  // What each sink's Open would refuse before connecting, with the options the relay gives it.
  for (size_t i = 0; i < f.sinks.size(); ++i) {
    Status st = CheckSink(SinkOptions{.url = f.sinks[i],
                                      .delivery_timeout = o.delivery_timeout,
                                      .shutdown_timeout = o.shutdown_timeout,
                                      .transactional_id = OutboxTransactionalId(o, i)});
    if (!st.ok()) errors.push_back({"sink", i, std::move(st)});
  }
  return errors;
}

ConfigKey ConfigKeyOf(const CLI::App& cmd, const std::string& key) {
  const CLI::Option* option = key == "config" ? nullptr : cmd.get_option_no_throw("--" + key);
  if (option == nullptr) return {};
  if (option->get_expected_max() == 0) return {ConfigKey::Kind::kFlag, ""};
  // get_type_name() appends the validators' descriptions ("PORT:INT in [0 - 65535]").
  std::string type_name = option->get_type_name();
  type_name = type_name.substr(0, type_name.find(':'));
  // The commands name whole numbers N (PORT for ports) in --help.
  const bool whole = type_name == "N" || type_name == "PORT";
  return {whole ? ConfigKey::Kind::kWholeNumber : ConfigKey::Kind::kValue, std::move(type_name)};
}

Result<std::vector<std::string>> ExpandConfig(CLI::App& app, std::vector<std::string> args) {
  if (args.size() < 2) return args;
  CLI::App* cmd = nullptr;
  try {
    cmd = app.get_subcommand(args[1]);
  } catch (const CLI::OptionNotFound&) {
    return args;
  }
  std::string file;
  for (size_t i = 2; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) file = args[i + 1];
    if (args[i].rfind("--config=", 0) == 0) file = args[i].substr(9);
  }
  if (file.empty()) return args;
  COURIER_ASSIGN_OR_RETURN(std::string raw, ReadConfigFile(file));
  COURIER_ASSIGN_OR_RETURN(std::string text, InterpolateEnv(raw, file));
  COURIER_ASSIGN_OR_RETURN(
      std::vector<ConfigArg> from_file,
      ConfigToArgs(text, file, [cmd](const std::string& key) { return ConfigKeyOf(*cmd, key); }));
  // Flags win: a key given on the command line drops the file's values for it (so a repeated
  // flag such as --sink replaces the file's list instead of adding to it).
  auto name_of = [](const std::string& arg) { return arg.substr(0, arg.find('=')); };
  std::set<std::string> given;
  for (size_t i = 2; i < args.size(); ++i) {
    if (args[i].rfind("--", 0) == 0) given.insert(name_of(args[i]));
  }
  std::vector<std::string> file_args;
  for (const ConfigArg& a : from_file) {
    if (given.count("--" + a.key) == 0) file_args.push_back(a.arg);
  }
  args.insert(args.begin() + 2, file_args.begin(), file_args.end());
  return args;
}

namespace {

// Parses `args` as `courier relay ARGS`; the parser's message when it refuses them.
std::optional<std::string> ParseRelayArgs(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"courier", "relay"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<const char*> cargs;
  for (const std::string& a : argv) cargs.push_back(a.c_str());
  app.clear();
  try {
    app.parse(static_cast<int>(cargs.size()), const_cast<char**>(cargs.data()));
  } catch (const CLI::ParseError& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

}  // namespace

int CheckConfig(CLI::App& app, CLI::App* relay, RelayFlags& rf, const std::string& file) {
  auto raw = ReadConfigFile(file);
  if (!raw.ok()) return Fail(raw.status());
  std::vector<std::string> errors;  // each "file[:line]: what is wrong"
  // Collects every error (and goes on past them), so the result is always there.
  const std::string text = *InterpolateEnv(*raw, file, &errors);
  auto parsed = ConfigToArgs(
      text, file, [relay](const std::string& key) { return ConfigKeyOf(*relay, key); }, &errors);
  if (!parsed.ok()) {
    // A syntax error: no key is known, so nothing more can be checked.
    for (const std::string& e : errors) Fail(InvalidArgumentError(e));
    return Fail(parsed.status());
  }
  auto at = [&](int line) { return file + (line > 0 ? ":" + std::to_string(line) : "") + ": "; };
  auto line_in = [&](const std::string& error) {
    return error.compare(0, file.size() + 1, file + ":") == 0
               ? std::atoi(error.c_str() + file.size() + 1)
               : 0;
  };
  // A value with an unset variable cannot be checked until it is set: only that is reported.
  std::set<int> unset_lines;
  for (const std::string& e : errors) unset_lines.insert(line_in(e));
  std::set<std::string> keys;
  std::vector<ConfigArg> args;
  for (const ConfigArg& a : *parsed) {
    keys.insert(a.key);
    if (unset_lines.count(a.line) == 0) args.push_back(a);
  }
  // Required keys are checked here, so that the parses below look at each value on its own.
  for (CLI::Option* option : relay->get_options()) {
    if (!option->get_required() || option->get_lnames().empty()) continue;
    const std::string key = option->get_lnames().front();
    if (keys.count(key) == 0) {
      errors.push_back(at(0) + "--" + key + " is required (add " + key + " = \"...\")");
    }
    option->required(false);
  }
  // Each value alone through the command-line parser (types, ranges), then the good ones
  // together, which sets the flags.
  std::vector<std::string> good;
  std::vector<const ConfigArg*> good_args;
  for (const ConfigArg& a : args) {
    if (auto refused = ParseRelayArgs(app, {a.arg})) {
      errors.push_back(at(a.line) + *refused);
    } else {
      good.push_back(a.arg);
      good_args.push_back(&a);
    }
  }
  if (auto refused = ParseRelayArgs(app, good)) errors.push_back(at(0) + *refused);
  // The line of the index-th value of `key`.
  auto line_of = [&](const std::string& key, size_t index) {
    for (const ConfigArg* a : good_args) {
      if (a->key == key && index-- == 0) return a->line;
    }
    return 0;
  };
  std::set<std::string> reported;
  for (const FlagError& e : CheckRelayFlags(rf)) {
    reported.insert(e.status.message());
    errors.push_back(at(line_of(e.key, e.index)) + e.status.message());
  }
  std::set<std::string> checked;
  for (const ConfigArg* a : good_args) checked.insert(a->key);
  if (checked.count("source") > 0 && checked.count("sink") > 0) {
    Status st = Relay::Create(rf.options).status();
    if (!st.ok() && reported.count(st.message()) == 0) {
      // Its message names a flag or quotes a value: point at that key's line.
      int line = 0;
      for (const ConfigArg* a : good_args) {
        const std::string value = a->arg.substr(a->arg.find('=') + 1);
        if (st.message().find("--" + a->key) != std::string::npos ||
            (value.size() >= 3 && (st.message().find(value) != std::string::npos ||
                                   st.message().find(RedactUrl(value)) != std::string::npos))) {
          line = a->line;
          break;
        }
      }
      errors.push_back(at(line) + st.message());
    }
  }
  if (!errors.empty()) {
    // In the file's order; errors of the whole file (no line) first.
    std::stable_sort(errors.begin(), errors.end(), [&](const std::string& a, const std::string& b) {
      return line_in(a) < line_in(b);
    });
    int code = 0;
    for (const std::string& e : errors) code = std::max(code, Fail(InvalidArgumentError(e)));
    return code;
  }
  std::string sinks;
  for (const std::string& sink : rf.sinks) sinks += (sinks.empty() ? "" : ", ") + RedactUrl(sink);
  std::printf("%s: ok: relay from %s to %s, mode %s\n", file.c_str(),
              RedactUrl(rf.options.source_url).c_str(), sinks.c_str(), rf.mode.c_str());
  return 0;
}

}  // namespace courier::cli
