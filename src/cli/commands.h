// The subcommands, one file each (cli/cmd_<name>.cc, dead_letters.cc, demo.cc): each adds
// its subcommand and options to the parser (Add...Command, bound to its flags struct) and runs
// it (Run...). The command table in cli/main.cc (rows of Command) lists them for help, sets
// them up and runs the one parsed.
//
// Thread-safety: none; used by main() before anything runs, except StopRequest and
// SetRunningRelay, which the signal handler reads.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "cli/config.h"
#include "cli/relay_config.h"
#include "core/clock.h"
#include "core/fault_points.h"
#include "courier/projection.h"
#include "courier/relay.h"
#include "courier/status.h"
#include "inbox/consume.h"
#include "lab/lab.h"
#include "sources/source.h"

namespace courier::cli {

inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Prints a command's final error (scrubbed of secrets; a JSON record with --log-format json)
// and returns the exit code: 2 for bad input (kInvalidArgument, kNotFound), else 1.
int Fail(const Status& st);

// Requested by SIGTERM and SIGINT (cli/main.cc): long-running commands stop on it.
StopSignal& StopRequest();
// The relay that SIGTERM and SIGINT also stop (Relay::RequestStop) while it runs; nullptr
// once it returned.
void SetRunningRelay(Relay* relay);

// The flags every command but config and demo-app takes.
struct CommonFlags {
  std::string config;  // read by ExpandConfig before parsing; declared so every command takes it
  std::string log_level = "info";
  std::string log_format = "logfmt";
};
void AddCommonFlags(CLI::App* cmd, CommonFlags* f);

// The options naming the outbox, one text each in every command that takes them (relay,
// migrate, status, dead-letters). --source: its database URL, required.
void AddSourceOption(CLI::App* cmd, std::string* url);
// --table and --dead-letter-table, showing the defaults they hold; in `group` unless empty.
void AddTableOptions(CLI::App* cmd, std::string* outbox, std::string* dead_letter,
                     const std::string& group = "");
// --capture (relay, migrate): tables whose changes are published (sources/cdc/capture_setup.h),
// comma-separated and repeatable.
void AddCaptureOption(CLI::App* cmd, std::vector<std::string>* capture,
                      const std::string& group = "");

// --event-store (migrate, relay, status): the table is an event store
// (include/courier/event_store.h, docs/event-sourcing.md).
void AddEventStoreOption(CLI::App* cmd, bool* event_store, const std::string& group = "");
// With `event_store`, makes `tables` an event store's (EventStoreTables): --table left at the
// outbox's default names courier_events.
void UseEventStore(bool event_store, TableNames* tables);

// What the commands share while they are set up and run: the parser, the flags every command
// takes, and the relay's flags (`config check` checks a file as the relay would read it).
struct CommandContext {
  CLI::App& app;
  CommonFlags common;
  RelayFlags relay;
};

// One row of the command table (cli/main.cc): `courier help` lists the rows in order with
// their summaries, and the one parsed runs.
struct Command {
  const char* name;
  const char* summary;  // one line; `courier NAME --help` shows the whole description
  // Adds the subcommand and its options to ctx.app, bound to flags the returned run function
  // keeps; that function runs the command once the command line is parsed (its exit code).
  std::function<int()> (*setup)(CommandContext& ctx);
};

// `courier relay` (cli/cmd_relay.cc).
CLI::App* AddRelayCommand(CLI::App& app, RelayFlags* f, CommonFlags* common);
int RunRelay(RelayFlags& f);

// `courier migrate` (cli/cmd_migrate.cc).
struct MigrateFlags {
  std::string source;
  TableNames tables;
  CdcOptions cdc;
  std::string mode = cdc.enabled ? "cdc" : "poll";
  std::string outbox_format = "courier";
  bool event_store = false;
};
CLI::App* AddMigrateCommand(CLI::App& app, MigrateFlags* f, CommonFlags* common);
int RunMigrate(const MigrateFlags& f);

// `courier backfill` (cli/cmd_backfill.cc).
struct BackfillFlags {
  std::string source;
  TableNames tables;
  std::vector<std::string> capture;
  std::string where;
};
CLI::App* AddBackfillCommand(CLI::App& app, BackfillFlags* f, CommonFlags* common);
int RunBackfill(const BackfillFlags& f);

// `courier status` (cli/cmd_status.cc).
struct StatusFlags {
  std::string source;
  TableNames tables;
  bool event_store = false;
  bool json = false;
};
CLI::App* AddStatusCommand(CLI::App& app, StatusFlags* f, CommonFlags* common);
int RunStatus(const StatusFlags& f);

// `courier config check FILE` (cli/cmd_config.cc; the checks are CheckConfig's).
struct ConfigFlags {
  std::string action;
  std::string file;
};
CLI::App* AddConfigCommand(CLI::App& app, ConfigFlags* f);

// `courier tail` (cli/cmd_tail.cc).
struct TailFlags {
  std::string url;
  bool from_beginning = false;
  bool exit_at_end = false;
  bool wait_for_topic = false;
  long long limit = 0;
};
CLI::App* AddTailCommand(CLI::App& app, TailFlags* f, CommonFlags* common);
int RunTail(const TailFlags& f);

// `courier audit` (cli/cmd_audit.cc).
struct AuditFlags {
  AuditOptions options;
  bool event_store = false;
  bool json = false;
  bool repair = false;
  std::string every;  // empty: once
  int metrics_port = 0;
  std::string metrics_host = "127.0.0.1";
};
CLI::App* AddAuditCommand(CLI::App& app, AuditFlags* f, CommonFlags* common);
int RunAuditCommand(AuditFlags& f);

// `courier dev-broker` (cli/cmd_dev_broker.cc).
struct DevBrokerFlags {
  int brokers = 1;
  int port = 0;
  int partitions = 4;
  std::string bootstrap_file;
  std::vector<std::string> topics;
};
CLI::App* AddDevBrokerCommand(CLI::App& app, DevBrokerFlags* f, CommonFlags* common);
int RunDevBroker(const DevBrokerFlags& f);

// The fault points named in COURIER_FAILPOINTS ("a,b": the process SIGKILLs itself there), for
// the crash tests; null when it is unset. Read once; only the CLI reads it.
FaultPoints* FaultPointsFromEnvironment();

struct DemoOptions {
  int orders = 60;      // commands per strategy
  std::string workdir;  // empty: a fresh temporary directory, removed afterwards
  unsigned seed = 0;    // 0: random
};
CLI::App* AddDemoCommand(CLI::App& app, DemoOptions* f, CommonFlags* common);
// Interrupted (cleanly, children killed) when `stop` is requested.
int RunDemo(const DemoOptions& options, const StopSignal& stop);

struct DemoAppOptions {
  std::string strategy;  // "outbox" or "naive"
  std::string db;
  std::string bootstrap;
  std::string topic;
  int orders = 100;
  int rate = 50;  // transactions per second
  unsigned seed = 0;
};
CLI::App* AddDemoAppCommand(CLI::App& app, DemoAppOptions* f);
// The demo's "orders" service, run as a child process so that it can be SIGKILLed.
int RunDemoApp(const DemoAppOptions& options);

// `courier lab` and `courier lab-service` (cli/cmd_lab.cc).
struct LabFlags {
  std::string strategy = "all";
  std::string faults = "all";
  std::string source;
  std::string sink;
  int commands = 60;
  std::string json;
  std::string chart;
  std::string markdown;
  std::string workdir;
  unsigned seed = 0;
};
CLI::App* AddLabCommand(CLI::App& app, LabFlags* f, CommonFlags* common);
int RunLabCommand(const LabFlags& f);
struct LabServiceFlags {
  lab::ServiceOptions options;
};
CLI::App* AddLabServiceCommand(CLI::App& app, LabServiceFlags* f);
int RunLabService(const LabServiceFlags& f);

struct DeadLettersOptions {
  std::string action;  // list, retry or drop
  std::string source;
  // The outbox whose dead letters these are (several may share one dead-letter table).
  TableNames tables;
  std::vector<int64_t> ids;
  bool all = false;
  int64_t limit = 100;
  bool json = false;  // list: JSON Lines, one dead letter per line
};
// `courier dead-letters`: list the parked events, queue them for the relay to publish again,
// or drop them (cli/dead_letters.cc).
CLI::App* AddDeadLettersCommand(CLI::App& app, DeadLettersOptions* f, CommonFlags* common);
int RunDeadLetters(const DeadLettersOptions& options);

struct ConsumeParkedOptions {
  std::string action;  // list, retry or drop
  std::vector<int64_t> ids;
  bool all = false;
  int64_t limit = 100;
};
// `courier consume parked`: list a consumer's parked events, deliver them to the handler once
// more (through the inbox), or drop them (cli/consume_parked.cc).
int RunConsumeParked(const ConsumeOptions& consume, const ConsumeParkedOptions& options);

// `courier consume` and `courier consume parked` (cli/cmd_consume.cc).
struct ConsumeFlags {
  ConsumeOptions options;
  // The durations as given; their defaults are ConsumeOptions' own (inbox/consume.h).
  std::string handler_timeout = FormatDuration(options.handler_timeout);
  std::string backoff_initial = FormatDuration(options.backoff_initial);
  std::string backoff_max = FormatDuration(options.backoff_max);
  std::string claim_idle = FormatDuration(options.claim_idle);
  std::string retention = FormatDuration(options.retention);
  ConsumeParkedOptions parked;
  CLI::App* parked_command = nullptr;  // parsed(): `consume parked`
};
CLI::App* AddConsumeCommand(CLI::App& app, ConsumeFlags* f, CommonFlags* common);
int RunConsume(const ConsumeFlags& f);

// `courier project` and `courier project wait` (cli/cmd_project.cc).
struct ProjectFlags {
  ProjectionOptions options;
  bool event_store = false;  // the source is the event store in --db
  std::string to_url;
  std::string exec;
  bool rebuild = false;
  std::string reset_sql;
  std::string handler_timeout = "30s";
  std::string backoff_initial = FormatDuration(options.backoff_initial);
  std::string backoff_max = FormatDuration(options.backoff_max);
  int metrics_port = 0;  // /wait, /metrics, /healthz (0: off)
  std::string metrics_host = "127.0.0.1";
  // `project wait`
  CLI::App* wait_command = nullptr;
  CLI::Option* partition_option = nullptr;
  CLI::Option* offset_option = nullptr;
  CLI::Option* position_option = nullptr;
  std::string topic;
  int partition = -1;
  long long offset = -1;
  long long position = -1;
  std::string timeout = "5s";
};
CLI::App* AddProjectCommand(CLI::App& app, ProjectFlags* f, CommonFlags* common);
int RunProject(const ProjectFlags& f);

}  // namespace courier::cli
