// The lab's runner: one orders workload and one fault schedule, applied to each strategy in
// turn (lab/strategy.h says what a strategy is and where its faults are), and the verdict on
// each; `courier lab` and `courier demo` print, write and chart what Run returns.
//
// Thread-safety: none; one thread runs the lab.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "audit/verdict.h"
#include "core/clock.h"
#include "courier/status.h"

namespace courier::lab {

// The faults of the schedule, by the names --faults takes.
inline constexpr const char* kFaultNames[] = {
    "crash-between",  // SIGKILL after the first of the two writes (Fault::kCrashBetween)
    "crash-inside",   // SIGKILL inside the second write (Fault::kCrashInside)
    "outage",         // the broker down for a window of commands (the lab's dev broker only)
    "commit-fails",   // the COMMIT refused after everything else was done (Command::commit_fails)
    "db-restart",     // the service's PostgreSQL connections terminated (PostgreSQL only)
    "side-kill",      // SIGKILL and restart of the processes beside the service (a relay)
};

// The session advisory lock (pg_try_advisory_lock) a lab holds on its --source database for the
// whole run, on a connection of its own (application_name "courier-lab"): two labs against one
// database would share the lab_<strategy> schemas, and one's 2pc recovery would roll back the
// other's prepared transactions. A second lab refuses to start (kInvalidArgument).
inline constexpr int64_t kLabLockKey = 0x636f757269657231;  // "courier1"

struct LabOptions {
  std::vector<std::string> strategies;  // names; empty: all
  std::set<std::string> faults;         // of kFaultNames; empty: none
  std::string source;                   // "postgres://..." or empty: SQLite files only
  std::string sink;                     // "kafka://host:port" or empty: the lab's dev broker
  int commands = 60;
  // Empty: a temporary directory, removed unless a guarantee failed (an interrupted run too).
  // Given: kept; refused when a strategy's folder in it exists and is not empty (the lab
  // never deletes what it did not make).
  std::string workdir;
  unsigned seed = 0;    // 0: random
  bool verbose = true;  // a progress line per strategy on stderr
};

// Checks and completes `o` as given on the command line: strategy names ("all", or a comma
// list), fault names ("all", or a comma list), URLs. kInvalidArgument with one line.
Status ParseStrategies(const std::string& text, std::vector<std::string>* out);
Status ParseFaults(const std::string& text, std::set<std::string>* out);
Status CheckUrls(const LabOptions& o);

struct StrategyResult {
  std::string strategy;
  std::string summary;  // StrategyInfo::summary
  // Why it did not run (it needs PostgreSQL and there is no --source); empty when it ran.
  std::string skipped;
  // Why the run itself failed (a service that could not start, a relay that never drained);
  // empty when it completed. A failed run's verdict is not judged.
  std::string error;
  Verdict verdict;
  int64_t commands = 0;
  int64_t accepted = 0;  // commands the service answered "done"
  // Commands sent while the broker was down (commit_fails ones left out), and how many the
  // service accepted; nullopt for accepted_during_outage when there was no outage.
  int64_t outage_commands = 0;
  int64_t outage_accepted = 0;
  std::optional<double> accepted_during_outage;
  double latency_p50_ms = 0;
  double latency_p99_ms = 0;
  // How many of each fault the run applied (a crash counts when the service died of it).
  int64_t service_kills = 0;
  int64_t side_kills = 0;
  int64_t db_restarts = 0;
  int64_t commit_fails = 0;
  bool commit_fails_applies = true;  // StrategyInfo::commit_fails_applies
  // One line each: what went wrong and why, in the terms of this strategy.
  std::vector<std::string> explanation;

  bool ran() const { return skipped.empty() && error.empty(); }
};

struct LabReport {
  std::vector<StrategyResult> results;
  unsigned seed = 0;
  int commands = 0;
  std::set<std::string> faults;
  // Where each fault falls, one line per fault ("crash-between: commands 9, 30, 42").
  std::vector<std::string> schedule;
  std::string workdir;
  bool postgres = false;
  bool own_broker = true;
  // The strategies whose guarantee the lab checks (outbox-poll, outbox-cdc, event-sourcing):
  // all of those that ran are clean.
  bool guarantees_hold = true;
};

// Runs every strategy of `o`; an error only for what stops the whole lab (a bad URL, a
// broker that cannot start). Interrupted (children killed) when `stop` is requested.
Result<LabReport> RunLab(const LabOptions& o, const StopSignal& stop);

// The report as a table with a line per failure (the terminal), as JSON (a list, one object
// per strategy), as an SVG chart, and as the Markdown of docs/strategies.md.
std::string FormatTable(const LabReport& report);
std::string FormatJson(const LabReport& report);
std::string FormatSvg(const LabReport& report);
// `command_line` reproduces the run; `chart` (may be empty) is the SVG's path from the page.
std::string FormatMarkdown(const LabReport& report, const std::string& command_line,
                           const std::string& chart);

// `courier lab-service`: one strategy's orders service, in its own process. It connects to the
// lab's socket (an abstract unix socket named `socket`), says it is ready once Start returned,
// then answers the commands it reads, one line each, until told to finish.
struct ServiceOptions {
  std::string strategy;
  std::string socket;
  std::string db_url;
  std::string schema;
  std::string bootstrap;
  std::string topic;
  std::string workdir;
  int partitions = 4;
};
int RunService(const ServiceOptions& o);

}  // namespace courier::lab
