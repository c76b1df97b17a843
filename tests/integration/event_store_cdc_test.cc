// `courier relay --event-store --mode cdc` against real PostgreSQL (wal_level=logical), the dev
// broker (read back by an independent Kafka reader) and the JSONL file sink: the store's
// inserts read from the write-ahead log, published in commit order with the envelope the
// polling relay publishes, stamped published_at and never deleted.
#include <signal.h>
#include <map>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/encoding.h"
#include "courier/event_store.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// A database with an event store; its replication slots are dropped at the end (they would
// keep WAL on the shared server).
struct StoreDb {
  std::string url;
  StoreDb() {
    auto made = SharedPostgres().NewDatabase();
    EXPECT_OK(made);
    url = made.ok() ? *made : "";
    EXPECT_OK(Migrate(url, EventStoreTables()));
  }
  ~StoreDb() { DropReplicationSlots(url); }
  std::string Query1(const std::string& sql) const {
    auto rows = PgQuery(url, sql);
    EXPECT_OK(rows);
    return rows.ok() && !rows->empty() ? (*rows)[0] : "";
  }
};

// Appends events to `stream_id` (kAny) in one transaction, committed or rolled back.
std::vector<AppendedEvent> Append(PGconn* conn, const std::string& stream_id, int n,
                                  bool commit = true) {
  EventStore store;
  EXPECT_OK(PgRun(conn, "BEGIN"));
  std::vector<NewEvent> events;
  for (int i = 0; i < n; ++i) {
    events.push_back({.event_type = "FundsDeposited",
                      .payload = "{\"n\": " + std::to_string(i) + "}",
                      .headers = {{"trace_id", stream_id + "-" + std::to_string(i)}}});
  }
  auto appended = store.Append(conn, "account", stream_id, kAny, events);
  EXPECT_OK(appended);
  EXPECT_OK(PgRun(conn, commit ? "COMMIT" : "ROLLBACK"));
  return appended.ok() ? appended->events : std::vector<AppendedEvent>{};
}

std::string HeaderOf(const Event& e, const std::string& key) {
  for (const auto& [k, v] : e.headers) {
    if (k == key) return v;
  }
  return "";
}

std::vector<std::string> IdsOf(const std::vector<KafkaRecord>& records) {
  std::vector<std::string> ids;
  for (const KafkaRecord& r : records) ids.push_back(r.event.event_id);
  return ids;
}

std::vector<std::string> IdsOf(const std::vector<AppendedEvent>& events) {
  std::vector<std::string> ids;
  for (const AppendedEvent& e : events) ids.push_back(e.event_id);
  return ids;
}

// Event ids in a file sink's JSONL output, in order.
std::vector<std::string> FileIds(const std::string& path) {
  std::vector<std::string> ids;
  std::istringstream lines(ReadFile(path));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    auto e = EventFromJsonLine(line);
    EXPECT_OK(e);
    if (e.ok()) ids.push_back(e->event_id);
  }
  return ids;
}

CommandResult RelayOnce(const std::string& url, const std::string& sink, const std::string& mode,
                        const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"relay", "--event-store", "--mode", mode,    "--source",
                                   url,     "--sink",        sink,     "--once"};
  args.insert(args.end(), extra.begin(), extra.end());
  return RunCourier(args, Duration(60000));
}

// Events already in the store and unpublished when the slot is created go first (in position
// order), then what commits after, in commit order; rows a polling relay had published are not
// published again, rolled-back appends never. Every event keeps its row, stamped.
TEST(EventStoreCdc, PublishesUnpublishedRowsFirstThenCommitOrderAndStampsEveryEvent) {
  StoreDb db;
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 1));
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  auto conn = PgConnect(db.url);
  ASSERT_OK(conn);
  std::vector<AppendedEvent> before;
  std::vector<std::string> before_streams;
  for (int i = 0; i < 4; ++i) {
    const std::string stream = "acct-" + std::to_string(i % 2);
    for (const AppendedEvent& e : Append(conn->get(), stream, 2)) {
      before.push_back(e);
      before_streams.push_back(stream);
    }
  }
  // The first three were published (by a polling relay, say) before the slot existed.
  ASSERT_OK(PgQuery(db.url, "UPDATE courier_events SET published_at = now() WHERE position <= " +
                                std::to_string(before[2].position)));
  CommandResult migrate =
      RunCourier({"migrate", "--event-store", "--mode", "cdc", "--source", db.url});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.err;
  EXPECT_NE(migrate.out.find("publication and replication slot ready"), std::string::npos)
      << migrate.out;

  std::vector<AppendedEvent> expected(before.begin() + 3, before.end());
  std::vector<std::string> streams;  // of `expected`
  for (size_t i = 3; i < before.size(); ++i) streams.push_back(before_streams[i]);
  const std::vector<AppendedEvent> ghost = Append(conn->get(), "acct-0", 2, /*commit=*/false);
  ASSERT_EQ(ghost.size(), 2u);
  for (int i = 0; i < 6; ++i) {
    const std::string stream = "acct-" + std::to_string(i % 3);
    for (const AppendedEvent& e : Append(conn->get(), stream, 1 + i % 2)) {
      expected.push_back(e);
      streams.push_back(stream);
    }
  }
  CommandResult run = RelayOnce(db.url, sink, "cdc");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "account");
  ASSERT_EQ(IdsOf(records), IdsOf(expected)) << "backfill in position order, then commit order";
  for (size_t i = 0; i < records.size(); ++i) {
    SCOPED_TRACE(i);
    const Event& e = records[i].event;
    EXPECT_EQ(e.aggregate_type, "account");
    EXPECT_EQ(e.aggregate_id, streams[i]);
    EXPECT_EQ(e.event_type, "FundsDeposited");
    EXPECT_EQ(HeaderOf(e, "version"), std::to_string(expected[i].version));
    EXPECT_EQ(HeaderOf(e, "position"), std::to_string(expected[i].position));
    EXPECT_EQ(HeaderOf(e, "trace_id").rfind(streams[i] + "-", 0), 0u);
    EXPECT_EQ(e.payload.rfind("{\"n\": ", 0), 0u) << e.payload;
  }
  EXPECT_EQ(db.Query1("SELECT count(*) || '/' || count(published_at) FROM courier_events"),
            std::to_string(before.size() + expected.size() - 5) + "/" +
                std::to_string(before.size() + expected.size() - 5))
      << "every committed event kept and stamped";

  // The stamps are updates of the store, which the publication does not carry: a second run
  // publishes nothing.
  run = RelayOnce(db.url, sink, "cdc");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(ReadTopic(**broker, "account").size(), expected.size());

  CommandResult status = RunCourier({"status", "--event-store", "--source", db.url, "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const nlohmann::json json = nlohmann::json::parse(status.out);
  EXPECT_EQ(json["pending"], 0);
  ASSERT_EQ(json["slots"].size(), 1u) << status.out;
  EXPECT_EQ(json["slots"][0]["exists"], true);
  EXPECT_EQ(json["slots"][0]["name"].get<std::string>().rfind("courier_", 0), 0u);
  CommandResult text = RunCourier({"status", "--event-store", "--source", db.url});
  EXPECT_NE(text.out.find("unpublished events 0"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("cdc slot           courier_"), std::string::npos) << text.out;
}

// A store switched from polling to CDC and back, with the slot kept in between (it was made
// by migrate while the polling relay ran): each event goes out once. The slot's stream carries
// the rows the polling relay published meanwhile; they are not published again.
TEST(EventStoreCdc, SwitchingBetweenPollingAndCdcPublishesEachEventOnce) {
  StoreDb db;
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 1));
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  ASSERT_EQ(RunCourier({"migrate", "--event-store", "--mode", "cdc", "--source", db.url}).exit_code,
            0);
  auto conn = PgConnect(db.url);
  ASSERT_OK(conn);
  std::vector<AppendedEvent> all;
  for (const std::string mode : {"poll", "cdc", "poll", "cdc"}) {
    SCOPED_TRACE(mode);
    for (int i = 0; i < 3; ++i) {
      for (const AppendedEvent& e : Append(conn->get(), "acct-" + std::to_string(i), 2)) {
        all.push_back(e);
      }
    }
    CommandResult run = RelayOnce(db.url, sink, mode);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    ASSERT_EQ(IdsOf(ReadTopic(**broker, "account")), IdsOf(all));
  }
  EXPECT_EQ(db.Query1("SELECT count(*) || '/' || count(published_at) FROM courier_events"),
            std::to_string(all.size()) + "/" + std::to_string(all.size()));
}

// A rolling switch: a CDC relay started while the polling relay runs waits as its standby (one
// lease per store, whatever the mode), takes over when the polling relay stops, and publishes
// what the polling relay left: each event once, in order.
TEST(EventStoreCdc, ACdcRelayStartedBesideAPollingOneTakesOverWithoutRepeating) {
  StoreDb db;
  TempDir dir;
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 1));
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  auto relay = [&](const std::string& mode) {
    return SpawnCourier({"relay", "--event-store", "--mode", mode, "--source", db.url, "--sink",
                         sink, "--poll-interval", "10ms", "--lease", "2s"},
                        dir.File(mode + ".log"));
  };
  auto conn = PgConnect(db.url);
  ASSERT_OK(conn);
  std::vector<AppendedEvent> all;
  auto append_and_wait = [&] {
    for (const AppendedEvent& e : Append(conn->get(), "acct-1", 3)) all.push_back(e);
    return WaitUntil([&] {
      return db.Query1("SELECT count(*) FROM courier_events WHERE published_at IS NULL") == "0";
    });
  };
  auto poll = relay("poll");
  ASSERT_OK(poll);
  ASSERT_TRUE(append_and_wait());
  auto cdc = relay("cdc");
  ASSERT_OK(cdc);
  ASSERT_TRUE(append_and_wait());
  EXPECT_EQ(db.Query1("SELECT count(*) FROM courier_events_cdc_slot"), "0")
      << "the standby touched nothing";
  poll->Signal(SIGTERM);
  ASSERT_TRUE(poll->Wait(Duration(30000)).has_value());
  ASSERT_TRUE(append_and_wait()) << ReadFile(dir.File("cdc.log"));
  EXPECT_EQ(db.Query1("SELECT count(*) FROM courier_events_cdc_slot"), "1");
  ASSERT_TRUE(append_and_wait());
  cdc->Signal(SIGTERM);
  ASSERT_TRUE(cdc->Wait(Duration(30000)).has_value());
  EXPECT_EQ(IdsOf(ReadTopic(**broker, "account")), IdsOf(all));
}

// A slot lost (dropped, or invalidated for WAL it needed) is made again, and the events still
// unpublished then go out from the store's rows: none lost, none published again.
TEST(EventStoreCdc, ALostSlotIsMadeAgainAndOnlyUnpublishedEventsGoOut) {
  StoreDb db;
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 1));
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  auto conn = PgConnect(db.url);
  ASSERT_OK(conn);
  std::vector<AppendedEvent> all = Append(conn->get(), "acct-1", 3);
  CommandResult run = RelayOnce(db.url, sink, "cdc");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_EQ(IdsOf(ReadTopic(**broker, "account")), IdsOf(all));
  const std::string slot = db.Query1("SELECT slot_name FROM courier_events_cdc_slot");
  ASSERT_OK(PgQuery(db.url, "SELECT pg_drop_replication_slot('" + slot + "')"));
  for (const AppendedEvent& e : Append(conn->get(), "acct-1", 2)) all.push_back(e);
  run = RelayOnce(db.url, sink, "cdc");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("replication slot is gone; recreating it"), std::string::npos) << run.err;
  EXPECT_EQ(IdsOf(ReadTopic(**broker, "account")), IdsOf(all));
  EXPECT_EQ(db.Query1("SELECT count(*) || '/' || count(published_at) FROM courier_events"), "5/5");
}

// Rows plain SQL wrote that cannot be published (headers that are JSON but not an object; a
// NULL version, in a table whose constraint was dropped) are parked as the polling relay parks
// them: copied as they are to the dead-letter table with the reason, stamped, never deleted.
TEST(EventStoreCdc, ParksWhatCannotBePublishedAsThePollingRelayDoes) {
  StoreDb db;
  TempDir dir;
  ASSERT_EQ(RunCourier({"migrate", "--event-store", "--mode", "cdc", "--source", db.url}).exit_code,
            0);
  ASSERT_OK(PgQuery(db.url, "ALTER TABLE courier_events ALTER COLUMN version DROP NOT NULL"));
  // The bad headers from before the headers check (event-store migration 5).
  ASSERT_OK(
      PgQuery(db.url, "ALTER TABLE courier_events DROP CONSTRAINT courier_events_headers_check"));
  ASSERT_OK(PgQuery(db.url,
                    "INSERT INTO courier_events (stream_type, stream_id, version, event_type,"
                    " payload, headers) VALUES ('account', 'bad', 1, 'Opened', '{}', '[1]'),"
                    " ('account', 'nullversion', NULL, 'Opened', '{}', NULL),"
                    " ('account', 'good', 1, 'Opened', '{}', '{\"k\":\"v\"}')"));
  CommandResult run = RelayOnce(db.url, "file://" + dir.File("out.jsonl"), "cdc");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::vector<std::string> published = FileIds(dir.File("out.jsonl"));
  EXPECT_EQ(published, std::vector<std::string>{db.Query1(
                           "SELECT event_id FROM courier_events WHERE stream_id = 'good'")});
  auto parked = PgQuery(db.url,
                        "SELECT aggregate_id || ' ' || outbox || ' ' || coalesce(headers::text,"
                        " 'NULL') || ' ' || error FROM courier_dead_letter ORDER BY outbox_id");
  ASSERT_OK(parked);
  ASSERT_EQ(parked->size(), 2u);
  EXPECT_EQ((*parked)[0].rfind("bad courier_events [1] ", 0), 0u) << (*parked)[0];
  EXPECT_NE((*parked)[0].find("headers"), std::string::npos) << (*parked)[0];
  EXPECT_EQ((*parked)[1].rfind("nullversion courier_events NULL ", 0), 0u) << (*parked)[1];
  EXPECT_NE((*parked)[1].find("column version is NULL"), std::string::npos) << (*parked)[1];
  EXPECT_EQ(db.Query1("SELECT count(*) || '/' || count(published_at) FROM courier_events"), "3/3");
}

// Two stores and an outbox in one database, each with its own CDC relay: slots and
// publications never collide, and each relay publishes its own table's events only.
TEST(EventStoreCdc, TwoStoresAndAnOutboxInOneDatabaseEachPublishTheirOwn) {
  StoreDb db;
  TempDir dir;
  ASSERT_OK(Migrate(db.url, TableNames{}));
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"migrate", "--event-store", "--mode", "cdc"},
        {"migrate", "--event-store", "--table", "other_events", "--mode", "cdc"},
        {"migrate", "--mode", "cdc"}}) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--source", db.url});
    CommandResult r = RunCourier(a);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_EQ(db.Query1("SELECT count(DISTINCT slot_name) FROM pg_replication_slots WHERE database"
                      " = current_database()"),
            "3");
  EXPECT_EQ(db.Query1("SELECT count(DISTINCT pubname) FROM pg_publication"), "3");
  for (const std::string table : {"courier_events", "other_events"}) {
    ASSERT_OK(PgQuery(db.url, "INSERT INTO " + table +
                                  " (stream_type, stream_id, version, event_type, payload)"
                                  " SELECT 'account', '" +
                                  table + "', v, 'Opened', '{}' FROM generate_series(1, 3) v"));
  }
  ASSERT_OK(PgQuery(db.url,
                    "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type,"
                    " payload) SELECT 'order', 'o-' || i, 'Placed', '{}' FROM"
                    " generate_series(1, 3) i"));
  std::map<std::string, std::vector<std::string>> ids;  // the outbox's rows go once published
  for (const std::string table : {"courier_events", "other_events", "courier_outbox"}) {
    auto rows = PgQuery(db.url, "SELECT event_id::text FROM " + table + " ORDER BY 1");
    ASSERT_OK(rows);
    ASSERT_EQ(rows->size(), 3u);
    ids[table] = *rows;
  }
  const std::pair<std::string, std::vector<std::string>> relays[] = {
      {"courier_events", {"relay", "--event-store"}},
      {"other_events", {"relay", "--event-store", "--table", "other_events"}},
      {"courier_outbox", {"relay"}}};
  for (const auto& [table, args] : relays) {
    SCOPED_TRACE(table);
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--mode", "cdc", "--source", db.url, "--sink",
                       "file://" + dir.File(table + ".jsonl"), "--once"});
    CommandResult r = RunCourier(a, Duration(60000));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> got = FileIds(dir.File(table + ".jsonl"));
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, ids[table]);
  }
}

// A store migrated before it could be published by CDC lacks the slot's bookkeeping: the
// relay says which command adds it, and publishes nothing.
TEST(EventStoreCdc, AStoreWithoutTheCdcTablesIsToldToMigrate) {
  StoreDb db;
  TempDir dir;
  for (const std::string sql :
       {"DROP TABLE courier_events_cdc_slot, courier_events_cdc_backfill",
        "DELETE FROM courier_events_schema WHERE version = 4",
        "INSERT INTO courier_events (stream_type, stream_id, version, event_type, payload)"
        " VALUES ('account', 'a', 1, 'Opened', '{}')"}) {
    ASSERT_OK(PgQuery(db.url, sql));
  }
  CommandResult r = RunCourier({"relay", "--event-store", "--mode", "cdc", "--source", db.url,
                                "--sink", "file://" + dir.File("out.jsonl")},
                               Duration(30000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("table \"courier_events_cdc_slot\" does not exist; create the tables "
                       "with: courier migrate --event-store --mode cdc --source URL"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(FileIds(dir.File("out.jsonl")).empty());
  CommandResult migrate =
      RunCourier({"migrate", "--event-store", "--mode", "cdc", "--source", db.url});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.err;
  EXPECT_NE(migrate.out.find("applied 4 cdc_bookkeeping"), std::string::npos) << migrate.out;
  r = RunCourier({"relay", "--event-store", "--mode", "cdc", "--source", db.url, "--sink",
                  "file://" + dir.File("out.jsonl"), "--once"},
                 Duration(60000));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(FileIds(dir.File("out.jsonl")).size(), 1u) << "the event from before the slot";
}

// A role that may not stamp published_at would publish a batch, fail to checkpoint it and
// publish it again, forever: the relay says what to grant, in one line, before publishing.
TEST(EventStoreCdc, ARoleWithoutUpdateStopsWithOneLineAndExit2) {
  StoreDb db;
  TempDir dir;
  ASSERT_EQ(RunCourier({"migrate", "--event-store", "--mode", "cdc", "--source", db.url}).exit_code,
            0);
  const std::string name = db.url.substr(db.url.rfind('/') + 1);
  const std::string role = "noupdate_" + name;
  ASSERT_OK(PgQuery(db.url, "CREATE ROLE " + role + " LOGIN REPLICATION"));
  ASSERT_OK(PgQuery(db.url, "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role));
  ASSERT_OK(PgQuery(db.url, "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role));
  ASSERT_OK(PgQuery(db.url, "REVOKE UPDATE ON courier_events FROM " + role));
  ASSERT_OK(PgQuery(db.url,
                    "INSERT INTO courier_events (stream_type, stream_id, version, event_type,"
                    " payload) SELECT 'account', 'a', v, 'Opened', '{}' FROM"
                    " generate_series(1, 5) v"));
  std::string as_role = db.url;
  as_role.replace(as_role.find("postgres@"), 9, role + "@");
  // A daemon: without the check it would retry until killed at the deadline.
  CommandResult r = RunCourier({"relay", "--event-store", "--mode", "cdc", "--source", as_role,
                                "--sink", "file://" + dir.File("out.jsonl")},
                               Duration(30000));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot stamp published_at in \"courier_events\" (the event store's "
                       "checkpoint) as role \"" +
                       role + "\": permission denied; GRANT UPDATE ON \"courier_events\" TO \"" +
                       role + "\""),
            std::string::npos)
      << r.err;
  size_t errors = 0;
  for (size_t at = r.err.find("courier: error:"); at != std::string::npos;
       at = r.err.find("courier: error:", at + 1)) {
    ++errors;
  }
  EXPECT_EQ(errors, 1u) << r.err;
  EXPECT_TRUE(FileIds(dir.File("out.jsonl")).empty()) << "nothing published";
  EXPECT_EQ(db.Query1("SELECT count(*) || '/' || count(published_at) FROM courier_events"), "5/0");
}

}  // namespace
}  // namespace courier::test
