// The status page a metrics port serves at / and /status: one HTML document with its CSS and
// script inline (no other request than its own /status.json), which shows the process's live
// numbers and refreshes itself from /status.json every two seconds. /status.json carries the
// same series /metrics renders (MetricsJson of the same MetricFamily list, relay/metrics.h),
// so the page and a Prometheus scrape cannot disagree.
//
// The same page serves `courier relay` (throughput, lag, backlog, dead letters, lease) and
// `courier audit --every` (its last result): it shows what the JSON's "kind" says it has.
//
// Thread-safety: pure functions; StatusPageHtml returns a constant.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "courier/relay.h"
#include "relay/metrics.h"
#include "relay/status_report.h"

namespace courier {

const std::string& StatusPageHtml();

// {"name": value} for a sample without a label of its own, {"name": {"label value": value}}
// for one with (courier_relay_state by state, courier_cdc_slot_lag_bytes by slot, a
// histogram's _bucket by le, ...).
nlohmann::json MetricsJson(const std::vector<MetricFamily>& families);

// Seconds since the epoch, with milliseconds: /status.json's "time", from which the page
// computes rates.
double UnixNow();

// The relay's /status.json: {"kind": "relay", "time", "outbox", "state", "last_error",
// "holder" (this process's lease holder name), "leases" (PostgreSQL: each lease of the outbox
// with its holder and whether it is live), "audit": null, "metrics": MetricsJson(families)}.
// `families` is CollectMetrics(stats, status); `status` is null when the database could not
// be read. The error is scrubbed of secrets.
std::string RelayStatusJson(const std::vector<MetricFamily>& families, const RelayStats& stats,
                            const OutboxStatus* status, const std::string& outbox,
                            const std::string& holder);

}  // namespace courier
