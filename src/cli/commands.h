// Subcommands implemented in their own files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/clock.h"
#include "courier/status.h"
#include "inbox/consume.h"

namespace courier::cli {

// Prints a command's final error (scrubbed of secrets; a JSON record with --log-format json)
// and returns the exit code: 2 for bad input (kInvalidArgument, kNotFound), else 1.
int Fail(const Status& st);

struct DemoOptions {
  int orders = 300;
  std::string duration = "20s";
  std::string kill_every = "0.3s..1.5s";
  std::string workdir;  // empty: a fresh temporary directory, removed afterwards
  bool keep = false;
  unsigned seed = 0;  // 0: random
};
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
// The demo's "orders" service, run as a child process so that it can be SIGKILLed.
int RunDemoApp(const DemoAppOptions& options);

struct DeadLettersOptions {
  std::string action;  // list, retry or drop
  std::string source;
  // The outbox whose dead letters these are (several may share one dead-letter table).
  std::string outbox_table = "courier_outbox";
  std::string dead_letter_table = "courier_dead_letter";
  std::vector<int64_t> ids;
  bool all = false;
  int64_t limit = 100;
  bool json = false;  // list: JSON Lines, one dead letter per line
};
// `courier dead-letters`: list the parked events, queue them for the relay to publish again,
// or drop them (cli/dead_letters.cc).
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

}  // namespace courier::cli
