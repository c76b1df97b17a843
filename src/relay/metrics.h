// Prometheus text exposition of a relay: its own counters and latency histogram, and the
// outbox's backlog, oldest pending event, dead letters and CDC slot lag as read from the
// database at scrape time.
//
// Thread-safety: pure functions.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "courier/relay.h"
#include "relay/status_report.h"

namespace courier {

// One sample of a scrape: at most one label of its own (`state`, `slot`, `table`, `le`)
// beside those every sample of the scrape carries.
struct MetricSample {
  std::string name;
  std::string label;        // empty: none
  std::string label_value;  // unescaped
  double value = 0;
};
struct MetricFamily {
  std::string name;
  std::string type;  // counter, gauge, histogram
  std::string help;
  std::vector<MetricSample> samples;
};

// The relay's series at one scrape: /metrics renders them as Prometheus text, /status.json
// (relay/status_page.h) as JSON, so the two cannot disagree. `status` is null when the
// database could not be read (courier_outbox_status_up 0 then, and no outbox series).
std::vector<MetricFamily> CollectMetrics(const RelayStats& stats, const OutboxStatus* status);

// Prometheus text of `families`; `labels` (already escaped, e.g. `outbox="x"`; may be empty)
// go on every sample before its own label.
std::string RenderPrometheus(const std::vector<MetricFamily>& families, const std::string& labels);

// RenderPrometheus(CollectMetrics(stats, status), `outbox="<outbox>"`).
std::string RenderMetrics(const RelayStats& stats, const OutboxStatus* status,
                          const std::string& outbox);

const char* StateName(RelayStats::State state);

// A Prometheus label value escaped for the text format (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& v);

// What /readyz answers: 200 while the relay is active or standing by; 503 while it is
// starting, stopped or retrying a failure (database or sink), and while events handed to the
// sink have waited longer than `ack_timeout` for their acks (a broker that is away, with
// no delivery timeout, fails nothing: it just never acks). The body names the state and why.
struct Readiness {
  int http_status = 503;
  std::string body;
};
Readiness CheckReadiness(const RelayStats& stats, std::chrono::steady_clock::time_point now,
                         std::chrono::milliseconds ack_timeout, const std::string& sink);

}  // namespace courier
