// courier: one binary for the relay and its tools. See `courier --help`. Each command is in
// its own file (cli/commands.h); this one parses the command line and runs the command.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstring>
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

  RelayFlags rf;
  CLI::App* relay = AddRelayCommand(app, &rf, &common);
  MigrateFlags mf;
  CLI::App* migrate = AddMigrateCommand(app, &mf, &common);
  StatusFlags sf;
  CLI::App* status = AddStatusCommand(app, &sf, &common);
  DeadLettersOptions dlo;
  CLI::App* dead = AddDeadLettersCommand(app, &dlo, &common);
  ConfigFlags config_flags;
  CLI::App* config = AddConfigCommand(app, &config_flags);
  TailFlags tf;
  CLI::App* tail = AddTailCommand(app, &tf, &common);
  ConsumeFlags cf;
  CLI::App* consume = AddConsumeCommand(app, &cf, &common);
  DevBrokerFlags dbf;
  CLI::App* dev = AddDevBrokerCommand(app, &dbf, &common);
  DemoOptions demo_options;
  CLI::App* demo = AddDemoCommand(app, &demo_options, &common);
  DemoAppOptions app_options;
  CLI::App* demo_app = AddDemoAppCommand(app, &app_options);

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
  if (*migrate) return RunMigrate(mf);
  if (*status) return RunStatus(sf);
  if (*tail) return RunTail(tf);
  if (*dead) return RunDeadLetters(dlo);
  if (*config) return CheckConfig(app, relay, rf, config_flags.file);
  if (*consume) return RunConsume(cf);
  if (*dev) return RunDevBroker(dbf);
  if (*demo) return RunDemo(demo_options, g_stop);
  if (*demo_app) return RunDemoApp(app_options);
  return kExitUsage;
}

}  // namespace courier::cli

int main(int argc, char** argv) { return courier::cli::Main(argc, argv); }
