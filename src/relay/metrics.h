// Prometheus text exposition of a relay: its own counters and latency histogram, and the
// outbox's backlog, oldest pending event, dead letters and CDC slot lag as read from the
// database at scrape time.
//
// Thread-safety: pure function.
#pragma once

#include <string>

#include "courier/relay.h"
#include "relay/status_report.h"

namespace courier {

// `outbox` labels every series; `status` is null when the database could not be read
// (courier_outbox_status_up 0 then).
std::string RenderMetrics(const RelayStats& stats, const OutboxStatus* status,
                          const std::string& outbox);

const char* StateName(RelayStats::State state);

}  // namespace courier
