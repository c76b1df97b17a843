// `courier audit`: what the database says was published against what the sink holds
// (audit/audit.h); --repair publishes the lost events again and audits once more; --every
// runs it periodically with the last result in /metrics.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "cli/commands.h"
#include "core/http_endpoint.h"
#include "core/log.h"
#include "core/url.h"
#include "relay/metrics.h"
#include "relay/status_page.h"

namespace courier::cli {
namespace {

nlohmann::json ReportJson(const AuditReport& r) {
  const Verdict& v = r.verdict;
  return {{"truth", r.truth},
          {"sink", r.sink},
          {"read_from", r.read_from},
          {"published", r.published},
          {"pending", r.pending},
          {"read", r.read},
          {"before_window", r.before_window},
          {"after_truth", r.after_truth},
          {"delivered", v.delivered},
          {"lost", v.lost_ids},
          {"ghosts", v.ghost_ids},
          {"stale", r.stale},
          {"duplicates", v.duplicate_ids},
          {"order_violations", v.order_violation_ids},
          {"notes", r.notes},
          {"clean", r.Clean()}};
}

void PrintIds(const char* what, const std::vector<std::string>& ids) {
  for (const std::string& id : ids) std::printf("  %s %s\n", what, id.c_str());
}

void PrintReport(const AuditReport& r) {
  const Verdict& v = r.verdict;
  std::printf("audit of %s against %s\n", r.truth.c_str(), r.sink.c_str());
  for (const std::string& from : r.read_from) std::printf("  read %s\n", from.c_str());
  std::printf("  published (the database's truth)  %10lld\n", static_cast<long long>(r.published));
  std::printf("  not published yet (not judged)    %10lld\n", static_cast<long long>(r.pending));
  std::printf("  messages read from the sink       %10lld\n", static_cast<long long>(r.read));
  if (r.before_window > 0) {
    std::printf("  older than the window (not judged)%10lld\n",
                static_cast<long long>(r.before_window));
  }
  if (r.after_truth > 0) {
    std::printf("  committed after the truth was read%10lld  (not judged)\n",
                static_cast<long long>(r.after_truth));
  }
  std::printf("  delivered                         %10lld\n", static_cast<long long>(v.delivered));
  std::printf("  lost (published, not in the sink) %10lld\n", static_cast<long long>(v.lost));
  std::printf("  ghosts (in the sink, never there) %10lld\n", static_cast<long long>(v.ghosts));
  std::printf("  duplicates (same event_id)        %10zu\n", v.duplicate_ids.size());
  std::printf("  order violations (per aggregate)  %10lld\n",
              static_cast<long long>(v.order_violations));
  PrintIds("lost", v.lost_ids);
  PrintIds("ghost", v.ghost_ids);
  PrintIds("stale", r.stale);
  PrintIds("duplicate", v.duplicate_ids);
  PrintIds("out of order", v.order_violation_ids);
  for (const std::string& note : r.notes) std::printf("  note: %s\n", note.c_str());
  std::printf("%s\n", r.Clean() ? "clean" : "NOT clean");
}

// The last result of `audit --every`, for /metrics, /status.json and the status page (read on
// the endpoint's thread).
class AuditGauges {
 public:
  void Record(const AuditReport& r) {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = r;
    has_last_ = true;
    last_run_ = std::time(nullptr);
    ++runs_;
  }
  void Failed() {
    std::lock_guard<std::mutex> lock(mu_);
    ++failures_;
  }
  // The series /metrics renders and /status.json carries (one snapshot under the lock).
  std::vector<MetricFamily> Collect() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<MetricFamily> out;
    auto add = [&out](const char* name, const char* type, const char* help, double value) {
      out.push_back({name, type, help, {{name, "", "", value}}});
    };
    if (has_last_) {
      const Verdict& v = last_.verdict;
      add("courier_audit_published", "gauge", "Events the truth says were published (last audit)",
          static_cast<double>(last_.published));
      add("courier_audit_lost", "gauge", "Published events not in the sink (last audit)",
          static_cast<double>(v.lost));
      add("courier_audit_ghosts", "gauge", "Events in the sink the truth never had (last audit)",
          static_cast<double>(v.ghosts));
      add("courier_audit_stale", "gauge", "Cache or search keys whose value differs (last audit)",
          static_cast<double>(last_.stale.size()));
      add("courier_audit_duplicates", "gauge", "Event ids found more than once (last audit)",
          static_cast<double>(v.duplicate_ids.size()));
      add("courier_audit_order_violations", "gauge", "Events behind a newer one of their aggregate",
          static_cast<double>(v.order_violations));
      add("courier_audit_last_run_timestamp_seconds", "gauge", "When the last audit finished",
          static_cast<double>(last_run_));
    }
    add("courier_audit_runs_total", "counter", "Audits finished", static_cast<double>(runs_));
    add("courier_audit_failures_total", "counter", "Audits that could not run (a server away)",
        static_cast<double>(failures_));
    return out;
  }
  // /status.json for the status page (relay/status_page.h): {"kind": "audit", "time",
  // "audit": {"truth", "sink", "clean"} of the last audit (null before the first), "metrics"}.
  std::string StatusJson() const {
    const std::vector<MetricFamily> families = Collect();
    nlohmann::json audit = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (has_last_) {
        audit = {{"truth", last_.truth}, {"sink", last_.sink}, {"clean", last_.Clean()}};
      }
    }
    const nlohmann::json j = {{"kind", "audit"},
                              {"time", UnixNow()},
                              {"audit", std::move(audit)},
                              {"metrics", MetricsJson(families)}};
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }

 private:
  mutable std::mutex mu_;
  AuditReport last_;          // guarded by mu_
  bool has_last_ = false;     // guarded by mu_
  std::time_t last_run_ = 0;  // guarded by mu_
  long long runs_ = 0;        // guarded by mu_
  long long failures_ = 0;    // guarded by mu_
};

// One audit (and, with --repair, the repair and the second audit), printed; the exit code.
int AuditOnce(const AuditFlags& f, AuditGauges* gauges) {
  auto first = RunAudit(f.options, StopRequest());
  if (!first.ok()) {
    if (gauges != nullptr && first.status().code() != StatusCode::kInvalidArgument &&
        first.status().code() != StatusCode::kNotFound) {
      gauges->Failed();
    }
    return Fail(first.status());
  }
  if (!f.repair) {
    if (gauges != nullptr) gauges->Record(*first);
    if (f.json) {
      std::printf("%s\n", ReportJson(*first).dump().c_str());
    } else {
      PrintReport(*first);
    }
    std::fflush(stdout);
    return first->Clean() ? 0 : kExitFailure;
  }
  if (!f.json) PrintReport(*first);
  const bool cache = IsCacheSink(f.options.sink_url);
  std::vector<std::string> fixed = first->verdict.lost_ids;
  Result<int64_t> repaired = int64_t{0};
  if (cache) {
    // A cache is rewritten key by key: lost and stale keys get their row, ghosts are deleted.
    int64_t n = 0;
    auto fixing = RunCacheAudit(f.options, /*repair=*/true, &n);
    repaired = fixing.ok() ? Result<int64_t>(n) : Result<int64_t>(fixing.status());
    fixed.insert(fixed.end(), first->stale.begin(), first->stale.end());
    fixed.insert(fixed.end(), first->verdict.ghost_ids.begin(), first->verdict.ghost_ids.end());
  } else {
    repaired = RepublishEvents(f.options, fixed, StopRequest());
  }
  if (!repaired.ok()) return Fail(repaired.status().WithContext("repair"));
  if (cache && !f.json) {
    std::printf("repair: wrote or deleted %lld key(s) of %s\n", static_cast<long long>(*repaired),
                first->sink.c_str());
  } else if (!f.json) {
    std::printf("repair: published %lld lost event(s) again through %s, each with its event_id\n",
                static_cast<long long>(*repaired), first->sink.c_str());
    if (!first->verdict.ghost_ids.empty()) {
      std::printf(
          "repair: %zu ghost(s) stay: a log (Kafka, Redis Streams, NATS, a file) cannot delete "
          "a message; consumers must skip their event ids\n",
          first->verdict.ghost_ids.size());
    }
  }
  auto second = RunAudit(f.options, StopRequest());
  if (!second.ok()) return Fail(second.status().WithContext("audit after the repair"));
  if (gauges != nullptr) gauges->Record(*second);
  if (f.json) {
    nlohmann::json j = ReportJson(*second);
    j["repaired"] = fixed;
    j["before_repair"] = ReportJson(*first);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("after the repair:\n");
    PrintReport(*second);
  }
  std::fflush(stdout);
  return second->Clean() ? 0 : kExitFailure;
}

}  // namespace

CLI::App* AddAuditCommand(CLI::App& app, AuditFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "audit",
      "Compare what the database says was published with what the sink holds.\n"
      "The truth: an outbox the relay keeps (courier relay --retain stamps published_at)\n"
      "  or an event store (--event-store); rows not published yet are not judged.\n"
      "The sink: the relay's --sink URL, templates and all (kafka://host:port/{aggregate_type}\n"
      "  is read topic by topic, for every aggregate type of the truth; redis://, nats://\n"
      "  and file:// too), read to its end one message at a time. A redis-cache:// sink is\n"
      "  compared with the rows of the --capture tables it mirrors (lost, stale, ghost keys).\n"
      "Reports, with event ids: lost (published, not in the sink), ghosts (in the sink, never\n"
      "  committed), duplicates (one event_id more than once), order violations (an event\n"
      "  after a newer one of its aggregate). docs/audit.md.\n"
      "  courier audit --source postgres://app@127.0.0.1/app \\\n"
      "                --sink 'kafka://127.0.0.1:9092/{aggregate_type}' --json\n"
      "Exit codes: 0 clean (duplicates allowed: delivery is at least once); 1 something lost,\n"
      "  a ghost or out of order, or a server away; 2 bad input.");
  AddSourceOption(cmd, &f->options.source_url);
  cmd->add_option("--sink", f->options.sink_url, "The relay's sink URL")
      ->type_name("URL")
      ->required();
  cmd->add_option("--table", f->options.tables.outbox,
                  "The outbox (or with --event-store the event store) table")
      ->type_name("NAME")
      ->capture_default_str();
  AddEventStoreOption(cmd, &f->event_store);
  AddCaptureOption(cmd, &f->options.capture);
  cmd->add_option("--since", f->options.since,
                  "Judge only events created at or after this time ('2026-11-27 04:00:00+00')")
      ->type_name("TIME");
  cmd->add_flag("--json", f->json,
                "One JSON object: lost, ghosts, stale, duplicates, order_violations (lists of "
                "event ids or keys), counts and clean");
  cmd->add_flag("--repair", f->repair,
                "Publish the lost events again through the sink (original event_id and "
                "envelope), then audit again; ghosts in a log cannot be deleted");
  cmd->add_option("--every", f->every,
                  "Audit again every DURATION until stopped; the last result in /metrics")
      ->type_name("DURATION");
  cmd->add_option("--metrics-port", f->metrics_port,
                  "With --every: serve /metrics (courier_audit_lost, ..._ghosts, ..._stale, "
                  "..._duplicates, ..._last_run_timestamp_seconds), a status page at / with "
                  "the last result and its /status.json on this port (0: off)")
      ->type_name("PORT")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--metrics-host", f->metrics_host, "Address to serve /metrics on")
      ->type_name("HOST")
      ->capture_default_str();
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunAuditCommand(AuditFlags& f) {
  UseEventStore(f.event_store, &f.options.tables);
  if (f.every.empty()) {
    if (f.metrics_port > 0) return Fail(InvalidArgumentError("--metrics-port needs --every"));
    return AuditOnce(f, nullptr);
  }
  Duration every{0};
  if (Status st = ParseFlagDuration("--every", f.every, &every); !st.ok()) return Fail(st);
  if (every.count() <= 0) return Fail(InvalidArgumentError("--every must be longer than 0"));
  AuditGauges gauges;
  std::unique_ptr<HttpEndpoint> endpoint;
  if (f.metrics_port > 0) {
    auto started =
        HttpEndpoint::Start(f.metrics_host, f.metrics_port, [&gauges](const std::string& path) {
          if (path == "/metrics") {
            return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                                RenderPrometheus(gauges.Collect(), "")};
          }
          if (path == "/status.json") {
            return HttpResponse{200, "application/json", gauges.StatusJson()};
          }
          if (path == "/" || path == "/status") {
            return HttpResponse{200, "text/html; charset=utf-8", StatusPageHtml()};
          }
          return HttpResponse{404, "text/plain; charset=utf-8",
                              "try / (the status page), /status.json or /metrics\n"};
        });
    if (!started.ok()) return Fail(started.status());
    endpoint = std::move(started).value();
    log::Info("serving the status page, /status.json and /metrics",
              {{"address", f.metrics_host + ":" + std::to_string(endpoint->port())}});
  }
  while (!StopRequest().requested()) {
    const int code = AuditOnce(f, &gauges);
    // Bad input does not get better by waiting.
    if (code == kExitUsage) return code;
    Clock::Real().SleepFor(every, StopRequest());
  }
  return 0;
}

}  // namespace courier::cli
