// The lab's report as a terminal table, JSON, an SVG chart and Markdown (lab/lab.h).
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lab/lab.h"

namespace courier::lab {
namespace {

std::string Fixed(double v, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Percent(const std::optional<double>& f) { return f ? Fixed(*f * 100.0, 0) + "%" : "-"; }

std::string Faults(const LabReport& report) {
  std::string out;
  for (const std::string& f : report.faults) out += (out.empty() ? "" : ", ") + f;
  return out.empty() ? "none" : out;
}

// Text for SVG and HTML.
std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// The failed commits applied to a strategy, or why there are none to apply.
std::string FailedCommits(const StrategyResult& r) {
  if (r.commit_fails_applies) return std::to_string(r.commit_fails);
  return "no failed commits (the fault does not apply: its command has no database "
         "transaction)";
}

}  // namespace

std::string FormatTable(const LabReport& report) {
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "%-24s %9s %9s %6s %6s %6s %6s %8s %8s %8s\n", "strategy",
                "committed", "delivered", "lost", "ghosts", "dups", "order", "outage", "p50 ms",
                "p99 ms");
  out << line;
  for (const StrategyResult& r : report.results) {
    if (!r.skipped.empty()) {
      std::snprintf(line, sizeof line, "%-24s skipped: %s\n", r.strategy.c_str(),
                    r.skipped.c_str());
    } else if (!r.error.empty()) {
      std::snprintf(line, sizeof line, "%-24s FAILED TO RUN\n", r.strategy.c_str());
    } else {
      const Verdict& v = r.verdict;
      std::snprintf(line, sizeof line, "%-24s %9lld %9lld %6lld %6lld %6lld %6lld %8s %8s %8s\n",
                    r.strategy.c_str(), static_cast<long long>(v.committed),
                    static_cast<long long>(v.delivered), static_cast<long long>(v.lost),
                    static_cast<long long>(v.ghosts), static_cast<long long>(v.duplicates),
                    static_cast<long long>(v.order_violations),
                    Percent(r.accepted_during_outage).c_str(), Fixed(r.latency_p50_ms, 1).c_str(),
                    Fixed(r.latency_p99_ms, 1).c_str());
    }
    out << line;
  }
  out << "\n(outage: share of the commands sent while the broker was down that the service "
         "accepted)\n\n";
  for (const StrategyResult& r : report.results) {
    if (!r.skipped.empty()) continue;
    if (!r.error.empty()) {
      out << r.strategy << ": the run failed: " << r.error << "\n";
      continue;
    }
    if (r.explanation.empty()) {
      out << r.strategy << ": nothing lost, no ghosts, order kept\n";
      continue;
    }
    for (const std::string& e : r.explanation) out << r.strategy << ": " << e << "\n";
  }
  out << "\nthe schedule (the same for every strategy; seed " << report.seed << "):\n";
  for (const std::string& line : report.schedule) out << "  " << line << "\n";
  if (report.schedule.empty()) out << "  no faults\n";
  out << "applied, per strategy: SIGKILLs of the service, of the side processes, database "
      << "restarts, failed commits:\n";
  for (const StrategyResult& r : report.results) {
    if (!r.ran()) continue;
    out << "  " << r.strategy << ": " << r.service_kills << ", " << r.side_kills << ", "
        << r.db_restarts << ", " << FailedCommits(r) << "\n";
  }
  return out.str();
}

std::string FormatJson(const LabReport& report) {
  nlohmann::json list = nlohmann::json::array();
  for (const StrategyResult& r : report.results) {
    nlohmann::json o;
    o["strategy"] = r.strategy;
    const Verdict& v = r.verdict;
    const bool ran = r.ran();
    auto count = [&](int64_t n) { return ran ? nlohmann::json(n) : nlohmann::json(nullptr); };
    o["committed"] = count(v.committed);
    o["delivered"] = count(v.delivered);
    o["lost"] = count(v.lost);
    o["ghosts"] = count(v.ghosts);
    o["duplicates"] = count(v.duplicates);
    o["order_violations"] = count(v.order_violations);
    o["accepted_during_outage"] = ran && r.accepted_during_outage
                                      ? nlohmann::json(*r.accepted_during_outage)
                                      : nlohmann::json(nullptr);
    o["latency_p50_ms"] = ran ? nlohmann::json(r.latency_p50_ms) : nlohmann::json(nullptr);
    o["latency_p99_ms"] = ran ? nlohmann::json(r.latency_p99_ms) : nlohmann::json(nullptr);
    if (!r.skipped.empty()) o["skipped"] = r.skipped;
    if (!r.error.empty()) o["error"] = r.error;
    if (ran) {
      o["commands"] = r.commands;
      o["accepted"] = r.accepted;
      o["faults"] = {{"service_kills", r.service_kills},
                     {"side_kills", r.side_kills},
                     {"db_restarts", r.db_restarts},
                     {"commit_fails", r.commit_fails},
                     {"outage_commands", r.outage_commands}};
      o["explanation"] = r.explanation;
    }
    list.push_back(std::move(o));
  }
  return list.dump(2) + "\n";
}

std::string FormatSvg(const LabReport& report) {
  std::vector<const StrategyResult*> ran;
  for (const StrategyResult& r : report.results) {
    if (r.ran()) ran.push_back(&r);
  }
  int64_t top = 1;
  for (const StrategyResult* r : ran) {
    top = std::max({top, r->verdict.lost, r->verdict.ghosts, r->verdict.duplicates});
  }
  const int group = 130, bar = 22, left = 60, plot_h = 240, base = 40 + plot_h;
  const int width =
      std::max(640, left + group * static_cast<int>(std::max<size_t>(1, ran.size())) + 20);
  const int height = base + 110;
  const char* colors[] = {"#d62728", "#9467bd", "#ff7f0e", "#2ca02c"};
  const char* labels[] = {
      "lost", "ghosts", "duplicates",
      "accepted during the broker outage (share of the commands; 100% = top of the axis)"};
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\">courier lab: " << report.commands
      << " commands per strategy; faults: " << Escape(Faults(report)) << "</text>\n";
  // The count axis: 0 and top; the outage bars use the same height as a fraction of 100%.
  svg << "<line x1=\"" << left << "\" y1=\"40\" x2=\"" << left << "\" y2=\"" << base
      << "\" stroke=\"#333\"/>\n<line x1=\"" << left << "\" y1=\"" << base << "\" x2=\""
      << width - 10 << "\" y2=\"" << base << "\" stroke=\"#333\"/>\n"
      << "<text x=\"" << left - 6 << "\" y=\"" << base << "\" text-anchor=\"end\">0</text>\n"
      << "<text x=\"" << left - 6 << "\" y=\"44\" text-anchor=\"end\">" << top << "</text>\n"
      << "<text x=\"" << left - 6 << "\" y=\"56\" text-anchor=\"end\">100%</text>\n";
  for (size_t i = 0; i < ran.size(); ++i) {
    const StrategyResult& r = *ran[i];
    const double values[] = {
        static_cast<double>(r.verdict.lost) / top, static_cast<double>(r.verdict.ghosts) / top,
        static_cast<double>(r.verdict.duplicates) / top, r.accepted_during_outage.value_or(0)};
    const std::string texts[] = {std::to_string(r.verdict.lost), std::to_string(r.verdict.ghosts),
                                 std::to_string(r.verdict.duplicates),
                                 Percent(r.accepted_during_outage)};
    const int x0 = left + 10 + group * static_cast<int>(i);
    for (int k = 0; k < 4; ++k) {
      const int h = static_cast<int>(values[k] * plot_h);
      const int x = x0 + k * (bar + 2);
      svg << "<rect x=\"" << x << "\" y=\"" << base - h << "\" width=\"" << bar << "\" height=\""
          << h << "\" fill=\"" << colors[k] << "\"><title>" << Escape(r.strategy) << ": "
          << labels[k] << " " << texts[k] << "</title></rect>\n"
          << "<text x=\"" << x + bar / 2 << "\" y=\"" << base - h - 3
          << "\" text-anchor=\"middle\" font-size=\"9\">" << Escape(texts[k]) << "</text>\n";
    }
    svg << "<text x=\"" << x0 + 2 * (bar + 2) << "\" y=\"" << base + 14
        << "\" text-anchor=\"middle\" font-size=\"10\">" << Escape(r.strategy) << "</text>\n";
  }
  for (int k = 0; k < 4; ++k) {
    const int y = base + 40 + 16 * k;
    svg << "<rect x=\"" << left << "\" y=\"" << y - 10 << "\" width=\"12\" height=\"12\" fill=\""
        << colors[k] << "\"/><text x=\"" << left + 18 << "\" y=\"" << y << "\">" << labels[k]
        << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

std::string FormatMarkdown(const LabReport& report, const std::string& command_line,
                           const std::string& chart) {
  std::ostringstream md;
  md << "<!-- Generated by `" << command_line << "`; do not edit by hand: run it again. -->\n"
     << "# The dual-write strategies under the same faults\n\n"
     << "`courier lab` runs one orders workload (" << report.commands
     << " commands: orders created and updated, some of whose COMMIT fails) against each way of "
        "writing an order and its event, in a service process of its own, under one fault "
        "schedule: "
     << Faults(report)
     << ". It then compares what the strategy's source of truth committed with what its topic "
        "holds (the verdict of `src/audit/verdict.h`, shared with `courier audit`).\n\n"
     << "To regenerate this page: `" << command_line
     << "` (the numbers change a little from run to run: crashes "
        "land where the schedule says, but what was in flight at that moment varies).\n\n"
     << "## The fault schedule\n\n";
  for (const std::string& line : report.schedule) md << "- " << line << "\n";
  if (report.schedule.empty()) md << "- no faults\n";
  md << "\nA crash falls where the strategy's code reaches that point; a strategy that refused "
        "the command before it (the broker down) does not crash there.\n\n"
     << "## Results\n\n"
     << "| strategy | committed | delivered | lost | ghosts | duplicates | order violations | "
        "accepted during outage | p50 ms | p99 ms |\n"
     << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const StrategyResult& r : report.results) {
    if (!r.ran()) {
      md << "| " << r.strategy << " | " << (r.skipped.empty() ? "failed: " + r.error : r.skipped)
         << " ||||||||\n";
      continue;
    }
    const Verdict& v = r.verdict;
    md << "| " << r.strategy << " | " << v.committed << " | " << v.delivered << " | " << v.lost
       << " | " << v.ghosts << " | " << v.duplicates << " | " << v.order_violations << " | "
       << Percent(r.accepted_during_outage) << " | " << Fixed(r.latency_p50_ms, 1) << " | "
       << Fixed(r.latency_p99_ms, 1) << " |\n";
  }
  if (!chart.empty())
    md << "\n![lost, ghosts, duplicates and accepted during the outage](" << chart << ")\n";
  md << "\n*accepted during outage*: the share of the commands sent while the broker was down "
        "(those whose COMMIT fails left out) that the service accepted. *p50/p99*: a command's "
        "round trip as the lab saw it, accepted commands only.\n\n";
  md << "## What each one did\n\n";
  for (const StrategyResult& r : report.results) {
    std::string summary = r.summary;
    if (!summary.empty()) summary[0] = static_cast<char>(std::toupper(summary[0]));
    md << "### " << r.strategy << "\n\n" << summary << ".\n\n";
    if (!r.skipped.empty()) {
      md << "Not run: " << r.skipped << ".\n\n";
      continue;
    }
    if (!r.error.empty()) {
      md << "The run failed: " << r.error << "\n\n";
      continue;
    }
    if (r.explanation.empty()) md << "- nothing lost, no ghosts, order kept\n";
    for (const std::string& e : r.explanation) md << "- " << e << "\n";
    md << "- faults applied: " << r.service_kills << " service SIGKILLs, " << r.side_kills
       << " side-process SIGKILLs, " << r.db_restarts << " database restarts, "
       << (r.commit_fails_applies ? std::to_string(r.commit_fails) + " failed commits"
                                  : FailedCommits(r))
       << "\n\n";
  }
  return md.str();
}

}  // namespace courier::lab
