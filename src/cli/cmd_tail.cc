// `courier tail`: print the events arriving at a sink, one JSON line each.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <limits>
#include <string>

#include "brokers/registry.h"
#include "cli/commands.h"
#include "core/encoding.h"

namespace courier::cli {

CLI::App* AddTailCommand(CLI::App& app, TailFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "tail", "Print events arriving at a sink, one JSON line each (" + TailUsages() + ").");
  cmd->add_option("url", f->url, "Sink URL with a concrete topic")->type_name("URL")->required();
  cmd->add_flag("--from-beginning", f->from_beginning, "Start at the oldest event, not new ones");
  cmd->add_flag("--exit-at-end", f->exit_at_end,
                "Print everything there now (from the beginning) and exit");
  cmd->add_option("--limit", f->limit, "Exit after this many events (0: no limit)")
      ->type_name("N")
      ->check(CLI::Range(0LL, std::numeric_limits<long long>::max()));
  cmd->add_flag("--wait-for-topic", f->wait_for_topic,
                "Kafka: a topic that does not exist yet is waited for (never created), "
                "instead of exit 2");
  AddCommonFlags(cmd, common);
  return cmd;
}

// Every broker's reader without a group (brokers/registry.h), printed one JSON line each until
// the limit, the end (--exit-at-end) or a stop.
int RunTail(const TailFlags& f) {
  auto reader = MakeReader(ReaderOptions{.url = f.url,
                                         .from_beginning = f.from_beginning || f.exit_at_end,
                                         .to_end = f.exit_at_end,
                                         .wait_for_topic = f.wait_for_topic},
                           "tail");
  if (!reader.ok()) return Fail(reader.status());
  long long printed = 0;
  while (!StopRequest().requested() && (f.limit == 0 || printed < f.limit)) {
    auto next = (*reader)->Next(Duration(f.exit_at_end ? 1000 : 200));
    if (!next.ok()) return Fail(next.status());
    if (!next->has_value()) {
      if (f.exit_at_end) break;
      continue;
    }
    const Message& m = **next;
    const std::string line = m.line.empty() ? EventToJsonLine(m.event, m.where) : m.line;
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    ++printed;
  }
  return 0;
}

}  // namespace courier::cli
