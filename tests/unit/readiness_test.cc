#include <gtest/gtest.h>

#include "relay/metrics.h"
#include "relay/status_page.h"

namespace courier {
namespace {

using std::chrono::seconds;

const auto kNow = std::chrono::steady_clock::time_point(std::chrono::hours(1));
constexpr std::chrono::milliseconds kAckTimeout{30000};

RelayStats Active() {
  RelayStats s;
  s.state = RelayStats::State::kActive;
  return s;
}

TEST(Readiness, ActiveAndStandbyAreReady) {
  Readiness r = CheckReadiness(Active(), kNow, kAckTimeout, "kafka://b/t");
  EXPECT_EQ(r.http_status, 200);
  EXPECT_EQ(r.body, "active\n");
  RelayStats standby;
  standby.state = RelayStats::State::kStandby;
  r = CheckReadiness(standby, kNow, kAckTimeout, "kafka://b/t");
  EXPECT_EQ(r.http_status, 200);
  EXPECT_EQ(r.body, "standby\n");
}

TEST(Readiness, RetryingStartingAndStoppedAreNotReady) {
  RelayStats s;
  s.state = RelayStats::State::kRetrying;
  s.last_error = "cannot connect to redis 127.0.0.1:1: Connection refused";
  Readiness r = CheckReadiness(s, kNow, kAckTimeout, "redis://h/s");
  EXPECT_EQ(r.http_status, 503);
  EXPECT_EQ(r.body, "retrying: cannot connect to redis 127.0.0.1:1: Connection refused\n");
  s = RelayStats();
  EXPECT_EQ(CheckReadiness(s, kNow, kAckTimeout, "x").body, "starting\n");
  EXPECT_EQ(CheckReadiness(s, kNow, kAckTimeout, "x").http_status, 503);
  s.state = RelayStats::State::kStopped;
  EXPECT_EQ(CheckReadiness(s, kNow, kAckTimeout, "x").http_status, 503);
}

// Events that wait for their acks are normal for a while (a batch in flight), not for longer
// than the threshold.
TEST(Readiness, EventsWaitingLongerThanTheAckTimeoutMakeItUnready) {
  RelayStats s = Active();
  s.awaiting_ack = 10;
  s.awaiting_since = kNow - seconds(29);
  EXPECT_EQ(CheckReadiness(s, kNow, kAckTimeout, "kafka://b/t").http_status, 200);
  s.awaiting_since = kNow - seconds(42);
  Readiness r = CheckReadiness(s, kNow, kAckTimeout, "kafka://b/t");
  EXPECT_EQ(r.http_status, 503);
  EXPECT_EQ(r.body, "not acking: 10 events sent to kafka://b/t 42 s ago are not acked yet\n");
  s.awaiting_ack = 0;  // answered
  EXPECT_EQ(CheckReadiness(s, kNow, kAckTimeout, "kafka://b/t").http_status, 200);
}

}  // namespace
}  // namespace courier

namespace courier {
namespace {

// Each captured table's published changes and lag, labelled with its schema.table like the
// snapshot series (which need the database, read at scrape time).
TEST(Metrics, EachCapturedTableHasItsEventsAndLag) {
  RelayStats s;
  s.captured["public.items"] = {4, 0.25};
  s.captured["sales.orders"] = {7, 1.5};
  const std::string text = RenderMetrics(s, nullptr, "courier_outbox");
  for (const char* line :
       {"courier_capture_events_total{outbox=\"courier_outbox\",table=\"public.items\"} 4\n",
        "courier_capture_events_total{outbox=\"courier_outbox\",table=\"sales.orders\"} 7\n",
        "courier_capture_lag_seconds{outbox=\"courier_outbox\",table=\"public.items\"} 0.25\n",
        "courier_capture_lag_seconds{outbox=\"courier_outbox\",table=\"sales.orders\"} 1.5\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
  EXPECT_EQ(RenderMetrics(RelayStats{}, nullptr, "o").find("courier_capture_"), std::string::npos)
      << "no capture series without captured tables";
}

// /status.json's "metrics" and /metrics come from one list of samples: each value under its
// name, or under its name and its own label's value.
TEST(Metrics, StatusJsonHoldsTheSamplesOfMetrics) {
  RelayStats s;
  s.state = RelayStats::State::kStandby;
  s.published = 12;
  s.captured["public.items"] = {4, 0.25};
  OutboxStatus status;
  status.pending = 3;
  status.oldest_pending_age_s = 1.5;
  status.dead_letters = 2;
  status.slots.push_back({.name = "slot\"a", .lag_bytes = 2048});
  const std::vector<MetricFamily> families = CollectMetrics(s, &status);
  const nlohmann::json j = MetricsJson(families);
  EXPECT_EQ(j["courier_events_published_total"], 12);
  EXPECT_EQ(j["courier_outbox_backlog_events"], 3);
  EXPECT_EQ(j["courier_outbox_oldest_pending_seconds"], 1.5);
  EXPECT_EQ(j["courier_dead_letter_rows"], 2);
  EXPECT_EQ(j["courier_relay_state"]["standby"], 1);
  EXPECT_EQ(j["courier_relay_state"]["active"], 0);
  EXPECT_EQ(j["courier_cdc_slot_lag_bytes"]["slot\"a"], 2048);
  EXPECT_EQ(j["courier_capture_events_total"]["public.items"], 4);
  EXPECT_EQ(j["courier_commit_to_ack_seconds_bucket"]["+Inf"], 0);
  const std::string text = RenderPrometheus(families, "outbox=\"o\"");
  EXPECT_NE(text.find("courier_cdc_slot_lag_bytes{outbox=\"o\",slot=\"slot\\\"a\"} 2048\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("courier_outbox_backlog_events{outbox=\"o\"} 3\n"), std::string::npos);
  EXPECT_EQ(RenderPrometheus({{"x", "gauge", "X.", {{"x", "", "", 7}}}}, ""),
            "# HELP x X.\n# TYPE x gauge\nx 7\n")
      << "no braces without labels";
}

}  // namespace
}  // namespace courier
