#include "cli/project_http.h"

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/config.h"
#include "core/log.h"
#include "core/postgres.h"
#include "eventstore/projection_wait.h"
#include "relay/metrics.h"
#include "relay/status_report.h"

namespace courier::cli {
namespace {

// A /wait (or any request) longer than this is refused: each holds a thread and a
// connection to the database.
constexpr std::chrono::minutes kLongestWait{10};

HttpResponse Text(int status, std::string line) {
  return {status, "text/plain; charset=utf-8", log::Scrub(std::move(line)) + "\n"};
}

// A whole decimal integer >= 0, or an error naming the parameter.
Result<int64_t> Whole(const HttpRequest& r, const std::string& key) {
  const auto it = r.query.find(key);
  if (it == r.query.end()) return InvalidArgumentError("missing " + key + "=N");
  int64_t v = 0;
  const std::string& text = it->second;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return InvalidArgumentError(key + " must be a whole number, not '" + text + "'");
  }
  if (v < 0) return InvalidArgumentError(key + " must be >= 0, not " + text);
  return v;
}

HttpResponse Wait(const HttpRequest& r, const ProjectionServer& s) {
  const ProjectionOptions& o = *s.options;
  const std::set<std::string> allowed =
      s.event_store ? std::set<std::string>{"position", "timeout"}
                    : std::set<std::string>{"topic", "partition", "offset", "timeout"};
  const std::string usage = s.event_store
                                ? "/wait?position=N[&timeout=5s] (an event-store projection)"
                                : "/wait?[topic=T&]partition=P&offset=O[&timeout=5s] (a "
                                  "Kafka-sourced projection)";
  for (const auto& [key, value] : r.query) {
    if (allowed.count(key) == 0) return Text(400, "unknown parameter '" + key + "': " + usage);
  }
  std::chrono::milliseconds timeout{5000};
  if (auto t = r.query.find("timeout"); t != r.query.end()) {
    auto parsed = ParseDuration(t->second);
    if (!parsed.ok()) return Text(400, "timeout: " + parsed.status().message());
    if (*parsed > kLongestWait) return Text(400, "timeout must be at most 10m");
    timeout = *parsed;
  }
  nlohmann::json answer = {{"name", o.name}};
  Result<int64_t> at = 0;
  if (s.event_store) {
    auto position = Whole(r, "position");
    if (!position.ok()) return Text(400, position.status().message() + ": " + usage);
    at = WaitForEventPosition(o.db_url, o.name, *position, timeout, o.events_table, s.stop);
    if (at.ok()) answer["position"] = *at;
  } else {
    auto partition = Whole(r, "partition");
    auto offset = Whole(r, "offset");
    if (!partition.ok()) return Text(400, partition.status().message() + ": " + usage);
    if (!offset.ok()) return Text(400, offset.status().message() + ": " + usage);
    if (*partition > INT32_MAX) return Text(400, "partition is too large");
    const auto topic = r.query.find("topic");
    const std::string t = topic != r.query.end() ? topic->second : "";
    at = WaitForOffset(o.db_url, o.name, t, static_cast<int32_t>(*partition), *offset, timeout,
                       o.offsets_table, s.stop);
    if (at.ok()) {
      if (!t.empty()) answer["topic"] = t;
      answer["partition"] = *partition;
      answer["offset"] = *at;  // the last one applied
    }
  }
  if (at.ok()) return {200, "application/json", answer.dump() + "\n"};
  switch (at.status().code()) {
    case StatusCode::kRetriable:
      return Text(504, at.status().message());
    case StatusCode::kInvalidArgument:
      return Text(400, at.status().message());
    default:
      return Text(503, at.status().message());
  }
}

std::string Sample(const std::string& name, const std::string& labels, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  return name + "{" + labels + "} " + buf + "\n";
}

std::string Head(const char* name, const char* type, const char* help) {
  return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

HttpResponse Metrics(const ProjectionServer& s) {
  const ProjectionOptions& o = *s.options;
  const std::string label = "projection=\"" + EscapeLabelValue(o.name) + "\"";
  std::string out = Head("courier_projection_events_applied_total", "counter",
                         "Events this process applied (committed with the checkpoint).") +
                    Sample("courier_projection_events_applied_total", label,
                           static_cast<double>(s.projection->applied()));
  // Where the checkpoint is, read from the database at scrape time.
  std::string checkpoint;
  bool up = false;
  if (auto conn = PgConnect(o.db_url); conn.ok()) {
    if (s.event_store) {
      auto rows = ReadProjectionStatus(conn->get(), o.events_table);
      if (rows.ok()) {
        up = true;
        for (const ProjectionStatus& p : *rows) {
          if (p.name != o.name) continue;
          checkpoint +=
              Head("courier_projection_position", "gauge",
                   "The last event-store position the projection applied.") +
              Sample("courier_projection_position", label, static_cast<double>(p.position)) +
              Head("courier_projection_lag_events", "gauge",
                   "The store's newest position minus the projection's.") +
              Sample("courier_projection_lag_events", label, static_cast<double>(p.behind)) +
              Head("courier_projection_checkpoint_age_seconds", "gauge",
                   "Time since the projection's checkpoint last moved.") +
              Sample("courier_projection_checkpoint_age_seconds", label, p.updated_ago_s);
        }
      }
    } else {
      auto rows = ReadProjectionOffsetStatus(conn->get(), o.offsets_table);
      if (rows.ok()) {
        up = true;
        std::string samples;
        for (const ProjectionOffsetStatus& p : *rows) {
          if (p.name != o.name) continue;
          samples += Sample("courier_projection_next_offset",
                            label + ",topic=\"" + EscapeLabelValue(p.topic) + "\",partition=\"" +
                                std::to_string(p.partition) + "\"",
                            static_cast<double>(p.next_offset));
        }
        if (!samples.empty()) {
          checkpoint = Head("courier_projection_next_offset", "gauge",
                            "The next offset of a partition the projection will apply.") +
                       samples;
        }
      }
    }
  }
  out += Head("courier_projection_status_up", "gauge",
              "1 when the checkpoint could be read from the database at this scrape.") +
         Sample("courier_projection_status_up", label, up ? 1 : 0) + checkpoint;
  return {200, "text/plain; version=0.0.4; charset=utf-8", out};
}

}  // namespace

HttpResponse ServeProjection(const HttpRequest& r, const ProjectionServer& s) {
  if (r.path == "/wait") return Wait(r, s);
  if (r.path == "/metrics") return Metrics(s);
  if (r.path == "/healthz") return Text(200, "ok");
  return Text(404, "try /wait, /metrics or /healthz");
}

}  // namespace courier::cli
