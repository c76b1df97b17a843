// Prometheus text exposition of a relay: its own counters and latency histogram, and the
// outbox's backlog, oldest pending event, dead letters and CDC slot lag as read from the
// database at scrape time.
//
// Thread-safety: pure functions.
#pragma once

#include <chrono>
#include <string>

#include "courier/relay.h"
#include "relay/status_report.h"

namespace courier {

// `outbox` labels every series; `status` is null when the database could not be read
// (courier_outbox_status_up 0 then).
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
