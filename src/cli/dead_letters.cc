// `courier dead-letters list|retry|drop`: the operator's side of the dead-letter table
// (stores/dead_letters.h).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/encoding.h"
#include "stores/dead_letters.h"

namespace courier::cli {
namespace {

// Keeps a record on one line of the table.
std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  return text;
}

std::string Shorten(std::string text, size_t max) {
  text = OneLine(std::move(text));
  if (text.size() > max) text = text.substr(0, max - 3) + "...";
  return text;
}

// The flags naming the tables, when they are not the defaults, for the commands suggested.
std::string TableFlags(const DeadLettersOptions& o) {
  const DeadLettersOptions defaults;
  std::string flags;
  if (o.tables.outbox != defaults.tables.outbox) flags += " --table " + o.tables.outbox;
  if (o.tables.dead_letter != defaults.tables.dead_letter) {
    flags += " --dead-letter-table " + o.tables.dead_letter;
  }
  return flags;
}

// One JSON object per line (JSON Lines), oldest first: `jq` reads the stream as it is
// (`courier dead-letters list --json | jq -r 'select(.status == "parked") | .id'`), `jq -s`
// makes it an array. Nothing else goes to stdout, and no line at all when there are none.
void PrintJson(const DeadLetter& d, const std::string& outbox) {
  const nlohmann::json extra = {
      {"id", d.event.id},   {"outbox", outbox},       {"outbox_id", d.event.row_id},
      {"status", d.status}, {"attempts", d.attempts}, {"failed_at", d.failed_at},
      {"sink", d.sink},     {"error", d.error}};
  std::printf("%s\n", EventToJsonLine(d.event, extra.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace))
                          .c_str());
}

int List(DeadLetterStore& store, const DeadLettersOptions& o) {
  auto rows = store.List(static_cast<size_t>(o.limit));
  if (!rows.ok()) return Fail(rows.status());
  if (o.json) {
    for (const DeadLetter& d : *rows) PrintJson(d, o.tables.outbox);
    return 0;
  }
  if (rows->empty()) {
    std::printf("no dead letters of outbox %s in %s\n", o.tables.outbox.c_str(),
                o.tables.dead_letter.c_str());
    return 0;
  }
  std::printf("dead letters of outbox %s (table %s)\n", o.tables.outbox.c_str(),
              o.tables.dead_letter.c_str());
  std::printf("%-8s %-8s %-8s %-24s %-18s %-36s %-20s %s\n", "ID", "STATUS", "ATTEMPTS",
              "AGGREGATE", "EVENT TYPE", "EVENT ID", "FAILED AT", "ERROR");
  std::map<std::string, int> by_status;
  for (const DeadLetter& d : *rows) {
    ++by_status[d.status];
    // The error last and whole: it is what the operator needs to fix the cause.
    std::printf("%-8lld %-8s %-8lld %-24s %-18s %-36s %-20s %s\n",
                static_cast<long long>(d.event.id), d.status.c_str(),
                static_cast<long long>(d.attempts),
                Shorten(d.event.aggregate_type + "/" + d.event.aggregate_id, 24).c_str(),
                Shorten(d.event.event_type, 18).c_str(), d.event.event_id.c_str(),
                d.failed_at.c_str(), OneLine(d.error).c_str());
  }
  std::string summary;
  for (const auto& [status, n] : by_status) {
    summary += (summary.empty() ? "" : ", ") + std::to_string(n) + " " + status;
  }
  std::printf("%zu shown (%s)%s\n", rows->size(), summary.c_str(),
              static_cast<int64_t>(rows->size()) == o.limit ? "; more with --limit" : "");
  if (by_status.count("parked") > 0) {
    std::printf(
        "parked events hold back the later events of their aggregate (held); fix the cause, "
        "then: courier dead-letters retry ID... (or drop ID... to give up on them)%s\n",
        TableFlags(o).c_str());
  }
  return 0;
}

std::string IdList(const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids) out += (out.empty() ? "" : ", ") + std::to_string(id);
  return out;
}

// The ids asked for that `done` does not hold, said on stderr: those that are no dead letter
// of the outbox, and (retry) those whose status cannot be retried. kNotFound when none of the
// ids was acted on, so that a script sees it failed.
Status ReportMissed(DeadLetterStore& store, const DeadLettersOptions& o,
                    const std::vector<int64_t>& done) {
  std::vector<int64_t> missed;
  for (int64_t id : o.ids) {
    if (!std::binary_search(done.begin(), done.end(), id) &&
        std::find(missed.begin(), missed.end(), id) == missed.end()) {
      missed.push_back(id);
    }
  }
  if (missed.empty()) return Status::Ok();
  auto found = store.Find(missed);
  if (!found.ok()) return found.status();
  std::vector<int64_t> unknown;
  std::string not_parked;
  for (int64_t id : missed) {
    auto it = std::find_if(found->begin(), found->end(),
                           [id](const DeadLetter& d) { return d.event.id == id; });
    if (it == found->end()) {
      unknown.push_back(id);
    } else {
      not_parked += (not_parked.empty() ? "" : ", ") + std::to_string(id) + " is " + it->status;
    }
  }
  std::string what;
  if (!unknown.empty()) {
    what = "no dead letter of outbox " + o.tables.outbox + " in " + o.tables.dead_letter +
           " has id " + IdList(unknown);
  }
  if (!not_parked.empty()) {
    what += (what.empty() ? "" : "; ") + std::string("not queued: ") + not_parked +
            " (only parked or skipped ones are retried; held ones follow the parked event of "
            "their aggregate)";
  }
  if (done.empty())
    return NotFoundError(what + " (see: courier dead-letters list" + TableFlags(o) + ")");
  std::fprintf(stderr, "courier: warning: %s\n", what.c_str());
  return Status::Ok();
}

}  // namespace

CLI::App* AddDeadLettersCommand(CLI::App& app, DeadLettersOptions* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "dead-letters",
      "Events the sink rejected for good, parked with the reason (and, under the park policy,\n"
      "the later events of their aggregates, held behind them); those of the outbox --table.\n"
      "  list              show them, oldest first\n"
      "  retry ID...|--all queue parked events for the active relay to publish again (fix the\n"
      "                    cause first); the events held behind them follow, in order\n"
      "  drop ID...|--all  delete them for good; the events held behind them go out");
  cmd->add_option("action", f->action, "list, retry or drop")
      ->type_name("ACTION")
      ->required()
      ->check(CLI::IsMember({"list", "retry", "drop"}));
  cmd->add_option("ids", f->ids, "Dead-letter ids (the ID column of list)")
      ->type_name("ID")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  AddSourceOption(cmd, &f->source);
  AddTableOptions(cmd, &f->tables.outbox, &f->tables.dead_letter);
  cmd->add_flag("--all", f->all,
                "retry/drop: every dead letter of the outbox that failed (drop keeps the held "
                "ones, which then go out)");
  cmd->add_flag("--json", f->json,
                "list: one JSON object per dead letter and line (JSON Lines), oldest first");
  cmd->add_option("--limit", f->limit, "list: show at most the newest N")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  AddCommonFlags(cmd, common);

  return cmd;
}

int RunDeadLetters(const DeadLettersOptions& o) {
  if ((o.action == "retry" || o.action == "drop") && o.ids.empty() && !o.all) {
    return Fail(InvalidArgumentError("dead-letters " + o.action + " needs the ids to " + o.action +
                                     " (see dead-letters list), or --all"));
  }
  auto store = DeadLetterStore::Open(o.source, o.tables);
  if (!store.ok()) return Fail(store.status());
  if (o.action == "list") return List(**store, o);
  const std::vector<int64_t> ids = o.all ? std::vector<int64_t>{} : o.ids;
  if (o.action == "retry") {
    auto queued = (*store)->Retry(ids);
    if (!queued.ok()) return Fail(queued.status());
    if (!o.all) {
      if (Status st = ReportMissed(**store, o, *queued); !st.ok()) return Fail(st);
    }
    std::printf(
        "queued %zu dead letter(s) of outbox %s for retry%s%s; its active relay publishes them, "
        "then the events held behind them, within a second\n",
        queued->size(), o.tables.outbox.c_str(), queued->empty() ? "" : ": ",
        IdList(*queued).c_str());
    return 0;
  }
  auto dropped = (*store)->Drop(ids);
  if (!dropped.ok()) return Fail(dropped.status());
  if (!o.all) {
    if (Status st = ReportMissed(**store, o, *dropped); !st.ok()) return Fail(st);
  }
  std::printf("dropped %zu dead letter(s) of outbox %s%s%s; events held behind them go out next\n",
              dropped->size(), o.tables.outbox.c_str(), dropped->empty() ? "" : ": ",
              IdList(*dropped).c_str());
  return 0;
}

}  // namespace courier::cli
