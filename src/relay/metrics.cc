#include "relay/metrics.h"

#include <cstdio>

namespace courier {

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

namespace {

// Builds the families of one scrape in order.
class Collector {
 public:
  void Head(const char* name, const char* type, const char* help) {
    families_.push_back({name, type, help, {}});
  }
  // A sample of the family last begun.
  void Sample(std::string name, double value, std::string label = "",
              std::string label_value = "") {
    families_.back().samples.push_back(
        {std::move(name), std::move(label), std::move(label_value), value});
  }
  void One(const char* name, const char* type, const char* help, double value) {
    Head(name, type, help);
    Sample(name, value);
  }
  std::vector<MetricFamily> Take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
};

}  // namespace

std::string RenderPrometheus(const std::vector<MetricFamily>& families, const std::string& labels) {
  std::string out;
  for (const MetricFamily& f : families) {
    out += "# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
    for (const MetricSample& m : f.samples) {
      std::string all = labels;
      if (!m.label.empty()) {
        all += (all.empty() ? "" : ",") + m.label + "=\"" + EscapeLabelValue(m.label_value) + "\"";
      }
      char value[64];
      std::snprintf(value, sizeof value, "%.17g", m.value);
      out += m.name + (all.empty() ? "" : "{" + all + "}") + " " + value + "\n";
    }
  }
  return out;
}

const char* StateName(RelayStats::State state) {
  switch (state) {
    case RelayStats::State::kStarting:
      return "starting";
    case RelayStats::State::kStandby:
      return "standby";
    case RelayStats::State::kActive:
      return "active";
    case RelayStats::State::kRetrying:
      return "retrying";
    case RelayStats::State::kStopped:
      return "stopped";
  }
  return "unknown";
}

Readiness CheckReadiness(const RelayStats& s, std::chrono::steady_clock::time_point now,
                         std::chrono::milliseconds ack_timeout, const std::string& sink) {
  Readiness r;
  std::string state = StateName(s.state);
  if (s.state == RelayStats::State::kActive || s.state == RelayStats::State::kStandby) {
    r.http_status = 200;
  }
  const auto waited = now - s.awaiting_since;
  if (s.awaiting_ack > 0 && waited >= ack_timeout) {
    r.http_status = 503;
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(waited).count();
    r.body = "not acking: " + std::to_string(s.awaiting_ack) + " events sent to " + sink + " " +
             std::to_string(secs) + " s ago are not acked yet";
    if (!s.last_error.empty()) r.body += "; last error: " + s.last_error;
    r.body += "\n";
    return r;
  }
  r.body = state + (s.last_error.empty() ? "" : ": " + s.last_error) + "\n";
  return r;
}

std::string RenderMetrics(const RelayStats& stats, const OutboxStatus* status,
                          const std::string& outbox) {
  return RenderPrometheus(CollectMetrics(stats, status),
                          "outbox=\"" + EscapeLabelValue(outbox) + "\"");
}

std::vector<MetricFamily> CollectMetrics(const RelayStats& s, const OutboxStatus* status) {
  Collector w;
  w.One("courier_events_published_total", "counter",
        "Events acked by the sink and checkpointed by this process.",
        static_cast<double>(s.published));
  w.One("courier_events_republished_total", "counter",
        "Dead letters published again (retried or released) and acked.",
        static_cast<double>(s.republished));
  w.One("courier_dead_letters_total", "counter",
        "Events this process moved to the dead-letter table as refused for good.",
        static_cast<double>(s.dead_lettered));
  w.One("courier_events_held_total", "counter",
        "Events moved to the dead-letter table behind a parked event of their aggregate.",
        static_cast<double>(s.held));
  w.One("courier_retries_total", "counter", "Failed attempts that were retried.",
        static_cast<double>(s.retries));
  w.One("courier_sink_unacked_events", "gauge",
        "Events handed to the sink that have not been answered yet.",
        static_cast<double>(s.awaiting_ack));
  w.Head("courier_relay_state", "gauge",
         "1 for the relay's current state: starting, standby, active, retrying, stopped.");
  for (auto st :
       {RelayStats::State::kStarting, RelayStats::State::kStandby, RelayStats::State::kActive,
        RelayStats::State::kRetrying, RelayStats::State::kStopped}) {
    w.Sample("courier_relay_state", st == s.state ? 1 : 0, "state", StateName(st));
  }
  w.Head("courier_commit_to_ack_seconds", "histogram",
         "Time from an event's created_at to the sink's ack.");
  for (size_t b = 0; b < RelayStats::kLatencyBuckets.size(); ++b) {
    char le[32];
    std::snprintf(le, sizeof le, "%g", RelayStats::kLatencyBuckets[b]);
    w.Sample("courier_commit_to_ack_seconds_bucket", static_cast<double>(s.latency_buckets[b]),
             "le", le);
  }
  w.Sample("courier_commit_to_ack_seconds_bucket", static_cast<double>(s.latency_count), "le",
           "+Inf");
  w.Sample("courier_commit_to_ack_seconds_sum", s.latency_sum_s);
  w.Sample("courier_commit_to_ack_seconds_count", static_cast<double>(s.latency_count));
  w.One("courier_outbox_status_up", "gauge",
        "1 when the outbox's backlog could be read from the database at this scrape.",
        status != nullptr ? 1 : 0);
  if (!s.captured.empty()) {
    w.Head("courier_capture_events_total", "counter",
           "Changes of a captured table published (acked by the sink and checkpointed).");
    for (const auto& [table, t] : s.captured) {
      w.Sample("courier_capture_events_total", static_cast<double>(t.published), "table", table);
    }
    w.Head("courier_capture_lag_seconds", "gauge",
           "Commit to sink ack of the last published change of a captured table.");
    for (const auto& [table, t] : s.captured) {
      w.Sample("courier_capture_lag_seconds", t.last_lag_s, "table", table);
    }
  }
  if (status != nullptr) {
    w.One("courier_outbox_backlog_events", "gauge", "Committed events not yet published.",
          static_cast<double>(status->pending));
    w.One("courier_outbox_oldest_pending_seconds", "gauge",
          "Age of the oldest unpublished event (0 when none).", status->oldest_pending_age_s);
    w.One("courier_dead_letter_rows", "gauge",
          "Dead letters of this outbox (its rows in the dead-letter table).",
          static_cast<double>(status->dead_letters));
    if (!status->captured.empty()) {
      w.Head("courier_capture_snapshot_rows", "gauge",
             "Rows of a captured table read by its snapshot or backfill so far.");
      for (const CaptureStatus& c : status->captured) {
        w.Sample("courier_capture_snapshot_rows", static_cast<double>(c.snapshot_rows), "table",
                 c.table);
      }
      w.Head("courier_capture_snapshot_done", "gauge",
             "1 once a captured table's snapshot or backfill is done.");
      for (const CaptureStatus& c : status->captured) {
        w.Sample("courier_capture_snapshot_done", c.snapshot_state == "done" ? 1 : 0, "table",
                 c.table);
      }
    }
    if (!status->slots.empty()) {
      w.Head("courier_cdc_slot_lag_bytes", "gauge",
             "WAL written since the slot's confirmed position.");
      for (const SlotStatus& slot : status->slots) {
        w.Sample("courier_cdc_slot_lag_bytes", static_cast<double>(slot.lag_bytes), "slot",
                 slot.name);
      }
      w.Head("courier_cdc_slot_retained_bytes", "gauge", "WAL the server keeps for the slot.");
      for (const SlotStatus& slot : status->slots) {
        w.Sample("courier_cdc_slot_retained_bytes", static_cast<double>(slot.retained_bytes),
                 "slot", slot.name);
      }
    }
  }
  return w.Take();
}

}  // namespace courier
