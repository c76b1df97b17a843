// `courier consume parked list|retry|drop`: the operator's side of courier_inbox_parked, the
// events a consumer's handler refused for good (inbox/consume.h).
#include <cstdio>

#include "cli/commands.h"
#include "core/encoding.h"
#include "inbox/inbox_db.h"

namespace courier::cli {
namespace {

std::string Shorten(std::string text, size_t max) {
  for (char& c : text) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (text.size() > max) text = text.substr(0, max - 3) + "...";
  return text;
}

int List(InboxDb& db, const ConsumeOptions& o, const ConsumeParkedOptions& p) {
  auto rows = db.ListParked(o.parked_table, o.consumer, {}, p.limit);
  if (!rows.ok()) return Fail(rows.status());
  if (rows->empty()) {
    std::printf("no parked events of consumer %s in %s\n", o.consumer.c_str(),
                o.parked_table.c_str());
    return 0;
  }
  std::printf("parked events of consumer %s (table %s)\n", o.consumer.c_str(),
              o.parked_table.c_str());
  std::printf("%-8s %-8s %-24s %-18s %-36s %-26s %s\n", "ID", "ATTEMPTS", "AGGREGATE", "EVENT TYPE",
              "EVENT ID", "PARKED AT", "ERROR");
  for (const ParkedEvent& row : *rows) {
    auto e = EventFromJsonLine(row.event);
    const std::string aggregate = e.ok() ? e->aggregate_type + "/" + e->aggregate_id : "?";
    std::printf("%-8lld %-8lld %-24s %-18s %-36s %-26s %s\n", static_cast<long long>(row.id),
                static_cast<long long>(row.attempts), Shorten(aggregate, 24).c_str(),
                Shorten(e.ok() ? e->event_type : "?", 18).c_str(), row.event_id.c_str(),
                row.parked_at.c_str(), Shorten(row.error, 120).c_str());
  }
  std::printf(
      "%zu shown%s; fix the cause, then: courier consume parked retry ID... (with the "
      "handler's --to or --exec), or drop ID... to give up on them\n",
      rows->size(), static_cast<int64_t>(rows->size()) == p.limit ? " (more with --limit)" : "");
  return 0;
}

// The rows the command acts on: those named, each of which must exist, or all of them.
Result<std::vector<ParkedEvent>> Selected(InboxDb& db, const ConsumeOptions& o,
                                          const ConsumeParkedOptions& p) {
  if (p.all) return db.ListParked(o.parked_table, o.consumer, {}, INT64_MAX);
  COURIER_ASSIGN_OR_RETURN(std::vector<ParkedEvent> rows,
                           db.ListParked(o.parked_table, o.consumer, p.ids, INT64_MAX));
  for (int64_t id : p.ids) {
    bool found = false;
    for (const ParkedEvent& row : rows) found = found || row.id == id;
    if (!found) {
      return NotFoundError("no parked event " + std::to_string(id) + " of consumer " + o.consumer +
                           " in " + o.parked_table + " (see consume parked list)");
    }
  }
  return rows;
}

int Retry(InboxDb& db, const ConsumeOptions& o, const ConsumeParkedOptions& p) {
  if (Status st = ValidateHandler(o); !st.ok()) {
    return Fail(st.WithContext("consume parked retry delivers to the handler"));
  }
  auto rows = Selected(db, o, p);
  if (!rows.ok()) return Fail(rows.status());
  int failed = 0;
  for (const ParkedEvent& row : *rows) {
    auto retried = RetryParked(o, db, row);
    if (!retried.ok()) return Fail(retried.status());
    if (retried->handled) {
      std::printf("parked event %lld (%s): handled, removed\n", static_cast<long long>(row.id),
                  row.event_id.c_str());
    } else if (retried->failure.ok()) {
      std::printf("parked event %lld (%s): already handled, removed\n",
                  static_cast<long long>(row.id), row.event_id.c_str());
    } else {
      ++failed;
      std::printf("parked event %lld (%s): the handler failed again, kept: %s\n",
                  static_cast<long long>(row.id), row.event_id.c_str(),
                  retried->failure.message().c_str());
    }
  }
  if (failed > 0) {
    return Fail(RetriableError(std::to_string(failed) + " of " + std::to_string(rows->size()) +
                               " parked event(s) failed again and stay parked"));
  }
  return 0;
}

int Drop(InboxDb& db, const ConsumeOptions& o, const ConsumeParkedOptions& p) {
  auto rows = Selected(db, o, p);
  if (!rows.ok()) return Fail(rows.status());
  int64_t dropped = 0;
  for (const ParkedEvent& row : *rows) {
    auto gone = db.DeleteParked(o.parked_table, o.consumer, row.id);
    if (!gone.ok()) return Fail(gone.status());
    dropped += *gone ? 1 : 0;
  }
  std::printf("dropped %lld parked event(s) of consumer %s\n", static_cast<long long>(dropped),
              o.consumer.c_str());
  return 0;
}

}  // namespace

int RunConsumeParked(const ConsumeOptions& o, const ConsumeParkedOptions& p) {
  if ((p.action == "retry" || p.action == "drop") && p.ids.empty() && !p.all) {
    return Fail(InvalidArgumentError("consume parked " + p.action + " needs the ids to " +
                                     p.action + " (see consume parked list), or --all"));
  }
  auto loc = ParseSourceUrl(o.db_url);
  if (!loc.ok()) return Fail(loc.status());
  InboxDb db(*loc);
  if (Status st = db.Connect(); !st.ok()) return Fail(st);
  if (p.action == "list") return List(db, o, p);
  if (p.action == "retry") return Retry(db, o, p);
  return Drop(db, o, p);
}

}  // namespace courier::cli
