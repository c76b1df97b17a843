// The status page in a real browser: headless Chromium loads the page a metrics port serves,
// its script fetches /status.json, and the numbers the rendered page shows are the ones
// /metrics gives. A relay (PostgreSQL, the dev broker, a dead letter, a lease) and an
// `audit --every` (a file sink missing a line).
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/subprocess.h"
#include "stores/postgres_lease.h"
#include "support/fixtures.h"
#include "support/projection.h"

namespace courier::test {
namespace {

constexpr const char* kChromium = "/usr/bin/chromium";

bool HaveChromium() { return ::access(kChromium, X_OK) == 0; }

// The text inside the element whose id is `id` (up to its first child tag), or "<no #id>".
std::string ElementText(const std::string& dom, const std::string& id) {
  const size_t at = dom.find(" id=\"" + id + "\"");
  if (at == std::string::npos) return "<no #" + id + ">";
  const size_t open = dom.find('>', at);
  const size_t close = dom.find('<', open);
  if (open == std::string::npos || close == std::string::npos) return "<no #" + id + ">";
  return dom.substr(open + 1, close - open - 1);
}

// Whether the element whose id is `id` carries the `hidden` attribute.
bool Hidden(const std::string& dom, const std::string& id) {
  const size_t at = dom.find(" id=\"" + id + "\"");
  const size_t open = dom.find('>', at);
  return at != std::string::npos && dom.substr(at, open - at).find(" hidden") != std::string::npos;
}

// How many times the page's script refreshed from /status.json (its body's data-refreshes).
int Refreshes(const std::string& dom) {
  const std::string key = "data-refreshes=\"";
  const size_t at = dom.find(key);
  return at == std::string::npos ? 0 : std::atoi(dom.c_str() + at + key.size());
}

// The DOM of `url` once its script has run: headless Chromium with five seconds of virtual
// time (the page refreshes every two, so two or three times), a fresh profile each run.
// Chromium can start slowly on a loaded machine: runs again (up to `deadline`) until the page
// refreshed at least twice, so the throughput has a difference to show.
std::string RenderedDom(const std::string& url, const TempDir& dir,
                        Duration deadline = Duration(240000)) {
  const TimePoint until = Clock::Real().Now() + deadline;
  std::string dom;
  for (int attempt = 1; Clock::Real().Now() < until; ++attempt) {
    const std::string out = dir.File("dom-" + std::to_string(attempt) + ".html");
    const std::string err = dir.File("chromium-" + std::to_string(attempt) + ".log");
    auto chromium = Subprocess::Spawn(
        {kChromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--user-data-dir=" + dir.File("profile-" + std::to_string(attempt)),
         "--virtual-time-budget=5000", "--dump-dom", url},
        out, err, "", /*own_group=*/true);
    if (!chromium.ok()) {
      ADD_FAILURE() << chromium.status().ToString();
      return "";
    }
    const std::optional<int> code = chromium->Wait(Duration(180000));
    dom = ReadFile(out);
    if (code == 0 && Refreshes(dom) >= 2) return dom;
    std::fprintf(stderr, "chromium attempt %d: exit %d, %d refreshes; %s\n", attempt,
                 code.value_or(-1), Refreshes(dom), ReadFile(err).substr(0, 2000).c_str());
  }
  ADD_FAILURE() << "the page never refreshed twice in Chromium: " << dom;
  return dom;
}

// A sample's value in Prometheus text: the number after "`series` " (name and labels as
// rendered), or "<no series>".
std::string MetricValue(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return "<no " + series + ">";
  const size_t from = at + series.size() + 2;
  return text.substr(from, text.find('\n', from) - from);
}

// Every sample of /metrics has its value in /status.json's "metrics": under its name, or
// under its name and own label's value (`outbox="…"` is the scrape's, not the sample's).
void ExpectJsonHasEverySample(const std::string& metrics, const nlohmann::json& json) {
  std::stringstream lines(metrics);
  int samples = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    const double value = std::strtod(line.c_str() + space + 1, nullptr);
    const size_t brace = line.find('{');
    const std::string name = line.substr(0, std::min(brace, space));
    std::string label_value;
    const size_t comma = line.find(",", brace == std::string::npos ? space : brace);
    if (brace != std::string::npos && comma != std::string::npos && comma < space) {
      const size_t quote = line.find('"', comma);
      label_value = line.substr(quote + 1, line.find('"', quote + 1) - quote - 1);
    }
    ASSERT_TRUE(json.contains(name)) << name << " missing from " << json.dump();
    const nlohmann::json& got = label_value.empty() ? json[name] : json[name][label_value];
    ASSERT_TRUE(got.is_number()) << line << " vs " << json[name].dump();
    EXPECT_DOUBLE_EQ(got.get<double>(), value) << line;
    ++samples;
  }
  EXPECT_GT(samples, 20);
}

std::string HostName() {
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  return host;
}

TEST(StatusPage, RelayPageShowsWhatMetricsSays) {
  if (!HaveChromium()) GTEST_SKIP() << kChromium << " is missing (Debian's chromium package)";
  TestDb db = TestDb::Make(true);
  auto broker = DevBroker::Start();
  ASSERT_OK(broker);
  int64_t seq = 1;
  CommitEvents(db, 30, 3, &seq);
  // Headers that are not a JSON object: the Kafka sink refuses the event for good.
  ASSERT_OK(db.Transaction(
      {"INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload, headers)"
       " VALUES ('order', 'odd', 'Odd', '{\"seq\":0}', '[1]')"}));
  const int port = FreePort();
  const std::string log = db.dir.File("relay.log");
  auto relay = SpawnCourier(
      {"relay", "--source", db.url, "--sink", "kafka://" + (*broker)->bootstrap() + "/orders",
       "--metrics-port", std::to_string(port), "--lease", "2s"},
      log);
  ASSERT_OK(relay);
  const std::string outbox = "{outbox=\"courier_outbox\"}";
  std::string metrics;
  ASSERT_TRUE(WaitUntil(
      [&] {
        metrics = HttpGet(port, "/metrics").body;
        return db.Count("courier_outbox") == 0 && db.Count("courier_dead_letter") == 1 &&
               MetricValue(metrics, "courier_events_published_total" + outbox) == "30";
      },
      Duration(60000)))
      << metrics << ReadFile(log);

  const Got page = HttpGet(port, "/");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.body.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* external : {"src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import"}) {
    EXPECT_EQ(page.body.find(external), std::string::npos) << "no external asset: " << external;
  }
  EXPECT_EQ(HttpGet(port, "/status").body, page.body);

  const std::string dom = RenderedDom("http://127.0.0.1:" + std::to_string(port) + "/", db.dir);
  // Nothing moves any more (all delivered): what /metrics says now, the page showed.
  metrics = HttpGet(port, "/metrics").body;
  const Got status = HttpGet(port, "/status.json");
  ASSERT_EQ(status.status, 200);
  const nlohmann::json json = nlohmann::json::parse(status.body);
  ExpectJsonHasEverySample(metrics, json["metrics"]);

  EXPECT_EQ(ElementText(dom, "published"),
            MetricValue(metrics, "courier_events_published_total" + outbox));
  EXPECT_EQ(ElementText(dom, "published"), "30");
  EXPECT_EQ(ElementText(dom, "backlog"),
            MetricValue(metrics, "courier_outbox_backlog_events" + outbox));
  EXPECT_EQ(ElementText(dom, "backlog"), "0");
  EXPECT_EQ(ElementText(dom, "dead-letters"),
            MetricValue(metrics, "courier_dead_letter_rows" + outbox));
  EXPECT_EQ(ElementText(dom, "dead-letters"), "1");
  EXPECT_EQ(ElementText(dom, "dead-lettered"),
            MetricValue(metrics, "courier_dead_letters_total" + outbox));
  EXPECT_EQ(ElementText(dom, "unacked"),
            MetricValue(metrics, "courier_sink_unacked_events" + outbox));
  EXPECT_EQ(ElementText(dom, "oldest"), "0.0 s");
  EXPECT_EQ(ElementText(dom, "state"), "active");
  EXPECT_EQ(MetricValue(metrics, "courier_relay_state{outbox=\"courier_outbox\",state=\"active\"}"),
            "1");
  // No new events during the page's refreshes: 0 events/s.
  EXPECT_EQ(ElementText(dom, "rate"), "0.0");
  const std::string holder = HostName() + ":" + std::to_string(relay->pid());
  EXPECT_EQ(ElementText(dom, "lease-holder"), holder);
  EXPECT_EQ(ElementText(dom, "self"), holder);
  EXPECT_EQ(ElementText(dom, "lease"), "this relay holds the lease");
  EXPECT_EQ(ElementText(dom, "title"), "courier relay · outbox courier_outbox");
  EXPECT_FALSE(Hidden(dom, "relay"));
  EXPECT_TRUE(Hidden(dom, "slot-card")) << "a polling relay has no slot";
  EXPECT_EQ(ElementText(dom, "audit-none").rfind("no audit run", 0), 0u) << dom;
  EXPECT_EQ(ElementText(dom, "fetch-error"), "");

  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(30000)).value_or(-1), 0);
}

// A CDC relay's page also shows its slot's lag (WAL not yet confirmed), in bytes. Other tests'
// writes on the shared server move it, so only its shape is checked.
TEST(StatusPage, CdcRelayPageShowsItsSlotLag) {
  if (!HaveChromium()) GTEST_SKIP() << kChromium << " is missing (Debian's chromium package)";
  TestDb db = TestDb::Make(true);
  ASSERT_EQ(RunCourier({"migrate", "--source", db.url, "--mode", "cdc"}).exit_code, 0);
  int64_t seq = 1;
  CommitEvents(db, 20, 2, &seq);
  const int port = FreePort();
  const std::string log = db.dir.File("relay.log");
  auto relay =
      SpawnCourier({"relay", "--mode", "cdc", "--source", db.url, "--sink",
                    "file://" + db.dir.File("out.jsonl"), "--metrics-port", std::to_string(port)},
                   log);
  ASSERT_OK(relay);
  const std::string published = "courier_events_published_total{outbox=\"courier_outbox\"}";
  ASSERT_TRUE(WaitUntil([&] {
    return MetricValue(HttpGet(port, "/metrics").body, published) == "20";
  })) << ReadFile(log);

  const std::string dom = RenderedDom("http://127.0.0.1:" + std::to_string(port) + "/", db.dir);
  EXPECT_EQ(ElementText(dom, "published"), "20");
  EXPECT_FALSE(Hidden(dom, "slot-card"));
  const std::string lag = ElementText(dom, "slot-lag");
  const size_t space = lag.find(' ');
  ASSERT_NE(space, std::string::npos) << lag;
  EXPECT_EQ(lag.find_first_not_of("0123456789."), space) << lag;
  const std::string unit = lag.substr(space + 1);
  EXPECT_TRUE(unit == "B" || unit == "KiB" || unit == "MiB" || unit == "GiB") << lag;

  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(30000)).value_or(-1), 0);
}

TEST(StatusPage, AuditPageShowsTheLastResult) {
  if (!HaveChromium()) GTEST_SKIP() << kChromium << " is missing (Debian's chromium package)";
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;
  CommitEvents(db, 8, 2, &seq);
  const std::string file = db.dir.File("events.jsonl");
  const std::string sink = "file://" + file;
  CommandResult relay =
      RunCourier({"relay", "--source", db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  // The sink loses its last line: one event lost.
  std::string lines = ReadFile(file);
  lines.erase(lines.rfind('\n', lines.size() - 2) + 1);
  std::ofstream(file, std::ios::trunc) << lines;

  const int port = FreePort();
  const std::string log = db.dir.File("audit.log");
  auto audit = SpawnCourier({"audit", "--source", db.url, "--sink", sink, "--every", "1s",
                             "--metrics-port", std::to_string(port)},
                            log);
  ASSERT_OK(audit);
  std::string metrics;
  ASSERT_TRUE(WaitUntil([&] {
    metrics = HttpGet(port, "/metrics").body;
    return metrics.find("\ncourier_audit_lost ") != std::string::npos;
  })) << metrics
      << ReadFile(log);

  const std::string dom = RenderedDom("http://127.0.0.1:" + std::to_string(port) + "/", db.dir);
  // Each run finds the same: the page's numbers are /metrics's whichever run it showed.
  metrics = HttpGet(port, "/metrics").body;
  const nlohmann::json json = nlohmann::json::parse(HttpGet(port, "/status.json").body);
  EXPECT_EQ(json["kind"], "audit");
  EXPECT_EQ(json["audit"]["clean"], false);
  EXPECT_EQ(ElementText(dom, "audit-lost"), MetricValue(metrics, "courier_audit_lost"));
  EXPECT_EQ(ElementText(dom, "audit-lost"), "1");
  EXPECT_EQ(ElementText(dom, "audit-ghosts"), MetricValue(metrics, "courier_audit_ghosts"));
  EXPECT_EQ(ElementText(dom, "audit-ghosts"), "0");
  EXPECT_EQ(ElementText(dom, "audit-published"), MetricValue(metrics, "courier_audit_published"));
  EXPECT_EQ(ElementText(dom, "audit-published"), "8");
  EXPECT_EQ(ElementText(dom, "audit-stale"), "0");
  EXPECT_EQ(ElementText(dom, "audit-duplicates"), "0");
  EXPECT_EQ(ElementText(dom, "audit-verdict"), "NOT clean");
  EXPECT_EQ(ElementText(dom, "state"), "NOT clean");
  EXPECT_TRUE(Hidden(dom, "relay")) << "an audit has no relay numbers";
  EXPECT_TRUE(Hidden(dom, "audit-none"));
  EXPECT_FALSE(Hidden(dom, "audit-result"));

  audit->Signal(SIGTERM);
  EXPECT_EQ(audit->Wait(Duration(30000)).value_or(-1), 0);
}

}  // namespace
}  // namespace courier::test
