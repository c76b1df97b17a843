// `courier lab` (every dual-write strategy under one fault schedule, lab/lab.h) and the hidden
// `courier lab-service` (one strategy's orders service, the lab's child process).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "lab/lab.h"

namespace courier::cli {
namespace {

// Whether `path` can be written, found out before the run rather than after it, and without
// changing it: an existing file is opened for appending, a new one made and removed again.
// "-" is stdout.
Status CheckWritable(const char* flag, const std::string& path) {
  if (path.empty() || path == "-") return Status::Ok();
  int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) unlink(path.c_str());
  }
  if (fd < 0) {
    return InvalidArgumentError(std::string(flag) + " " + path +
                                ": cannot write: " + std::strerror(errno));
  }
  close(fd);
  return Status::Ok();
}

Status WriteFile(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return Status::Ok();
  }
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return InvalidArgumentError("cannot write " + path);
  return Status::Ok();
}

// The command that reproduces a run, as docs/strategies.md names it (no secrets: the source is
// only said to be PostgreSQL).
std::string CommandLine(const LabFlags& f) {
  std::string line = "courier lab --strategy " + f.strategy + " --faults " + f.faults;
  if (!f.source.empty()) line += " --source postgres://USER@HOST/DB";
  if (!f.sink.empty()) line += " --sink " + f.sink;
  line += " --commands " + std::to_string(f.commands);
  if (f.seed != 0) line += " --seed " + std::to_string(f.seed);
  return line;
}

}  // namespace

CLI::App* AddLabCommand(CLI::App& app, LabFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "lab",
      "Every way of doing the dual write (the order in the database, its event on Kafka) under\n"
      "the same faults: one orders workload and one fault schedule applied to each strategy,\n"
      "each running as a service process of its own. SIGKILLs between and inside the two\n"
      "writes, a broker outage, commits that fail after the broker acked, database restarts\n"
      "(PostgreSQL), SIGKILLs of the relay. Then what the strategy committed is compared with\n"
      "what its topic holds: lost, ghosts, duplicates, order violations, the share of commands\n"
      "accepted while the broker was down, and command latency. Strategies that need\n"
      "PostgreSQL run only with --source. Exits 1 unless outbox-poll, outbox-cdc and\n"
      "event-sourcing (those that ran) lost nothing, had no ghosts and kept order; 2 on bad\n"
      "input, or when another lab runs against the same --source database (it holds a\n"
      "PostgreSQL advisory lock for its whole run). docs/strategies.md is a recorded run.");
  cmd->add_option("--strategy", f->strategy,
                  "Strategies to run, comma-separated, or all: naive, publish-first, "
                  "publish-in-transaction, in-memory-retry, 2pc, outbox-poll, outbox-cdc, "
                  "event-sourcing, listen-to-yourself")
      ->type_name("NAME,...")
      ->capture_default_str();
  cmd->add_option("--faults", f->faults,
                  "Faults of the schedule, comma-separated, all or none: crash-between, "
                  "crash-inside, outage, commit-fails, db-restart, side-kill")
      ->type_name("LIST")
      ->capture_default_str();
  cmd->add_option("--source", f->source,
                  "PostgreSQL to run in (a schema lab_<strategy> each, dropped and made again; "
                  "2pc needs the server's max_prepared_transactions above 0); without it: "
                  "SQLite files, and the strategies that need PostgreSQL are skipped")
      ->type_name("postgres://...");
  cmd->add_option("--sink", f->sink,
                  "A Kafka cluster instead of the built-in dev broker (a topic per strategy and "
                  "run; no broker outage then)")
      ->type_name("kafka://HOST:PORT");
  cmd->add_option("--commands", f->commands, "Commands per strategy (at least 20)")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--json", f->json,
                  "Write the results here: a list, one object per strategy (- for stdout, "
                  "the table then on stderr; likewise --chart and --markdown)")
      ->type_name("FILE");
  cmd->add_option("--chart", f->chart,
                  "Write an SVG chart of lost, ghosts, duplicates and "
                  "accepted-during-outage per strategy")
      ->type_name("FILE.svg");
  cmd->add_option("--markdown", f->markdown, "Write the results as docs/strategies.md is")
      ->type_name("FILE");
  cmd->add_option("--workdir", f->workdir,
                  "Keep the databases and logs here, a folder per strategy (refused if one "
                  "exists and is not empty; default: a temporary directory, removed unless a "
                  "guarantee failed)")
      ->type_name("DIR");
  cmd->add_option("--seed", f->seed, "Random seed of the workload and schedule (0: random)")
      ->type_name("N");
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunLabCommand(const LabFlags& f) {
  lab::LabOptions o;
  Status st = lab::ParseStrategies(f.strategy, &o.strategies);
  if (st.ok()) st = lab::ParseFaults(f.faults, &o.faults);
  o.source = f.source;
  o.sink = f.sink;
  o.commands = f.commands;
  o.workdir = f.workdir;
  o.seed = f.seed;
  if (st.ok()) st = lab::CheckUrls(o);
  const int to_stdout = (f.json == "-") + (f.chart == "-") + (f.markdown == "-");
  if (st.ok() && to_stdout > 1) {
    st = InvalidArgumentError("only one of --json, --chart and --markdown can be - (stdout)");
  }
  if (st.ok()) st = CheckWritable("--json", f.json);
  if (st.ok()) st = CheckWritable("--chart", f.chart);
  if (st.ok()) st = CheckWritable("--markdown", f.markdown);
  if (!st.ok()) return Fail(st);
  auto report = lab::RunLab(o, StopRequest());
  if (!report.ok()) return Fail(report.status());
  // With a result on stdout, the table goes to stderr, so that stdout is that result only.
  FILE* table = to_stdout > 0 ? stderr : stdout;
  std::fprintf(table, "%s", lab::FormatTable(*report).c_str());
  if (!report->workdir.empty()) std::fprintf(table, "\nfiles: %s\n", report->workdir.c_str());
  std::fflush(table);
  if (!f.json.empty()) st = WriteFile(f.json, lab::FormatJson(*report));
  if (st.ok() && !f.chart.empty()) st = WriteFile(f.chart, lab::FormatSvg(*report));
  if (st.ok() && !f.markdown.empty()) {
    std::string line = CommandLine(f) + " --markdown " + f.markdown;
    std::string chart;
    if (!f.chart.empty() && f.chart != "-") {
      line += " --chart " + f.chart;
      std::error_code ec;
      const auto dir = f.markdown == "-" ? std::filesystem::current_path(ec)
                                         : std::filesystem::absolute(f.markdown, ec).parent_path();
      chart = std::filesystem::absolute(f.chart, ec).lexically_relative(dir).string();
    }
    st = WriteFile(f.markdown, lab::FormatMarkdown(*report, line, chart));
  }
  if (!st.ok()) return Fail(st);
  return report->guarantees_hold ? 0 : kExitFailure;
}

CLI::App* AddLabServiceCommand(CLI::App& app, LabServiceFlags* f) {
  CLI::App* cmd =
      app.add_subcommand("lab-service", "One strategy's orders service, run by the lab");
  cmd->group("");  // internal: not listed in help
  cmd->add_option("--strategy", f->options.strategy)->required();
  cmd->add_option("--socket", f->options.socket)->required();
  cmd->add_option("--db", f->options.db_url)->required();
  cmd->add_option("--schema", f->options.schema);
  cmd->add_option("--bootstrap", f->options.bootstrap)->required();
  cmd->add_option("--topic", f->options.topic)->required();
  cmd->add_option("--workdir", f->options.workdir);
  cmd->add_option("--partitions", f->options.partitions);
  return cmd;
}

int RunLabService(const LabServiceFlags& f) { return lab::RunService(f.options); }

}  // namespace courier::cli
