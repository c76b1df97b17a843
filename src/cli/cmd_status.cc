// `courier status`: the outbox's backlog, dead letters, leases and replication slots; an event
// store's projections and Kafka-sourced projections' offsets.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/url.h"
#include "relay/status_report.h"

namespace courier::cli {
namespace {

std::string Bytes(int64_t n) {
  char buf[32];
  if (n < 1024) {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(n));
  } else if (n < (1LL << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(n) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(n) / (1 << 20));
  }
  return buf;
}

}  // namespace

CLI::App* AddStatusCommand(CLI::App& app, StatusFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "status",
      "Show backlog, oldest pending event, dead letters and whether a relay is active;\n"
      "with --event-store also every projection's checkpoint, how far behind the store's\n"
      "newest position it is and when it last moved; Kafka-sourced projections' stored\n"
      "offsets (courier_projection_offsets) when the database has them.");
  AddSourceOption(cmd, &f->source);
  AddTableOptions(cmd, &f->tables.outbox, &f->tables.dead_letter);
  AddEventStoreOption(cmd, &f->event_store);
  cmd->add_flag("--json", f->json, "One JSON object instead of text");
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunStatus(const StatusFlags& f) {
  const std::string& source = f.source;
  TableNames tables = f.tables;
  UseEventStore(f.event_store, &tables);
  auto s = ReadOutboxStatus(source, tables);
  if (!s.ok()) return Fail(s.status());
  if (f.json) {
    std::string slots = "[";
    for (const SlotStatus& slot : s->slots) {
      if (slots.size() > 1) slots += ",";
      char buf[512];
      std::snprintf(buf, sizeof buf,
                    "{\"name\":\"%s\",\"exists\":%s,\"active\":%s,\"confirmed_lsn\":\"%s\","
                    "\"lag_bytes\":%lld,\"retained_bytes\":%lld,\"wal_status\":\"%s\"}",
                    slot.name.c_str(), slot.exists ? "true" : "false",
                    slot.active ? "true" : "false", slot.confirmed_lsn.c_str(),
                    static_cast<long long>(slot.lag_bytes),
                    static_cast<long long>(slot.retained_bytes), slot.wal_status.c_str());
      slots += buf;
    }
    slots += "]";
    std::string leases = "[";
    for (const LeaseStatus& l : s->leases) {
      if (leases.size() > 1) leases += ",";
      nlohmann::json j = {{"name", l.name},
                          {"holder", l.holder},
                          {"epoch", l.epoch},
                          {"live", l.live},
                          {"renewed_ago_s", l.renewed_ago_s},
                          {"expires_in_s", l.expires_in_s},
                          {"published", l.published},
                          {"per_second", l.per_second}};
      leases += j.dump();
    }
    leases += "]";
    std::string event_store;
    if (tables.event_store()) {
      nlohmann::json waits = nlohmann::json::array();
      for (const HorizonBlocker& b : s->horizon_waits_on) {
        waits.push_back({{"pid", b.pid}, {"xid", b.xid}, {"age_s", b.age_seconds}});
      }
      nlohmann::json projections = nlohmann::json::array();
      for (const ProjectionStatus& p : s->projections) {
        projections.push_back({{"name", p.name},
                               {"position", p.position},
                               {"behind", p.behind},
                               {"updated_ago_s", p.updated_ago_s}});
      }
      event_store = ",\"event_store\":true,\"horizon_waits_on\":" + waits.dump() +
                    ",\"projections\":" + projections.dump();
    }
    if (!s->projection_offsets.empty()) {
      nlohmann::json offsets = nlohmann::json::array();
      for (const ProjectionOffsetStatus& p : s->projection_offsets) {
        offsets.push_back({{"name", p.name},
                           {"topic", p.topic},
                           {"partition", p.partition},
                           {"next_offset", p.next_offset}});
      }
      event_store += ",\"projection_offsets\":" + offsets.dump();
    }
    std::printf(
        "{\"pending\":%lld,\"oldest_pending_age_s\":%.3f,\"published_retained\":%lld,"
        "\"dead_letters\":%lld,\"relay_active\":%s,\"slots\":%s,\"leases\":%s%s}\n",
        static_cast<long long>(s->pending), s->oldest_pending_age_s,
        static_cast<long long>(s->published_retained), static_cast<long long>(s->dead_letters),
        s->relay_active ? "true" : "false", slots.c_str(), leases.c_str(), event_store.c_str());
    return 0;
  }
  if (tables.event_store()) {
    std::printf("source             %s\n", RedactUrl(source).c_str());
    std::printf("event store        %s\n", tables.outbox.c_str());
    std::printf("unpublished events %lld\n", static_cast<long long>(s->pending));
    std::printf("oldest unpublished %.1f s\n", s->oldest_pending_age_s);
  } else {
    std::printf("source             %s\n", RedactUrl(source).c_str());
    std::printf("outbox             %s\n", tables.outbox.c_str());
    std::printf("pending events     %lld\n", static_cast<long long>(s->pending));
    std::printf("oldest pending     %.1f s\n", s->oldest_pending_age_s);
    std::printf("published, kept    %lld\n", static_cast<long long>(s->published_retained));
  }
  std::printf("dead letters       %lld  (table %s)\n", static_cast<long long>(s->dead_letters),
              tables.dead_letter.c_str());
  std::printf("active relay       %s\n", s->relay_active ? "yes" : "no");
  for (const LeaseStatus& l : s->leases) {
    if (l.live) {
      std::printf("lease              %s  held by %s (epoch %lld), renewed %.1f s ago\n",
                  l.name.c_str(), l.holder.c_str(), static_cast<long long>(l.epoch),
                  l.renewed_ago_s);
      std::printf(
          "throughput         %.1f events/s over the last minute (%lld since it took over)\n",
          l.per_second, static_cast<long long>(l.published));
    } else if (l.epoch > 0) {
      std::printf("lease              %s  free (last held by %s, expired %.0f s ago)\n",
                  l.name.c_str(), l.holder.c_str(), -l.expires_in_s);
    }
  }
  for (const CaptureStatus& c : s->captured) {
    std::printf("captured table     %s  snapshot %s (%lld rows read)\n", c.table.c_str(),
                c.snapshot_state.c_str(), static_cast<long long>(c.snapshot_rows));
  }
  for (const ProjectionStatus& p : s->projections) {
    std::printf("projection         %s  position %lld  behind %lld  updated %.1f s ago\n",
                p.name.c_str(), static_cast<long long>(p.position),
                static_cast<long long>(p.behind), p.updated_ago_s);
  }
  for (const ProjectionOffsetStatus& p : s->projection_offsets) {
    std::printf("kafka projection   %s  %s[%d]  next offset %lld\n", p.name.c_str(),
                p.topic.c_str(), p.partition, static_cast<long long>(p.next_offset));
  }
  std::vector<std::string> warnings;
  for (const HorizonBlocker& b : s->horizon_waits_on) {
    std::printf("horizon waits on   %s\n", b.ToString().c_str());
    warnings.push_back("a transaction writing " + tables.outbox + " is open (" + b.ToString() +
                       "): events committed after it wait until it ends (readers never pass "
                       "a position that may still commit)");
  }
  for (const SlotStatus& slot : s->slots) {
    if (!slot.exists) {
      std::printf("cdc slot           %s  missing\n", slot.name.c_str());
      warnings.push_back("slot " + slot.name +
                         " is gone; the next CDC relay recreates it and re-reads the un-acked "
                         "rows from the outbox");
      continue;
    }
    std::printf("cdc slot           %s  %s  confirmed %s  lag %s  retains %s of WAL\n",
                slot.name.c_str(), slot.active ? "active" : "inactive", slot.confirmed_lsn.c_str(),
                Bytes(slot.lag_bytes).c_str(), Bytes(slot.retained_bytes).c_str());
    if (slot.wal_status == "lost") {
      warnings.push_back("slot " + slot.name +
                         " was invalidated (the WAL it needed is gone); the next CDC relay "
                         "recreates it");
    } else if (!slot.active) {
      warnings.push_back("slot " + slot.name + " is inactive and retains " +
                         Bytes(slot.retained_bytes) +
                         " of WAL, growing with every write; start the relay (courier relay "
                         "--mode cdc) or drop the slot: SELECT pg_drop_replication_slot('" +
                         slot.name + "')");
    }
  }
  for (const std::string& w : warnings) std::printf("warning: %s\n", w.c_str());
  return 0;
}

}  // namespace courier::cli
