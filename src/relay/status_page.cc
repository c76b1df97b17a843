#include "relay/status_page.h"

#include <chrono>

#include "core/log.h"

namespace courier {
namespace {

// Every number is set with textContent (never as markup): an outbox name, a holder or an
// error quoted by the database cannot inject anything. Counts are shown as plain integers,
// as /metrics has them.
constexpr const char* kPage = R"html(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>courier status</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em;
         padding: 0 1em; color: #1d2329; background: #f7f8fa; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1em; margin: 1.2em 0 .4em; color: #56606b; text-transform: uppercase;
       letter-spacing: .05em; }
  .sub { color: #56606b; margin: 0 0 1em; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(11em, 1fr)); gap: .6em; }
  .card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: .6em .8em; }
  .card .k { color: #56606b; font-size: .85em; }
  .card .v { font-size: 1.6em; font-variant-numeric: tabular-nums; }
  .card .u { color: #56606b; font-size: .85em; }
  .bad { color: #b3261e; }
  .good { color: #1e7b34; }
  #error, #fetch-error { color: #b3261e; white-space: pre-wrap; }
  code { background: #eceff3; padding: 0 .25em; border-radius: 3px; }
  [hidden] { display: none !important; }
</style>
</head>
<body data-refreshes="0">
<h1 id="title">courier</h1>
<p class="sub">state <b id="state">—</b> · updated <span id="updated">never</span>
  <span id="fetch-error"></span></p>
<p id="error"></p>

<section id="relay" hidden>
<h2>Delivery</h2>
<div class="grid">
  <div class="card"><div class="k">throughput</div><div class="v" id="rate">—</div>
    <div class="u">events/s since the last refresh</div></div>
  <div class="card"><div class="k">published</div><div class="v" id="published">—</div>
    <div class="u">by this process</div></div>
  <div class="card"><div class="k">backlog</div><div class="v" id="backlog">—</div>
    <div class="u">committed, not yet published</div></div>
  <div class="card"><div class="k">lag</div><div class="v" id="oldest">—</div>
    <div class="u">age of the oldest pending event</div></div>
  <div class="card" id="slot-card" hidden><div class="k">CDC slot lag</div>
    <div class="v" id="slot-lag">—</div><div class="u">WAL not yet confirmed</div></div>
  <div class="card"><div class="k">awaiting acks</div><div class="v" id="unacked">—</div>
    <div class="u">handed to the sink</div></div>
  <div class="card"><div class="k">dead letters</div><div class="v" id="dead-letters">—</div>
    <div class="u">rows of this outbox</div></div>
  <div class="card"><div class="k">parked here</div><div class="v" id="dead-lettered">—</div>
    <div class="u">by this process</div></div>
  <div class="card"><div class="k">retries</div><div class="v" id="retries">—</div>
    <div class="u">failed attempts retried</div></div>
</div>
<h2>Lease</h2>
<p><span id="lease">—</span></p>
<p class="sub">holder <code id="lease-holder">—</code> · this process <code id="self">—</code></p>
</section>

<section id="audit">
<h2>Last audit</h2>
<p id="audit-none">no audit run by this process: <code>courier audit --every D --metrics-port N</code>
  serves this page with its last result.</p>
<div id="audit-result" hidden>
<p><b id="audit-verdict">—</b> <span id="audit-what"></span></p>
<div class="grid">
  <div class="card"><div class="k">published (truth)</div><div class="v" id="audit-published">—</div></div>
  <div class="card"><div class="k">lost</div><div class="v" id="audit-lost">—</div></div>
  <div class="card"><div class="k">ghosts</div><div class="v" id="audit-ghosts">—</div></div>
  <div class="card"><div class="k">stale</div><div class="v" id="audit-stale">—</div></div>
  <div class="card"><div class="k">duplicates</div><div class="v" id="audit-duplicates">—</div></div>
  <div class="card"><div class="k">order violations</div><div class="v" id="audit-order">—</div></div>
  <div class="card"><div class="k">runs / failed</div><div class="v"><span id="audit-runs">—</span>
    / <span id="audit-failures">—</span></div></div>
</div>
<p class="sub">finished <span id="audit-last-run">—</span></p>
</div>
</section>

<script>
"use strict";
let previous = null;  // {published, time} of the last refresh: the rate is their difference
const $ = (id) => document.getElementById(id);
const set = (id, text) => { $(id).textContent = text; };
const count = (v) => (typeof v === "number" ? String(Math.round(v)) : "—");
function seconds(v) {
  if (typeof v !== "number") return "—";
  return v < 10 ? v.toFixed(1) + " s" : v < 5400 ? Math.round(v) + " s" : (v / 3600).toFixed(1) + " h";
}
function bytes(v) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; ++i; }
  return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
}
function when(unix) {
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}
function sum(byLabel) {
  return Object.values(byLabel).reduce((a, b) => a + b, 0);
}

function renderRelay(j, m) {
  $("relay").hidden = false;
  document.title = "courier relay · " + j.outbox;
  set("title", "courier relay · outbox " + j.outbox);
  const published = m.courier_events_published_total;
  if (previous !== null && j.time > previous.time && published >= previous.published) {
    const rate = (published - previous.published) / (j.time - previous.time);
    set("rate", rate < 10 ? rate.toFixed(1) : String(Math.round(rate)));
  }
  previous = { published: published, time: j.time };
  set("published", count(published));
  set("backlog", count(m.courier_outbox_backlog_events));
  set("oldest", seconds(m.courier_outbox_oldest_pending_seconds));
  const slots = m.courier_cdc_slot_lag_bytes;
  $("slot-card").hidden = slots === undefined;
  if (slots !== undefined) set("slot-lag", bytes(sum(slots)));
  set("unacked", count(m.courier_sink_unacked_events));
  set("dead-letters", count(m.courier_dead_letter_rows));
  $("dead-letters").className = "v" + (m.courier_dead_letter_rows > 0 ? " bad" : "");
  set("dead-lettered", count(m.courier_dead_letters_total));
  set("retries", count(m.courier_retries_total));
  set("self", j.holder);
  const live = (j.leases || []).filter((l) => l.live);
  const holders = live.map((l) => l.holder);
  // SQLite has no lease rows: the active relay holds the database's lock.
  const shown = holders.length ? holders : j.state === "active" ? [j.holder] : [];
  set("lease-holder", shown.length ? shown.join(", ") : "—");
  if (j.state === "active") {
    set("lease", "this relay holds the lease" + (live.length ? "" : " (the outbox's lock)"));
  } else if (j.state === "standby") {
    set("lease", holders.length ? "standing by: another relay holds the lease"
                                : "standing by: waiting for the lease");
  } else {
    set("lease", holders.length ? "not active here; held by " + holders.join(", ")
                                : "not active here; no live holder");
  }
  if (m.courier_outbox_status_up === 0) set("error", "the database could not be read: " +
      "backlog, lag and dead letters are missing" + (j.last_error ? "\n" + j.last_error : ""));
  else set("error", j.last_error || "");
}

function renderAudit(j, m) {
  if (j.kind === "audit") {
    document.title = "courier audit";
    set("title", "courier audit" + (j.audit ? " · " + j.audit.sink : ""));
    set("state", j.audit ? (j.audit.clean ? "clean" : "NOT clean") : "no audit finished yet");
  }
  if (!j.audit) return;
  $("audit-none").hidden = true;
  $("audit-result").hidden = false;
  set("audit-verdict", j.audit.clean ? "clean" : "NOT clean");
  $("audit-verdict").className = j.audit.clean ? "good" : "bad";
  set("audit-what", "of " + j.audit.truth + " against " + j.audit.sink);
  set("audit-published", count(m.courier_audit_published));
  set("audit-lost", count(m.courier_audit_lost));
  set("audit-ghosts", count(m.courier_audit_ghosts));
  set("audit-stale", count(m.courier_audit_stale));
  set("audit-duplicates", count(m.courier_audit_duplicates));
  set("audit-order", count(m.courier_audit_order_violations));
  set("audit-runs", count(m.courier_audit_runs_total));
  set("audit-failures", count(m.courier_audit_failures_total));
  set("audit-last-run", typeof m.courier_audit_last_run_timestamp_seconds === "number"
      ? when(m.courier_audit_last_run_timestamp_seconds) : "—");
}

async function refresh() {
  try {
    const r = await fetch("status.json", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const j = await r.json();
    const m = j.metrics || {};
    if (j.kind === "relay") {
      set("state", j.state);
      $("state").className = j.state === "active" || j.state === "standby" ? "good" : "bad";
      renderRelay(j, m);
    }
    renderAudit(j, m);
    set("updated", when(j.time));
    set("fetch-error", "");
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
  } catch (e) {
    set("fetch-error", "· cannot read status.json: " + e.message);
  } finally {
    setTimeout(refresh, 2000);
  }
}
refresh();
</script>
</body>
</html>
)html";

}  // namespace

const std::string& StatusPageHtml() {
  static const std::string page = kPage;
  return page;
}

nlohmann::json MetricsJson(const std::vector<MetricFamily>& families) {
  nlohmann::json out = nlohmann::json::object();
  for (const MetricFamily& f : families) {
    for (const MetricSample& m : f.samples) {
      if (m.label.empty()) {
        out[m.name] = m.value;
      } else {
        out[m.name][m.label_value] = m.value;
      }
    }
  }
  return out;
}

double UnixNow() {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return static_cast<double>(ms.count()) / 1000.0;
}

std::string RelayStatusJson(const std::vector<MetricFamily>& families, const RelayStats& stats,
                            const OutboxStatus* status, const std::string& outbox,
                            const std::string& holder) {
  nlohmann::json leases = nlohmann::json::array();
  if (status != nullptr) {
    for (const LeaseStatus& l : status->leases) {
      leases.push_back({{"name", l.name},
                        {"holder", l.holder},
                        {"epoch", l.epoch},
                        {"live", l.live},
                        {"expires_in_s", l.expires_in_s}});
    }
  }
  const nlohmann::json j = {{"kind", "relay"},
                            {"time", UnixNow()},
                            {"outbox", outbox},
                            {"state", StateName(stats.state)},
                            {"last_error", log::Scrub(stats.last_error)},
                            {"holder", holder},
                            {"leases", std::move(leases)},
                            {"audit", nullptr},
                            {"metrics", MetricsJson(families)}};
  // Replaced, not refused: an error quoting bytes that are not UTF-8 still shows.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace courier
