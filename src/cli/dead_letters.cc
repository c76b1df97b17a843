// `courier dead-letters list|retry|drop`: the operator's side of the dead-letter table
// (relay/dead_letters.h).
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "relay/dead_letters.h"

namespace courier::cli {
namespace {

std::string Shorten(std::string text, size_t max) {
  for (char& c : text) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (text.size() > max) text = text.substr(0, max - 3) + "...";
  return text;
}

// The flags naming the tables, when they are not the defaults, for the commands suggested.
std::string TableFlags(const DeadLettersOptions& o) {
  const DeadLettersOptions defaults;
  std::string flags;
  if (o.outbox_table != defaults.outbox_table) flags += " --table " + o.outbox_table;
  if (o.dead_letter_table != defaults.dead_letter_table) {
    flags += " --dead-letter-table " + o.dead_letter_table;
  }
  return flags;
}

int List(DeadLetterStore& store, const DeadLettersOptions& o) {
  auto rows = store.List(static_cast<size_t>(o.limit));
  if (!rows.ok()) return Fail(rows.status());
  if (rows->empty()) {
    std::printf("no dead letters of outbox %s in %s\n", o.outbox_table.c_str(),
                o.dead_letter_table.c_str());
    return 0;
  }
  std::printf("dead letters of outbox %s (table %s)\n", o.outbox_table.c_str(),
              o.dead_letter_table.c_str());
  std::printf("%-8s %-8s %-8s %-24s %-18s %-36s %-20s %s\n", "ID", "STATUS", "ATTEMPTS",
              "AGGREGATE", "EVENT TYPE", "EVENT ID", "FAILED AT", "ERROR");
  std::map<std::string, int> by_status;
  for (const DeadLetter& d : *rows) {
    ++by_status[d.status];
    std::printf("%-8lld %-8s %-8lld %-24s %-18s %-36s %-20s %s\n",
                static_cast<long long>(d.event.id), d.status.c_str(),
                static_cast<long long>(d.attempts),
                Shorten(d.event.aggregate_type + "/" + d.event.aggregate_id, 24).c_str(),
                Shorten(d.event.event_type, 18).c_str(), d.event.event_id.c_str(),
                d.failed_at.c_str(), Shorten(d.error, 120).c_str());
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

}  // namespace

int RunDeadLetters(const DeadLettersOptions& o) {
  if ((o.action == "retry" || o.action == "drop") && o.ids.empty() && !o.all) {
    return Fail(InvalidArgumentError("dead-letters " + o.action + " needs the ids to " + o.action +
                                     " (see dead-letters list), or --all"));
  }
  TableNames tables;
  tables.outbox = o.outbox_table;
  tables.dead_letter = o.dead_letter_table;
  auto store = DeadLetterStore::Open(o.source, tables);
  if (!store.ok()) return Fail(store.status());
  if (o.action == "list") return List(**store, o);
  const std::vector<int64_t> ids = o.all ? std::vector<int64_t>{} : o.ids;
  if (o.action == "retry") {
    auto n = (*store)->Retry(ids);
    if (!n.ok()) return Fail(n.status());
    std::printf(
        "queued %lld dead letter(s) of outbox %s for retry; its active relay publishes them, "
        "then the events held behind them, within a second\n",
        static_cast<long long>(*n), o.outbox_table.c_str());
    return 0;
  }
  auto n = (*store)->Drop(ids);
  if (!n.ok()) return Fail(n.status());
  std::printf("dropped %lld dead letter(s) of outbox %s; events held behind them go out next\n",
              static_cast<long long>(*n), o.outbox_table.c_str());
  return 0;
}

}  // namespace courier::cli
