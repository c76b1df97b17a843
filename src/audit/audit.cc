// `courier audit`'s comparison (audit/audit.h): the truth is streamed from the database in key
// order, page by page, into the verdict's Expectation; the sink is streamed through its readers
// into a StreamingJudge, one message at a time.
#include "audit/audit.h"

#include <sys/stat.h>

#include <cerrno>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include "audit/truth.h"
#include "brokers/reader.h"
#include "brokers/registry.h"
#include "brokers/sink.h"
#include "core/encoding.h"
#include "core/url.h"

namespace courier {
namespace {

// The schemes whose sinks are read back as logs (each message kept: lost, ghosts, duplicates
// and order can be judged).
bool IsLogScheme(const std::string& scheme) {
  return scheme == "kafka" || scheme == "redis" || scheme == "nats" || scheme == "nats+tls" ||
         scheme == "file";
}

// `url` with its path (topic, stream, subject) replaced by `path`; its query kept.
std::string WithPath(const std::string& url, const std::string& path) {
  const size_t hosts = url.find("://");
  if (hosts == std::string::npos) return url;
  const size_t start = url.find_first_of("/?#", hosts + 3);
  if (start == std::string::npos) return url + "/" + path;
  const size_t end = url[start] == '/' ? url.find_first_of("?#", start) : start;
  return url.substr(0, start) + "/" + path + (end == std::string::npos ? "" : url.substr(end));
}

// The URLs to read: for a log broker one per topic (stream, subject) the sink's template routes
// the truth's events to; for a file, the file.
Result<std::vector<std::string>> SinkTargets(
    const std::string& sink_url, const std::set<std::pair<std::string, std::string>>& types) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(sink_url));
  if (!IsLogScheme(url.scheme)) {
    const bool known = FindBroker(url.scheme) != nullptr;
    return InvalidArgumentError(
        "audit reads kafka://, redis://, nats:// and file:// sinks back (and redis-cache:// "
        "against --capture), not " +
        (known ? "'" + url.scheme + "://'" : "the unknown scheme '" + url.scheme + "'") +
        " (docs/audit.md)");
  }
  if (url.scheme == "file") {
    COURIER_ASSIGN_OR_RETURN(const std::string path, FileSinkPath(sink_url));
    // A file that is not there (yet, or for a moment while it is rotated) is no bad input: the
    // audit could not run, and `--every` tries again. A directory reads as an empty file.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
      return RetriableError("the file sink " + path +
                            " does not exist: nothing to read (the relay creates it when it "
                            "starts)");
    }
    if (S_ISDIR(st.st_mode)) {
      return InvalidArgumentError("cannot read " + path +
                                  ": it is a directory; name the sink's file "
                                  "(file:///absolute/path.jsonl)");
    }
    return std::vector<std::string>{sink_url};
  }
  // The relay's default route (cli/cmd_relay.cc): the aggregate type.
  const std::string tmpl = url.path.empty() ? "{aggregate_type}" : url.path;
  std::set<std::string> topics;
  for (const auto& [aggregate_type, event_type] : types) {
    Event e;
    e.aggregate_type = aggregate_type;
    e.event_type = event_type;
    topics.insert(ExpandTemplate(tmpl, e));
  }
  std::vector<std::string> urls;
  for (const std::string& topic : topics) urls.push_back(WithPath(sink_url, topic));
  return urls;
}

// What the judge keeps of the truth: the verdict's expectation and each event's order key.
struct Truth {
  Expectation expected;
  std::unordered_map<std::string, int64_t> seq;
  std::set<std::pair<std::string, std::string>> types;  // (aggregate_type, event_type)
  int64_t window_start_us = 0;                          // 0: every message is judged
};

// One message as the judge takes it: its event id (or, when it has none, where it was) and
// its aggregate.
struct Read {
  std::string event_id;
  std::string aggregate;
  int64_t created_at_us = 0;
};

// `line_number` counts a file's lines from 1: a line that is no event, or one without an
// event_id, is named by its place (path:line, or the broker's topic/partition/offset), which
// makes each such message a ghost of its own.
Read ReadOf(const Message& m, bool file, int64_t line_number) {
  const std::string place = file || m.where.empty()
                                ? m.topic + ":" + std::to_string(file ? line_number : m.offset)
                                : m.where;
  Event e;
  if (file) {
    auto parsed = EventFromJsonLine(m.line);
    if (!parsed.ok()) return {place, "", 0};
    e = std::move(parsed).value();
  } else {
    e = m.event;
  }
  if (e.event_id.empty()) return {place, "", 0};
  return {e.event_id, e.aggregate_type + "/" + e.aggregate_id, e.created_at_us};
}

bool Blank(const std::string& line) { return line.find_first_not_of(" \t\r") == std::string::npos; }

// A relay that keeps publishing while the audit runs puts events in the sink that were
// committed after the truth was read: not in the truth, they were judged ghosts. Each ghost the
// table holds now is such an event and is not judged: it leaves the ghosts (and the duplicates,
// `deliveries` being how many times each was read) and is counted in after_truth.
Status DropLateArrivals(TruthReader& reader, const std::map<std::string, int64_t>& deliveries,
                        AuditReport* report) {
  Verdict& v = report->verdict;
  if (v.ghost_ids.empty()) return Status::Ok();
  COURIER_ASSIGN_OR_RETURN(const std::set<std::string> late, reader.Present(v.ghost_ids));
  if (late.empty()) return Status::Ok();
  auto is_late = [&late](const std::string& id) { return late.count(id) > 0; };
  std::erase_if(v.ghost_ids, is_late);
  v.ghosts = static_cast<int64_t>(v.ghost_ids.size());
  std::erase_if(v.duplicate_ids, is_late);
  for (const std::string& id : late) {
    auto n = deliveries.find(id);
    if (n != deliveries.end() && n->second > 1) v.duplicates -= n->second - 1;
  }
  std::erase_if(v.examples, [&late](const std::string& line) {
    if (line.rfind("ghost ", 0) != 0) return false;
    const size_t end = line.find(' ', 6);
    return late.count(line.substr(6, end == std::string::npos ? end : end - 6)) > 0;
  });
  report->after_truth = static_cast<int64_t>(late.size());
  return Status::Ok();
}

}  // namespace

Result<AuditReport> RunAudit(const AuditOptions& options, const StopSignal& stop) {
  if (IsCacheSink(options.sink_url)) {
    int64_t repaired = 0;
    return RunCacheAudit(options, /*repair=*/false, &repaired);
  }
  AuditReport report;
  report.sink = RedactUrl(options.sink_url);
  // The sink URL first: a wrong one is said before the database is read.
  COURIER_ASSIGN_OR_RETURN(Url sink_url, ParseUrl(options.sink_url));
  COURIER_RETURN_IF_ERROR(SinkTargets(options.sink_url, {}).status());
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<TruthReader> reader, OpenTruth(options));
  report.truth = reader->Describe();

  Truth truth;
  int64_t oldest_us = 0;
  bool any_row = false;        // in the table, window or not
  bool any_published = false;  // likewise
  Status st = reader->ForEach([&](const TruthEvent& t) {
    any_row = true;
    any_published = any_published || t.published;
    if (oldest_us == 0 || (t.created_at_us > 0 && t.created_at_us < oldest_us)) {
      oldest_us = t.created_at_us;
    }
    if (reader->since_us() > 0 && t.created_at_us < reader->since_us()) return;
    truth.types.emplace(t.aggregate_type, t.event_type);
    truth.seq.emplace(t.event_id, t.seq);
    if (t.published) {
      truth.expected.committed.insert(t.event_id);
      ++report.published;
    } else {
      truth.expected.in_doubt.insert(t.event_id);
      ++report.pending;
    }
  });
  COURIER_RETURN_IF_ERROR(st);
  if (!any_published) {
    // Not an error: nothing published yet is a result (a window with nothing in it, a new
    // outbox), but one whose reason the reader should know.
    report.notes.push_back(
        options.tables.event_store()
            ? "no event of " + report.truth +
                  " has been published (published_at, stamped by courier relay --event-store "
                  "after the sink's ack)"
            : "no row of " + report.truth +
                  " has been published (published_at): a relay without --retain deletes each "
                  "row once published, leaving no record to compare with; audit an outbox the "
                  "relay keeps (courier relay --retain) or an event store (--event-store)");
  }
  // Events are judged from the window's start: --since, or for an outbox the oldest row it
  // still has (older ones were deleted after --retention, so their messages are no ghosts), or
  // when it has none, the time the truth was read. An event store deletes nothing.
  truth.window_start_us = reader->since_us() > 0         ? reader->since_us()
                          : options.tables.event_store() ? 0
                          : any_row                      ? oldest_us
                                                         : reader->opened_at_us();
  // Kafka keeps milliseconds of the event's time.
  const int64_t window_ms_us = truth.window_start_us / 1000 * 1000;

  COURIER_ASSIGN_OR_RETURN(std::vector<std::string> targets,
                           SinkTargets(options.sink_url, truth.types));
  StreamingJudge judge(truth.expected);
  // How many times each event the truth does not have was read (the ghosts, until looked up).
  std::map<std::string, int64_t> unknown;
  for (const std::string& target : targets) {
    if (stop.requested()) return CancelledError("audit stopped");
    report.read_from.push_back(RedactUrl(target));
    auto made =
        MakeReader(ReaderOptions{.url = target, .from_beginning = true, .to_end = true}, "audit");
    if (!made.ok() && made.status().code() == StatusCode::kNotFound && sink_url.scheme == "kafka") {
      // Nothing was ever published there: its events are lost, not an error of the input.
      COURIER_ASSIGN_OR_RETURN(Url missing, ParseUrl(target));
      report.notes.push_back("no topic " + missing.path +
                             " on the broker: every event routed "
                             "there is lost");
      continue;
    }
    if (!made.ok()) return made.status();
    std::unique_ptr<Reader> sink = std::move(made).value();
    auto judge_one = [&](const Read& r, const std::string& topic) {
      ++report.read;
      if (r.created_at_us > 0 && r.created_at_us < window_ms_us) {
        ++report.before_window;
        return;
      }
      auto seq = truth.seq.find(r.event_id);
      if (seq == truth.seq.end()) ++unknown[r.event_id];
      // A broker orders each topic (stream, subject) on its own, not one against another: with
      // several, order is judged per topic and aggregate (a template routing one aggregate's
      // events by {event_type}).
      judge.Add(DeliveredRecord{r.event_id,
                                targets.size() > 1 ? r.aggregate + " in " + topic : r.aggregate,
                                seq == truth.seq.end() ? int64_t{-1} : seq->second});
    };
    const bool file = sink_url.scheme == "file";
    int64_t line = 0;
    // A file's blank lines, judged (as ghosts) only when a line follows them: blank lines at
    // the end of a file (an editor's last newline) are nothing.
    std::vector<Read> blanks;
    while (!stop.requested()) {
      COURIER_ASSIGN_OR_RETURN(std::optional<Message> m, sink->Next(options.quiet));
      if (!m.has_value()) break;
      ++line;
      const Read r = ReadOf(*m, file, line);
      if (file && Blank(m->line)) {
        blanks.push_back(r);
        continue;
      }
      for (const Read& blank : blanks) judge_one(blank, m->topic);
      blanks.clear();
      judge_one(r, m->topic);
    }
  }
  if (stop.requested()) return CancelledError("audit stopped");
  report.verdict = judge.Finish();
  COURIER_RETURN_IF_ERROR(DropLateArrivals(*reader, unknown, &report));
  return report;
}

Result<int64_t> RepublishEvents(const AuditOptions& options,
                                const std::vector<std::string>& event_ids, const StopSignal& stop) {
  if (event_ids.empty()) return int64_t{0};
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<TruthReader> reader, OpenTruth(options));
  COURIER_ASSIGN_OR_RETURN(std::vector<Event> events, reader->Events(event_ids));
  // The relay's sink, made from the same URL by the same registry. No transactional id: the
  // running relay's producer must not be fenced by this one.
  COURIER_ASSIGN_OR_RETURN(
      std::unique_ptr<Sink> sink,
      MakeSink(SinkOptions{.url = options.sink_url, .delivery_timeout = Duration(30000)}));
  COURIER_RETURN_IF_ERROR(sink->Open());
  constexpr size_t kBatch = 500;
  int64_t acked = 0;
  for (size_t start = 0; start < events.size(); start += kBatch) {
    const size_t n = std::min(kBatch, events.size() - start);
    std::span<const Event> batch(events.data() + start, n);
    const std::vector<Status> results = sink->Publish(batch, stop);
    for (size_t i = 0; i < results.size(); ++i) {
      if (!results[i].ok()) {
        return results[i].WithContext("republished " + std::to_string(acked) + " of " +
                                      std::to_string(events.size()) + "; event " +
                                      batch[i].event_id);
      }
      ++acked;
    }
  }
  return acked;
}

}  // namespace courier
