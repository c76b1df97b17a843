// Table capture (`courier migrate --capture`, `courier relay --mode cdc --capture`) against
// real PostgreSQL 15 and the dev broker, read back with the Kafka reader: what the application
// writes to its own tables arrives as insert/update/delete/truncate events, in commit order,
// with no change to the application; what cannot be captured safely is refused up front.
#include <signal.h>

#include <map>
#include <random>

#include "support/fixtures.h"

namespace courier::test {
namespace {

using nlohmann::json;

struct Change {
  std::string type;  // event_type
  std::string key;   // aggregate_id (the Kafka key)
  json payload;
  std::string event_id;
};

class TableCdcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    db_ = std::make_unique<TestDb>(TestDb::Make(true));
  }

  RelayOptions Options(std::vector<std::string> capture) const {
    RelayOptions o =
        TestRelayOptions(db_->url, "kafka://" + broker_->bootstrap() + "/{aggregate_type}");
    o.mode = RelayOptions::Mode::kCdc;
    o.capture = std::move(capture);
    return o;
  }

  std::string Query1(const std::string& sql) const {
    auto rows = PgQuery(db_->url, sql);
    EXPECT_OK(rows);
    return rows.ok() && !rows->empty() ? (*rows)[0] : "";
  }

  bool WaitStreaming() const {
    return WaitUntil([&] {
      return Query1(
                 "SELECT count(*) FROM pg_replication_slots WHERE database ="
                 " current_database() AND active") == "1";
    });
  }

  // Every captured table's snapshot (of the rows from before capture) is done, so that what a
  // test writes next is seen once, by the stream.
  bool WaitSnapshotted() const {
    return WaitUntil([&] {
      return Query1(
                 "SELECT count(*) FROM courier_outbox_cdc_capture WHERE snapshot_state <>"
                 " 'done'") == "0";
    });
  }

  CommandResult MigrateCapture(const std::vector<std::string>& capture) const {
    std::vector<std::string> args = {"migrate", "--source", db_->url};
    for (const std::string& c : capture) args.insert(args.end(), {"--capture", c});
    return RunCourier(args);
  }

  // A topic's events by key, each key's in the order read: the order of its partition, which
  // is the key's commit order (partitions interleave in any order).
  std::map<std::string, std::vector<Change>> ByKey(const std::string& topic) const {
    std::map<std::string, std::vector<Change>> out;
    for (Change& c : Read(topic)) out[c.key].push_back(std::move(c));
    return out;
  }

  std::vector<Change> Read(const std::string& topic) const {
    std::vector<Change> out;
    for (const KafkaRecord& r : ReadTopic(*broker_, topic)) {
      out.push_back({r.event.event_type, r.event.aggregate_id,
                     json::parse(r.event.payload, nullptr, /*allow_exceptions=*/false),
                     r.event.event_id});
    }
    return out;
  }

  std::unique_ptr<DevBroker> broker_;
  std::unique_ptr<TestDb> db_;
};

// The rows of `table` as PostgreSQL's to_jsonb renders them, by the text of `key`.
std::map<std::string, json> Rows(const std::string& url, const std::string& table,
                                 const std::string& key) {
  std::map<std::string, json> out;
  auto rows =
      PgQuery(url, "SELECT " + key + "::text || chr(9) || to_jsonb(t)::text FROM " + table + " t");
  EXPECT_OK(rows);
  if (!rows.ok()) return out;
  for (const std::string& line : *rows) {
    const size_t tab = line.find('\t');
    out[line.substr(0, tab)] = json::parse(line.substr(tab + 1));
  }
  return out;
}

TEST_F(TableCdcTest, InsertUpdateDeleteTruncateArriveInCommitOrderBesideTheOutbox) {
  ASSERT_OK(db_->Transaction(
      {"CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, in_stock bool)",
       "CREATE SCHEMA sales",
       "CREATE TABLE sales.orders (region text, id int, status text, PRIMARY KEY (region, id))"}));
  const CommandResult migrated = MigrateCapture({"public.products, sales.orders"});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  EXPECT_NE(migrated.out.find("capturing public.products, sales.orders (publication "
                              "courier_outbox)\n"),
            std::string::npos)
      << migrated.out;
  EXPECT_EQ(Query1("SELECT string_agg(table_name || ' ' || spec, '; ' ORDER BY table_name)"
                   " FROM courier_outbox_cdc_capture"),
            "public.products public.products; sales.orders sales.orders");

  BackgroundRelay relay(Options({"public.products,sales.orders"}));
  ASSERT_TRUE(WaitStreaming());
  ASSERT_TRUE(WaitSnapshotted());
  const std::string event_id = NewUuidV7();
  ASSERT_OK(db_->Transaction({"INSERT INTO products VALUES (1, 'lamp', true), (2, 'desk', NULL)",
                              InsertEventSql(event_id, "a", 1),
                              "INSERT INTO sales.orders VALUES ('eu', 7, 'new')"}));
  ASSERT_OK(db_->Transaction({"INSERT INTO products VALUES (3, 'ghost', true)"},
                             /*commit=*/false));
  ASSERT_OK(db_->Transaction({"UPDATE products SET in_stock = false WHERE id = 1",
                              "UPDATE sales.orders SET status = 'paid'"}));
  ASSERT_OK(db_->Transaction({"DELETE FROM products WHERE id = 2"}));
  ASSERT_OK(db_->Transaction({"TRUNCATE sales.orders"}));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 8; })) << relay.stats().published;
  ASSERT_OK(relay.Stop());

  auto products = ByKey("products");
  ASSERT_EQ(products.size(), 2u) << "a rolled-back insert never appears";
  const std::vector<Change>& one = products["1"];
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one[0].type, "insert");
  EXPECT_EQ(one[0].payload["op"], "insert");
  EXPECT_EQ(one[0].payload["after"], json::parse(R"({"id":1,"name":"lamp","in_stock":true})"));
  EXPECT_TRUE(one[0].payload["before"].is_null());
  EXPECT_EQ(one[0].payload["source"]["schema"], "public");
  EXPECT_EQ(one[0].payload["source"]["table"], "products");
  EXPECT_EQ(one[0].payload["source"]["snapshot"], false);
  EXPECT_EQ(one[1].type, "update");
  EXPECT_EQ(one[1].payload["before"], json::parse(R"({"id":1})"));
  EXPECT_EQ(one[1].payload["after"], json::parse(R"({"id":1,"name":"lamp","in_stock":false})"));
  const std::vector<Change>& two = products["2"];
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].type, "insert");
  EXPECT_EQ(two[0].payload["after"]["in_stock"], nullptr);
  EXPECT_EQ(two[0].payload["source"]["lsn"], one[0].payload["source"]["lsn"])
      << "one transaction, one commit LSN";
  EXPECT_EQ(two[1].type, "delete");
  EXPECT_EQ(two[1].payload["before"], json::parse(R"({"id":2})"));
  EXPECT_TRUE(two[1].payload["after"].is_null());

  auto orders = ByKey("sales.orders");
  ASSERT_EQ(orders.size(), 2u);
  const std::vector<Change>& eu7 = orders[R"(["eu",7])"];
  ASSERT_EQ(eu7.size(), 2u) << "a composite key is a JSON array";
  EXPECT_EQ(eu7[0].type, "insert");
  EXPECT_EQ(eu7[1].type, "update");
  EXPECT_EQ(eu7[1].payload["after"]["status"], "paid");
  const std::vector<Change>& truncate = orders[""];
  ASSERT_EQ(truncate.size(), 1u) << "a truncate has no key";
  EXPECT_EQ(truncate[0].type, "truncate");
  EXPECT_EQ(truncate[0].payload["source"]["schema"], "sales");

  const std::vector<KafkaRecord> outbox = ReadTopic(*broker_, "order");
  ASSERT_EQ(outbox.size(), 1u);
  EXPECT_EQ(outbox[0].event.event_id, event_id) << "the outbox's events flow beside";
}

// Each refusal is one line, exit 2, and leaves the publication and the bookkeeping as they
// were.
// Keyed consumers (a cache, a search index, a compacted topic) must see the old key's row end:
// an update of the key is a delete of the old key and an insert of the new one. A key read by
// the snapshot and the same key in the stream are the same text (a numeric keeps its scale).
TEST_F(TableCdcTest, PrimaryKeyUpdateIsADeleteOfTheOldKeyAndAnInsertOfTheNew) {
  ASSERT_OK(db_->Transaction({"CREATE TABLE items (code numeric PRIMARY KEY, name text)",
                              "INSERT INTO items VALUES (1.10, 'a')"}));
  const CommandResult migrated = MigrateCapture({"items"});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  BackgroundRelay relay(Options({"items"}));
  ASSERT_TRUE(WaitStreaming());
  ASSERT_TRUE(WaitSnapshotted());
  ASSERT_OK(db_->Transaction({"UPDATE items SET code = 2.50 WHERE code = 1.10",
                              "UPDATE items SET name = 'b' WHERE code = 2.50"}));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 4; })) << relay.stats().published;
  // /metrics' courier_capture_events_total and courier_capture_lag_seconds, per table.
  const RelayStats stats = relay.stats();
  ASSERT_EQ(stats.captured.count("public.items"), 1u);
  EXPECT_EQ(stats.captured.at("public.items").published, 4);
  EXPECT_GE(stats.captured.at("public.items").last_lag_s, 0);
  ASSERT_OK(relay.Stop());
  auto items = ByKey("items");
  ASSERT_EQ(items.size(), 2u);
  ASSERT_EQ(items["1.10"].size(), 2u);
  EXPECT_EQ(items["1.10"][0].type, "read");
  EXPECT_EQ(items["1.10"][1].type, "delete");
  EXPECT_EQ(items["1.10"][1].payload["after"], json(nullptr));
  ASSERT_EQ(items["2.50"].size(), 2u);
  EXPECT_EQ(items["2.50"][0].type, "insert");
  EXPECT_EQ(items["2.50"][0].payload["after"]["name"], "a");
  EXPECT_EQ(items["2.50"][1].type, "update");
  EXPECT_EQ(items["2.50"][1].payload["after"]["name"], "b");
}

TEST_F(TableCdcTest, MigrateRefusesWhatCannotBeCapturedAndChangesNothing) {
  ASSERT_OK(db_->Transaction(
      {"CREATE TABLE orders (id int PRIMARY KEY, status text, note text)",
       "CREATE TABLE good (id int PRIMARY KEY)", "CREATE TABLE logs (msg text)",
       "CREATE TABLE nothing (id int PRIMARY KEY)", "ALTER TABLE nothing REPLICA IDENTITY NOTHING",
       "CREATE TABLE part (id int, region text, PRIMARY KEY (id, region))"
       " PARTITION BY LIST (region)",
       "CREATE TABLE \"a.b\" (id int PRIMARY KEY)"}));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"public.nope", "--capture public.nope: table public.nope does not exist"},
      {"logs",
       "--capture logs: table public.logs has no primary key; add a primary key or run ALTER "
       "TABLE public.logs REPLICA IDENTITY FULL"},
      {"nothing",
       "--capture nothing: table public.nothing has REPLICA IDENTITY NOTHING, so its updates "
       "and deletes cannot be captured; run ALTER TABLE public.nothing REPLICA IDENTITY FULL "
       "(or DEFAULT, with a primary key)"},
      {"courier_outbox",
       "--capture courier_outbox: table public.courier_outbox is courier's own (the outbox's "
       "events are published already, its bookkeeping is not for consumers); capture the "
       "application's tables"},
      {"courier_outbox_cdc_slot",
       "--capture courier_outbox_cdc_slot: table public.courier_outbox_cdc_slot is courier's "
       "own (the outbox's events are published already, its bookkeeping is not for "
       "consumers); capture the application's tables"},
      {"orders WHERE (note <> '')",
       "--capture orders WHERE (note <> ''): the row filter uses note, not part of the "
       "replica identity (id) of public.orders: PostgreSQL would then refuse the "
       "application's UPDATEs and DELETEs of the table; filter on those columns only, or run "
       "ALTER TABLE public.orders REPLICA IDENTITY FULL"},
      {"orders (status, note)",
       "--capture orders (status, note): the column list leaves out id, part of the replica "
       "identity (id) of public.orders: PostgreSQL would then refuse the application's "
       "UPDATEs and DELETEs of the table; list those columns too"},
      {"orders WHERE (nosuch > 1)",
       "--capture orders WHERE (nosuch > 1): column \"nosuch\" does not exist"},
      {"part",
       "--capture part: public.part is a partitioned table, whose changes PostgreSQL logs "
       "under its partitions; capture the partitions instead"},
      {"\"a.b\"",
       "--capture \"a.b\": table public.a.b has a '.' or ':' in its name, which would "
       "make its events' aggregate_type (and the keys of cache and search-index sinks) "
       "ambiguous with another table's; rename it"},
      {"",
       "--capture 'good,': an empty entry (no table between two commas, or none at all); write "
       "TABLE [(COLUMN, ...)] [WHERE (CONDITION)], entries separated by commas"},
  };
  for (const auto& [capture, message] : cases) {
    // The good table first: it must not be added either.
    const CommandResult r = MigrateCapture({"good," + capture});
    EXPECT_EQ(r.exit_code, 2) << capture << ": " << r.err;
    EXPECT_EQ(r.err, "courier: error: " + message + "\n") << capture;
  }
  EXPECT_EQ(Query1("SELECT count(*) FROM pg_publication"), "0") << "nothing half-done";
  EXPECT_EQ(Query1("SELECT count(*) FROM pg_replication_slots WHERE database ="
                   " current_database()"),
            "0");
  EXPECT_EQ(db_->Count("courier_outbox_cdc_capture"), 0);

  // A role that does not own the table.
  const std::string role = "capture_" + db_->url.substr(db_->url.rfind('/') + 1);
  ASSERT_OK(db_->Transaction(
      {"CREATE ROLE " + role + " LOGIN REPLICATION",
       "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
       "GRANT CREATE ON DATABASE " + db_->url.substr(db_->url.rfind('/') + 1) + " TO " + role}));
  std::string as_role = db_->url;
  as_role.replace(as_role.find("postgres@"), 9, role + "@");
  const CommandResult r = RunCourier({"migrate", "--source", as_role, "--capture", "orders"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "courier: error: --capture orders: this role may not publish public.orders (must be "
            "owner of table orders); run courier migrate --capture as the owner of the table\n");

  // And what is allowed: a row filter on the key, a column list holding it.
  const CommandResult ok = MigrateCapture({"orders (id, status) WHERE (id > 0)"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(Query1("SELECT count(*) FROM pg_publication_tables WHERE tablename = 'orders'"), "1");
}

// With REPLICA IDENTITY FULL an UPDATE that leaves a TOASTed value alone still carries it
// whole; without, the event says which column it could not carry and holds no placeholder.
TEST_F(TableCdcTest, UnchangedToastedValueIsCarriedWholeOrListedAsUnavailable) {
  ASSERT_OK(db_->Transaction({"CREATE TABLE docs (id int PRIMARY KEY, title text, body text)",
                              "ALTER TABLE docs REPLICA IDENTITY FULL",
                              "CREATE TABLE notes (id int PRIMARY KEY, title text, body text)"}));
  const CommandResult migrated = MigrateCapture({"docs", "notes"});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  EXPECT_NE(migrated.err.find("captured table has TOASTable columns and is not REPLICA "
                              "IDENTITY FULL"),
            std::string::npos)
      << migrated.err;
  EXPECT_NE(migrated.err.find("table=public.notes"), std::string::npos) << migrated.err;
  EXPECT_EQ(migrated.err.find("table=public.docs"), std::string::npos) << migrated.err;

  BackgroundRelay relay(Options({"docs,notes"}));
  ASSERT_TRUE(WaitStreaming());
  ASSERT_TRUE(WaitSnapshotted());
  // Random text does not compress: it is stored out of line (TOASTed).
  const std::string big =
      "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 4000))";
  ASSERT_OK(db_->Transaction({"INSERT INTO docs VALUES (1, 'a', " + big + ")",
                              "INSERT INTO notes VALUES (1, 'a', " + big + ")"}));
  ASSERT_OK(db_->Transaction({"UPDATE docs SET title = 'b'", "UPDATE notes SET title = 'b'"}));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 4; }));
  ASSERT_OK(relay.Stop());
  const std::string body = Query1("SELECT body FROM docs");
  ASSERT_EQ(body.size(), 128000u);

  const std::vector<Change> docs = Read("docs");
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1].type, "update");
  EXPECT_EQ(docs[1].payload["after"]["title"], "b");
  EXPECT_EQ(docs[1].payload["after"]["body"], body) << "carried whole from the old row";
  EXPECT_EQ(docs[1].payload["before"]["title"], "a");
  EXPECT_FALSE(docs[1].payload.contains("unavailable"));
  EXPECT_EQ(docs[1].key, "1") << "keyed by the primary key, not every column";

  const std::vector<Change> notes = Read("notes");
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_EQ(notes[1].payload["after"], json::parse(R"({"id":1,"title":"b"})"));
  EXPECT_EQ(notes[1].payload["unavailable"], json::parse(R"(["body"])"));
  EXPECT_EQ(notes[1].payload.dump().find("unavailable_value"), std::string::npos);
}

// Columns added, dropped, renamed and retyped while the relay streams: each event carries the
// table's shape as of its own change.
TEST_F(TableCdcTest, SchemaChangesMidStreamGiveLaterEventsTheNewShape) {
  ASSERT_OK(db_->Transaction({"CREATE TABLE items (id int PRIMARY KEY, a text, b int)"}));
  ASSERT_EQ(MigrateCapture({"items"}).exit_code, 0);
  BackgroundRelay relay(Options({"items"}));
  ASSERT_TRUE(WaitStreaming());
  ASSERT_TRUE(WaitSnapshotted());
  ASSERT_OK(db_->Transaction({"INSERT INTO items VALUES (1, 'x', 1)"}));
  ASSERT_OK(db_->Transaction({"ALTER TABLE items ADD COLUMN c text DEFAULT 'new'",
                              "INSERT INTO items VALUES (2, 'y', 2)"}));
  ASSERT_OK(db_->Transaction({"ALTER TABLE items DROP COLUMN a",
                              "ALTER TABLE items RENAME COLUMN b TO bee",
                              "INSERT INTO items VALUES (3, 3, 'z')"}));
  ASSERT_OK(db_->Transaction({"ALTER TABLE items ALTER COLUMN bee TYPE text",
                              "UPDATE items SET bee = 'three' WHERE id = 3"}));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 4; }));
  ASSERT_OK(relay.Stop());
  auto items = ByKey("items");
  ASSERT_EQ(items.size(), 3u);
  ASSERT_EQ(items["1"].size(), 1u);
  EXPECT_EQ(items["1"][0].payload["after"], json::parse(R"({"id":1,"a":"x","b":1})"));
  ASSERT_EQ(items["2"].size(), 1u);
  EXPECT_EQ(items["2"][0].payload["after"], json::parse(R"({"id":2,"a":"y","b":2,"c":"new"})"));
  ASSERT_EQ(items["3"].size(), 2u);
  EXPECT_EQ(items["3"][0].payload["after"], json::parse(R"({"id":3,"bee":3,"c":"z"})"));
  EXPECT_EQ(items["3"][1].payload["after"], json::parse(R"({"id":3,"bee":"three","c":"z"})"));
}

// A captured table renamed while the relay streams keeps coming under its new name; one
// dropped ends; a relay started later with the old names leaves them out with a warning and
// publishes the rest: nothing wedges.
TEST_F(TableCdcTest, CapturedTableDroppedOrRenamedMidStreamDoesNotStopTheRelay) {
  ASSERT_OK(db_->Transaction({"CREATE TABLE a (id int PRIMARY KEY)",
                              "CREATE TABLE b (id int PRIMARY KEY)",
                              "CREATE TABLE c (id int PRIMARY KEY)"}));
  ASSERT_EQ(MigrateCapture({"a,b,c"}).exit_code, 0);
  {
    BackgroundRelay relay(Options({"a,b,c"}));
    ASSERT_TRUE(WaitStreaming());
    ASSERT_TRUE(WaitSnapshotted());
    ASSERT_TRUE(WaitSnapshotted());
    ASSERT_OK(db_->Transaction({"INSERT INTO a VALUES (1)", "INSERT INTO b VALUES (1)"}));
    ASSERT_OK(db_->Transaction({"ALTER TABLE a RENAME TO a2", "DROP TABLE b"}));
    ASSERT_OK(db_->Transaction({"INSERT INTO a2 VALUES (2)", "INSERT INTO c VALUES (1)",
                                InsertEventSql(NewUuidV7(), "x", 1)}));
    ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 5; })) << relay.stats().published;
    ASSERT_OK(relay.Stop());
  }
  const std::vector<Change> renamed = Read("a2");
  ASSERT_EQ(renamed.size(), 1u);
  EXPECT_EQ(renamed[0].key, "2");
  EXPECT_EQ(renamed[0].payload["source"]["table"], "a2");
  EXPECT_EQ(Read("a").size(), 1u);
  EXPECT_EQ(Read("b").size(), 1u);

  BackgroundRelay relay(Options({"a,b,c"}));
  ASSERT_TRUE(WaitStreaming());
  ASSERT_TRUE(WaitSnapshotted());
  ASSERT_OK(db_->Transaction({"INSERT INTO a2 VALUES (3)", "INSERT INTO c VALUES (2)",
                              InsertEventSql(NewUuidV7(), "x", 2)}));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 2; })) << relay.stats().published;
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(Read("c").size(), 2u);
  EXPECT_EQ(Read("a2").size(), 1u) << "a2 is not among the tables this relay captures";
}

// Rows that exist when capture starts arrive as `read` events, chunk by chunk, while the
// application keeps updating them: for every row, its last event is the row as it is, never a
// stale read that came after a newer change.
TEST_F(TableCdcTest, RowsThatExistBeforeCaptureArriveAsReadEventsWithoutGoingStale) {
  ASSERT_OK(db_->Transaction(
      {"CREATE TABLE stock (id int PRIMARY KEY, qty int NOT NULL, sku text)",
       "INSERT INTO stock SELECT g, 0, 'sku-' || g FROM generate_series(1, 3500) g"}));
  ASSERT_EQ(MigrateCapture({"stock"}).exit_code, 0);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937 rng(3);
    auto conn = PgConnect(db_->url);
    if (!conn.ok()) return;
    while (!stop) {
      (void)PgRun(conn->get(),
                  "UPDATE stock SET qty = qty + 1 WHERE id = " + std::to_string(1 + rng() % 3500));
    }
  });
  BackgroundRelay relay(Options({"stock"}));
  const bool snapshotted = WaitSnapshotted();
  stop = true;
  writer.join();
  ASSERT_TRUE(snapshotted);
  ASSERT_OK(relay.Stop());
  std::vector<std::string> once = {"relay",
                                   "--source",
                                   db_->url,
                                   "--sink",
                                   "kafka://" + broker_->bootstrap() + "/{aggregate_type}",
                                   "--mode",
                                   "cdc",
                                   "--capture",
                                   "stock",
                                   "--once"};
  const CommandResult last = RunCourier(once, Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  const std::map<std::string, json> rows = Rows(db_->url, "stock", "id");
  std::map<std::string, Change> last_of;
  int64_t reads = 0;
  for (const Change& c : Read("stock")) {
    last_of[c.key] = c;
    if (c.type != "read") continue;
    ++reads;
    EXPECT_EQ(c.payload["source"]["snapshot"], true);
    EXPECT_TRUE(c.payload["before"].is_null());
  }
  EXPECT_GT(reads, 0);
  EXPECT_LE(reads, 3500) << "a row is read once (a key changed during its chunk is left out)";
  ASSERT_EQ(last_of.size(), rows.size());
  for (const auto& [key, row] : rows) {
    ASSERT_EQ(last_of.count(key), 1u) << "key " << key;
    EXPECT_EQ(last_of[key].payload["after"], row) << "key " << key;
  }
  EXPECT_EQ(Query1("SELECT snapshot_rows FROM courier_outbox_cdc_capture"), std::to_string(reads));
  const CommandResult status = RunCourier({"status", "--source", db_->url});
  EXPECT_NE(status.out.find("captured table     public.stock  snapshot done (" +
                            std::to_string(reads) + " rows read)\n"),
            std::string::npos)
      << status.out;
}

// The relay is SIGKILLed again and again in the middle of a snapshot while rows change: the
// snapshot resumes from its last saved chunk, and every row ends at its current value.
TEST_F(TableCdcTest, RelayKilledMidSnapshotResumesWithoutLoss) {
  ASSERT_OK(db_->Transaction({"CREATE TABLE big (id int PRIMARY KEY, n int NOT NULL)",
                              "INSERT INTO big SELECT g, 0 FROM generate_series(1, 40000) g"}));
  ASSERT_EQ(MigrateCapture({"big"}).exit_code, 0);
  // The dev broker keeps 5 MiB per partition: room for the snapshot, the chunks read again
  // after each kill and the writer's changes (at most ~1,000/s), ~1 KiB each.
  ASSERT_OK(broker_->CreateTopic("big", DevBrokerPartitionsFor(100000, 1024)));
  const std::vector<std::string> relay_args = {
      "relay",
      "--source",
      db_->url,
      "--sink",
      "kafka://" + broker_->bootstrap() + "/{aggregate_type}",
      "--mode",
      "cdc",
      "--capture",
      "big"};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937 rng(9);
    auto conn = PgConnect(db_->url);
    if (!conn.ok()) return;
    while (!stop) {
      const std::string id = std::to_string(1 + rng() % 40000);
      (void)PgRun(conn->get(), rng() % 10 == 0 ? "DELETE FROM big WHERE id = " + id
                                               : "UPDATE big SET n = n + 1 WHERE id = " + id);
      // A bounded rate, however fast the machine: the topic must hold every change.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::mt19937 rng(4);
  int resumed = 0;
  std::string before;
  for (int i = 0; i < 6; ++i) {
    auto relay = SpawnCourier(relay_args, db_->dir.File("relay.log"));
    ASSERT_OK(relay);
    std::this_thread::sleep_for(std::chrono::milliseconds(400 + rng() % 600));
    relay->Signal(SIGKILL);
    relay->Wait(Duration(10000));
    const std::string now = Query1(
        "SELECT coalesce(snapshot_last_key::text, '') FROM"
        " courier_outbox_cdc_capture");
    if (!now.empty() && now != before) ++resumed;
    before = now;
  }
  stop = true;
  writer.join();
  std::vector<std::string> once = relay_args;
  once.push_back("--once");
  const CommandResult last = RunCourier(once, Duration(180000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(Query1("SELECT snapshot_state FROM courier_outbox_cdc_capture"), "done");
  EXPECT_GE(resumed, 1) << "the kills came before any chunk was saved";
  const std::map<std::string, json> rows = Rows(db_->url, "big", "id");
  std::map<std::string, Change> last_of;
  for (const Change& c : Read("big")) last_of[c.key] = c;
  for (const auto& [key, row] : rows) {
    ASSERT_EQ(last_of.count(key), 1u) << "key " << key << " never arrived";
    EXPECT_EQ(last_of[key].payload["after"], row) << "key " << key;
  }
  for (const auto& [key, c] : last_of) {
    if (rows.count(key) == 0) {
      EXPECT_EQ(c.type, "delete") << "key " << key;
    }
  }
}

// `courier backfill` while the relay runs and the application updates the rows: the rows the
// condition selects are published again as read events, and no row ends at a stale value.
TEST_F(TableCdcTest, BackfillRacingLiveUpdatesNeverLeavesAStaleValue) {
  ASSERT_OK(db_->Transaction({"CREATE TABLE prices (id int PRIMARY KEY, cents int NOT NULL)",
                              "INSERT INTO prices SELECT g, 100 FROM generate_series(1, 3000) g"}));
  ASSERT_EQ(MigrateCapture({"prices"}).exit_code, 0);
  BackgroundRelay relay(Options({"prices"}));
  ASSERT_TRUE(WaitSnapshotted()) << Query1(
      "SELECT snapshot_state || ' ' || coalesce(snapshot_last_key::text, '-') || ' ' ||"
      " snapshot_rows FROM courier_outbox_cdc_capture");
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937 rng(8);
    auto conn = PgConnect(db_->url);
    if (!conn.ok()) return;
    while (!stop) {
      (void)PgRun(conn->get(), "UPDATE prices SET cents = cents + 1 WHERE id = " +
                                   std::to_string(1 + rng() % 3000));
    }
  });
  const CommandResult refused = RunCourier({"backfill", "--source", db_->url, "--capture", "nope"});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_EQ(refused.err,
            "courier: error: --capture nope: not a captured table of this outbox; capture it "
            "first with courier migrate --capture nope\n");
  const CommandResult bad = RunCourier(
      {"backfill", "--source", db_->url, "--capture", "prices", "--where", "nosuch > 1"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.err, "courier: error: --where: column \"nosuch\" does not exist\n");
  const CommandResult requested = RunCourier(
      {"backfill", "--source", db_->url, "--capture", "public.prices", "--where", "id <= 2000"});
  ASSERT_EQ(requested.exit_code, 0) << requested.err;
  EXPECT_NE(requested.out.find("backfill of public.prices requested (WHERE id <= 2000)"),
            std::string::npos)
      << requested.out;
  ASSERT_TRUE(WaitUntil([&] {
    return Query1(
               "SELECT snapshot_state || ' ' || snapshot_request FROM"
               " courier_outbox_cdc_capture") == "done 1";
  }));
  stop = true;
  writer.join();
  ASSERT_OK(relay.Stop());
  std::vector<std::string> once = {"relay",
                                   "--source",
                                   db_->url,
                                   "--sink",
                                   "kafka://" + broker_->bootstrap() + "/{aggregate_type}",
                                   "--mode",
                                   "cdc",
                                   "--capture",
                                   "prices",
                                   "--once"};
  const CommandResult last = RunCourier(once, Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  const std::map<std::string, json> rows = Rows(db_->url, "prices", "id");
  std::map<std::string, Change> last_of;
  std::map<std::string, int> reads;
  for (const Change& c : Read("prices")) {
    last_of[c.key] = c;
    if (c.type == "read") ++reads[c.key];
  }
  int backfilled = 0;
  for (const auto& [key, row] : rows) {
    ASSERT_EQ(last_of.count(key), 1u) << "key " << key;
    EXPECT_EQ(last_of[key].payload["after"], row) << "key " << key;
    const int id = std::stoi(key);
    if (id > 2000) {
      EXPECT_LE(reads[key], 1) << "key " << key << " is outside the condition";
    }
    if (id <= 2000 && reads[key] == 2) ++backfilled;
  }
  EXPECT_GT(backfilled, 1000) << "the backfill published the rows it selects again";
}

// The relay binary is SIGKILLed again and again while writers insert, update and delete
// (some transactions rolled back): at the end, for every key, the last event carries the row
// as it is (or a delete when it is gone), and per key the events come in commit order.
TEST_F(TableCdcTest, RelayKilledMidStreamResumesWithNothingLost) {
  ASSERT_OK(
      db_->Transaction({"CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL, "
                        "note text)"}));
  ASSERT_EQ(MigrateCapture({"counters"}).exit_code, 0);
  // The dev broker keeps 5 MiB per partition: 20 keys over 16 partitions, the writer's
  // changes (at most ~1,000/s) and the repeats after each kill fit.
  ASSERT_OK(broker_->CreateTopic("counters", DevBrokerPartitionsFor(20000, 1024, 16)));
  const std::vector<std::string> relay_args = {
      "relay",
      "--source",
      db_->url,
      "--sink",
      "kafka://" + broker_->bootstrap() + "/{aggregate_type}",
      "--mode",
      "cdc",
      "--capture",
      "counters",
      "--poll-interval",
      "20ms"};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937 rng(11);
    auto conn = PgConnect(db_->url);
    if (!conn.ok()) return;
    while (!stop) {
      const int id = static_cast<int>(rng() % 20);
      const std::string k = std::to_string(id);
      const bool commit = rng() % 5 != 0;
      std::string sql = "BEGIN;";
      switch (rng() % 4) {
        case 0:
          sql += "DELETE FROM counters WHERE id = " + k + ";";
          break;
        default:
          sql += "INSERT INTO counters VALUES (" + k +
                 ", 1, md5(random()::text)) ON CONFLICT"
                 " (id) DO UPDATE SET n = counters.n + 1, note = md5(random()::text);";
      }
      sql += commit ? "COMMIT" : "ROLLBACK";
      (void)PgRun(conn->get(), sql);
      // A bounded rate, however fast the machine: the topic must hold every change.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::mt19937 rng(5);
  for (int i = 0; i < 8; ++i) {
    auto relay = SpawnCourier(relay_args, db_->dir.File("relay.log"));
    ASSERT_OK(relay);
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
    relay->Signal(SIGKILL);
    relay->Wait(Duration(10000));
  }
  stop = true;
  writer.join();
  std::vector<std::string> once = relay_args;
  once.push_back("--once");
  const CommandResult last = RunCourier(once, Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  // --once drains what was committed when it started: every change is in the topic.
  const std::map<std::string, json> rows = Rows(db_->url, "counters", "id");
  std::map<std::string, Change> last_of;
  std::map<std::string, int64_t> n_of;
  std::set<std::string> seen;
  for (const Change& c : Read("counters")) {
    last_of[c.key] = c;
    // A redelivery after a kill repeats events already seen: order is judged on first sight.
    if (!seen.insert(c.event_id).second) continue;
    // Per key, in commit order: n only grows between deletes.
    if (c.type == "update") {
      const int64_t n = c.payload["after"]["n"].get<int64_t>();
      EXPECT_GE(n, n_of[c.key]) << "key " << c.key << " went back";
      n_of[c.key] = n;
    } else if (c.type == "delete") {
      n_of[c.key] = 0;
    }
  }
  ASSERT_FALSE(last_of.empty());
  for (const auto& [key, c] : last_of) {
    auto row = rows.find(key);
    if (row == rows.end()) {
      EXPECT_EQ(c.type, "delete") << "key " << key << " is gone from the table";
    } else {
      EXPECT_EQ(c.payload["after"], row->second) << "key " << key;
    }
  }
  for (const auto& [key, row] : rows) EXPECT_EQ(last_of.count(key), 1u) << "key " << key;
}

}  // namespace
}  // namespace courier::test
