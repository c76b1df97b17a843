// courier: one binary for the relay and its tools. See `courier --help`. Each command is in
// its own file (cli/commands.h); the table here lists them for help, adds them to the parser
// and runs the one parsed.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/relay_config.h"
#include "core/log.h"
#include "core/url.h"
#include "courier/relay.h"

namespace courier::cli {

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

}  // namespace

StopSignal& StopRequest() { return g_stop; }

void SetRunningRelay(Relay* relay) { g_relay.store(relay); }

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

void AddSourceOption(CLI::App* cmd, std::string* url) {
  cmd->add_option("--source", *url, "Database URL holding the outbox")
      ->type_name("URL")
      ->required();
}

void AddTableOptions(CLI::App* cmd, std::string* outbox, std::string* dead_letter,
                     const std::string& group) {
  CLI::Option* table = cmd->add_option("--table", *outbox, "Outbox table (may be schema.table)")
                           ->type_name("NAME")
                           ->capture_default_str();
  CLI::Option* dead = cmd->add_option("--dead-letter-table", *dead_letter,
                                      "Where events the sink rejects for good are parked")
                          ->type_name("NAME")
                          ->capture_default_str();
  if (!group.empty()) {
    table->group(group);
    dead->group(group);
  }
}

void AddCaptureOption(CLI::App* cmd, std::vector<std::string>* capture, const std::string& group) {
  CLI::Option* o =
      cmd->add_option("--capture", *capture,
                      "Tables whose inserts, updates, deletes and truncates are published too "
                      "(change data capture): 'public.products, public.orders (id, status) "
                      "WHERE (status <> ''draft'')'; repeatable (docs/table-cdc.md)")
          ->type_name("TABLES")
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  if (!group.empty()) o->group(group);
}

void AddEventStoreOption(CLI::App* cmd, bool* event_store, const std::string& group) {
  CLI::Option* o = cmd->add_flag("--event-store", *event_store,
                                 "The table is an event store (docs/event-sourcing.md): --table "
                                 "names it, courier_events unless given");
  if (!group.empty()) o->group(group);
}

void UseEventStore(bool event_store, TableNames* tables) {
  if (!event_store) return;
  const TableNames outbox_defaults;
  TableNames t = EventStoreTables(tables->outbox == outbox_defaults.outbox ? "courier_events"
                                                                           : tables->outbox);
  t.dead_letter = tables->dead_letter;
  t.inbox = tables->inbox;
  *tables = t;
}

namespace {

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

// Binds a command's Add...Command and Run... to flags of its own, kept by the run function.
template <typename Flags, typename Run>
std::function<int()> Bind(CommandContext& ctx, CLI::App* (*add)(CLI::App&, Flags*, CommonFlags*),
                          Run run) {
  auto flags = std::make_shared<Flags>();
  add(ctx.app, flags.get(), &ctx.common);
  return [flags, run] { return run(*flags); };
}

constexpr const char* kHelpSummary = "Show this help, or a command's: courier help COMMAND";

// The commands, in the order `courier help` lists them.
const Command kCommands[] = {
    {"relay", "Publish committed outbox events to sinks, forever (or --once)",
     [](CommandContext& ctx) -> std::function<int()> {
       AddRelayCommand(ctx.app, &ctx.relay, &ctx.common);
       return [&ctx] { return RunRelay(ctx.relay); };
     }},
    {"migrate", "Create the outbox's tables (with --mode cdc, its publication and slot)",
     [](CommandContext& ctx) { return Bind(ctx, AddMigrateCommand, RunMigrate); }},
    {"backfill", "Publish captured tables' rows again, through the running relay",
     [](CommandContext& ctx) { return Bind(ctx, AddBackfillCommand, RunBackfill); }},
    {"status", "Backlog, oldest pending event, dead letters, leases and replication slots",
     [](CommandContext& ctx) { return Bind(ctx, AddStatusCommand, RunStatus); }},
    {"dead-letters", "List, retry or drop the events the sink rejected for good",
     [](CommandContext& ctx) { return Bind(ctx, AddDeadLettersCommand, RunDeadLetters); }},
    {"config", "check FILE: validate a relay config file without connecting",
     [](CommandContext& ctx) -> std::function<int()> {
       auto flags = std::make_shared<ConfigFlags>();
       AddConfigCommand(ctx.app, flags.get());
       // Checks the file as `courier relay --config FILE` would read it.
       return [&ctx, flags] {
         return CheckConfig(ctx.app, ctx.app.get_subcommand("relay"), ctx.relay, flags->file);
       };
     }},
    {"tail", "Print the events arriving at a sink, one JSON line each",
     [](CommandContext& ctx) { return Bind(ctx, AddTailCommand, RunTail); }},
    {"consume", "Deliver each event of a topic or stream once to a handler (and parked ones)",
     [](CommandContext& ctx) { return Bind(ctx, AddConsumeCommand, RunConsume); }},
    {"project", "Apply every event once, in order, to a projection (and wait for one)",
     [](CommandContext& ctx) { return Bind(ctx, AddProjectCommand, RunProject); }},
    {"audit", "Compare what the database published with what a sink holds; --repair",
     [](CommandContext& ctx) { return Bind(ctx, AddAuditCommand, RunAuditCommand); }},
    {"dev-broker", "Run the built-in Kafka-protocol broker for development",
     [](CommandContext& ctx) { return Bind(ctx, AddDevBrokerCommand, RunDevBroker); }},
    {"demo", "The dual-write problem, live: the outbox and the naive way under SIGKILLs",
     [](CommandContext& ctx) {
       return Bind(ctx, AddDemoCommand,
                   [](const DemoOptions& o) { return RunDemo(o, StopRequest()); });
     }},
    {"lab", "Every dual-write strategy under the same crashes, outage and failed commits",
     [](CommandContext& ctx) { return Bind(ctx, AddLabCommand, RunLabCommand); }},
    {"lab-service", "One strategy's orders service (run by the lab)",
     [](CommandContext& ctx) -> std::function<int()> {
       auto flags = std::make_shared<LabServiceFlags>();
       AddLabServiceCommand(ctx.app, flags.get());
       return [flags] { return RunLabService(*flags); };
     }},
    {"demo-app", "The demo's orders service (used by the demo and examples/inventory)",
     [](CommandContext& ctx) -> std::function<int()> {
       auto flags = std::make_shared<DemoAppOptions>();
       AddDemoAppCommand(ctx.app, flags.get());
       return [flags] { return RunDemoApp(*flags); };
     }},
    // `courier help [COMMAND]` is `courier [COMMAND] --help` (rewritten before parsing).
    {"help", kHelpSummary,
     [](CommandContext& ctx) -> std::function<int()> {
       ctx.app.add_subcommand("help", kHelpSummary);
       return [] { return kExitUsage; };
     }},
};

// Lists each command with its one-line summary from the table; `courier COMMAND --help` shows
// the command's whole description.
class SummaryFormatter : public CLI::Formatter {
 public:
  std::string make_subcommand(const CLI::App* sub) const override {
    if (sub->get_parent() != nullptr && sub->get_parent()->get_parent() == nullptr) {
      for (const Command& c : kCommands) {
        if (sub->get_name() != c.name) continue;
        std::stringstream out;
        CLI::detail::format_help(out, sub->get_display_name(true), c.summary, column_width_);
        return out.str();
      }
    }
    return CLI::Formatter::make_subcommand(sub);
  }
};

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

  app.formatter(std::make_shared<SummaryFormatter>());
  CommandContext ctx{app};
  std::vector<std::function<int()>> runs;
  for (const Command& c : kCommands) runs.push_back(c.setup(ctx));

  std::vector<std::string> args(argv, argv + argc);
  if (args.size() >= 2 && args[1] == "help") {
    if (args.size() > 3) {
      std::fprintf(stderr, "courier: error: help takes one command (courier help COMMAND)\n");
      return kExitUsage;
    }
    if (args.size() == 3 && std::none_of(std::begin(kCommands), std::end(kCommands),
                                         [&](const Command& c) { return args[2] == c.name; })) {
      std::fprintf(stderr,
                   "courier: error: unknown command '%s'; courier help lists the commands\n",
                   log::Scrub(args[2]).c_str());
      return kExitUsage;
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
  Status st = ApplyCommonFlags(ctx.common);
  if (!st.ok()) return Fail(st);
  InstallSignalHandlers();

  for (size_t i = 0; i < std::size(kCommands); ++i) {
    if (app.get_subcommand(kCommands[i].name)->parsed()) return runs[i]();
  }
  return kExitUsage;
}

}  // namespace courier::cli

int main(int argc, char** argv) { return courier::cli::Main(argc, argv); }
