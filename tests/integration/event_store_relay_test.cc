// `courier relay --event-store` and `courier status --event-store` against real PostgreSQL,
// the dev broker (read back by an independent Kafka reader) and the JSONL file sink.
#include <nlohmann/json.hpp>
#include <thread>

#include "courier/event_store.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

std::string EventStoreDb() {
  auto url = SharedPostgres().NewDatabase();
  EXPECT_OK(url);
  EXPECT_OK(Migrate(*url, EventStoreTables()));
  return url.ok() ? *url : "";
}

// Appends one event per call (kAny) in its own transaction; returns it.
AppendedEvent AppendOne(PGconn* conn, const std::string& stream_id, int n) {
  EventStore store;
  EXPECT_OK(PgRun(conn, "BEGIN"));
  auto appended = store.Append(conn, "account", stream_id, kAny,
                               {NewEvent{.event_type = "FundsDeposited",
                                         .payload = "{\"seq\": " + std::to_string(n) + "}",
                                         .headers = {{"trace_id", "t" + std::to_string(n)}}}});
  EXPECT_OK(appended);
  EXPECT_OK(PgRun(conn, "COMMIT"));
  return appended.ok() ? appended->events[0] : AppendedEvent{};
}

std::string HeaderOf(const Event& e, const std::string& key) {
  for (const auto& [k, v] : e.headers) {
    if (k == key) return v;
  }
  return "";
}

TEST(EventStoreRelay, PublishesInPositionOrderWithTheEnvelopeAndStampsPublishedAt) {
  const std::string url = EventStoreDb();
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 1));
  auto conn = PgConnect(url);
  ASSERT_OK(conn);
  std::vector<AppendedEvent> appended;
  for (int i = 0; i < 30; ++i)
    appended.push_back(AppendOne(conn->get(), "acct-" + std::to_string(i % 3), i));

  CommandResult run =
      RunCourier({"relay", "--event-store", "--source", url, "--sink",
                  "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}", "--once"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "account");
  ASSERT_EQ(records.size(), appended.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const Event& e = records[i].event;
    SCOPED_TRACE(i);
    EXPECT_EQ(e.event_id, appended[i].event_id);  // one partition: position order
    EXPECT_EQ(e.aggregate_type, "account");
    EXPECT_EQ(e.aggregate_id, "acct-" + std::to_string(i % 3));
    EXPECT_EQ(e.event_type, "FundsDeposited");
    EXPECT_EQ(e.payload, "{\"seq\": " + std::to_string(i) + "}");
    EXPECT_EQ(HeaderOf(e, "version"), std::to_string(appended[i].version));
    EXPECT_EQ(HeaderOf(e, "position"), std::to_string(appended[i].position));
    EXPECT_EQ(HeaderOf(e, "trace_id"), "t" + std::to_string(i));
  }
  auto counts = PgQuery(url, "SELECT count(*) || '/' || count(published_at) FROM courier_events");
  ASSERT_OK(counts);
  EXPECT_EQ((*counts)[0], "30/30") << "every event kept, every one stamped";

  // Nothing is published twice: a second run finds nothing to do.
  run = RunCourier({"relay", "--event-store", "--source", url, "--sink",
                    "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}", "--once"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(ReadTopic(**broker, "account").size(), appended.size());

  CommandResult status = RunCourier({"status", "--event-store", "--source", url});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("event store        courier_events"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("unpublished events 0"), std::string::npos) << status.out;
}

// The relay never publishes past a position whose transaction is still open; once it commits
// both go out in position order. `courier status` names the open transaction meanwhile.
TEST(EventStoreRelay, WaitsForALowerPositionStillOpen) {
  const std::string url = EventStoreDb();
  TempDir dir;
  const std::string out = dir.File("events.jsonl");
  auto slow = PgConnect(url);
  auto fast = PgConnect(url);
  ASSERT_OK(slow);
  ASSERT_OK(fast);
  EventStore store;
  ASSERT_OK(PgRun(slow->get(), "BEGIN"));
  auto low = store.Append(slow->get(), "account", "slow", kNoStream,
                          {NewEvent{.event_type = "Opened", .payload = "{}"}});
  ASSERT_OK(low);
  const AppendedEvent high = AppendOne(fast->get(), "fast", 1);
  ASSERT_GT(high.position, low->events[0].position);

  RelayOptions o = TestRelayOptions(url, "file://" + out);
  o.outbox_table = "courier_events";
  o.outbox_format = RelayOptions::OutboxFormat::kEventStore;
  auto relay = Relay::Create(o);
  ASSERT_OK(relay);
  std::thread runner([&] { EXPECT_OK((*relay)->Run()); });
  // The relay is up and polling (its lease taken) while the low position is open...
  ASSERT_TRUE(WaitUntil([&] { return (*relay)->stats().state == RelayStats::State::kActive; },
                        Duration(30000)));
  // ...and for a dozen polls after, the later event stays unpublished.
  const TimePoint until = Clock::Real().Now() + Duration(600);
  while (Clock::Real().Now() < until) {
    ASSERT_EQ(store.ReadStream(fast->get(), "account", "fast").value().size(), 1u);
    auto stamped =
        PgQuery(url, "SELECT count(*) FROM courier_events WHERE published_at IS NOT NULL");
    ASSERT_OK(stamped);
    ASSERT_EQ((*stamped)[0], "0") << "published past an open lower position";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // `courier status` names the writer once it has been open for more than a second.
  nlohmann::json json;
  ASSERT_TRUE(WaitUntil(
      [&] {
        CommandResult status = RunCourier({"status", "--event-store", "--source", url, "--json"});
        if (status.exit_code != 0) return false;
        json = nlohmann::json::parse(status.out);
        return !json["horizon_waits_on"].empty();
      },
      Duration(20000)));
  EXPECT_EQ(json["pending"], 1);  // the open one is not visible yet
  ASSERT_EQ(json["horizon_waits_on"].size(), 1u) << json.dump();
  EXPECT_EQ(json["horizon_waits_on"][0]["pid"], PQbackendPID(slow->get()));

  ASSERT_OK(PgRun(slow->get(), "COMMIT"));
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto n = PgQuery(url, "SELECT count(*) FROM courier_events WHERE published_at IS NULL");
        return n.ok() && (*n)[0] == "0";
      },
      Duration(30000)));
  (*relay)->RequestStop();
  runner.join();
  const std::string lines = ReadFile(out);
  const size_t first = lines.find(low->events[0].event_id);
  const size_t second = lines.find(high.event_id);
  ASSERT_NE(first, std::string::npos) << lines;
  ASSERT_NE(second, std::string::npos) << lines;
  EXPECT_LT(first, second) << "position order";
}

// A row plain SQL wrote with headers that are not a JSON object cannot be published: it is
// parked with the reason and stamped (the relay is done with it), never deleted, and the
// other streams flow.
TEST(EventStoreRelay, AnUnpublishableEventIsParkedAndTheRestFlows) {
  const std::string url = EventStoreDb();
  TempDir dir;
  // A row from before the headers check (event-store migration 4), which refuses it now.
  ASSERT_OK(
      PgQuery(url, "ALTER TABLE courier_events DROP CONSTRAINT courier_events_headers_check"));
  ASSERT_OK(PgQuery(url,
                    "INSERT INTO courier_events (stream_type, stream_id, version, event_type,"
                    " payload, headers) VALUES ('account', 'bad', 1, 'Opened', '{}', '[1]'),"
                    " ('account', 'good', 1, 'Opened', '{}', '{\"k\":\"v\"}')"));
  CommandResult run = RunCourier({"relay", "--event-store", "--source", url, "--sink",
                                  "file://" + dir.File("out.jsonl"), "--once"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string lines = ReadFile(dir.File("out.jsonl"));
  EXPECT_NE(lines.find("\"good\""), std::string::npos) << lines;
  EXPECT_EQ(lines.find("\"bad\""), std::string::npos) << lines;
  auto parked = PgQuery(url,
                        "SELECT aggregate_id || ' ' || outbox || ' ' || error FROM"
                        " courier_dead_letter");
  ASSERT_OK(parked);
  ASSERT_EQ(parked->size(), 1u);
  EXPECT_NE((*parked)[0].find("bad courier_events "), std::string::npos) << (*parked)[0];
  EXPECT_NE((*parked)[0].find("headers"), std::string::npos) << (*parked)[0];
  auto rows = PgQuery(url, "SELECT count(*) || '/' || count(published_at) FROM courier_events");
  ASSERT_OK(rows);
  EXPECT_EQ((*rows)[0], "2/2");
  // `courier dead-letters` finds it under the event store's name.
  CommandResult list =
      RunCourier({"dead-letters", "list", "--source", url, "--table", "courier_events"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("bad"), std::string::npos) << list.out;
  CommandResult status = RunCourier({"status", "--event-store", "--source", url});
  EXPECT_NE(status.out.find("dead letters       1"), std::string::npos) << status.out;
}

TEST(EventStoreCli, MigrateCreatesTheStoreOnceAndSaysSo) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  CommandResult first = RunCourier({"migrate", "--event-store", "--source", *url});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("created tables courier_events, courier_events_snapshots, "
                           "courier_events_projections, courier_dead_letter, courier_events_lease, "
                           "courier_events_cdc_slot, courier_events_cdc_backfill"),
            std::string::npos)
      << first.out;
  EXPECT_NE(first.out.find("schema version 5 (courier_events_schema): applied 1 event_store, 2 "
                           "dead_letters, 3 leases, 4 cdc_bookkeeping, 5 "
                           "event_store_headers_check"),
            std::string::npos)
      << first.out;
  CommandResult again = RunCourier({"migrate", "--event-store", "--source", *url});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("schema version 5 (courier_events_schema): up to date"),
            std::string::npos)
      << again.out;
  CommandResult capture =
      RunCourier({"migrate", "--event-store", "--capture", "public.orders", "--source", *url});
  EXPECT_EQ(capture.exit_code, 2);
  EXPECT_NE(capture.err.find("--event-store makes an event store; --capture is for an outbox"),
            std::string::npos)
      << capture.err;
  CommandResult help = RunCourier({"relay", "--help"});
  EXPECT_NE(help.out.find("--event-store"), std::string::npos);
}

TEST(EventStoreRelay, RefusesWhatDoesNotApply) {
  CommandResult capture =
      RunCourier({"relay", "--event-store", "--mode", "cdc", "--capture", "public.orders",
                  "--source", "postgres://127.0.0.1:1/x", "--sink", "file:///tmp/x.jsonl"});
  EXPECT_EQ(capture.exit_code, 2);
  EXPECT_NE(capture.err.find("--capture does not apply to --event-store"), std::string::npos)
      << capture.err;
  CommandResult shard = RunCourier({"relay", "--event-store", "--shard", "0/2", "--source",
                                    "postgres://127.0.0.1:1/x", "--sink", "file:///tmp/x.jsonl"});
  EXPECT_EQ(shard.exit_code, 2);
  EXPECT_NE(shard.err.find("--shard does not apply to --event-store"), std::string::npos)
      << shard.err;
}

}  // namespace
}  // namespace courier::test
