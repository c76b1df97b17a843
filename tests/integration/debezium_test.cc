// Debezium compatibility against real servers: change events in Debezium's envelope read by a
// consumer written against Debezium's documentation (tests/support/debezium_consumer.py, the
// json module only), and Debezium's outbox table read as its Outbox Event Router reads it
// (real PostgreSQL, the dev broker, the real courier binary).
#include <fstream>
#include <string>
#include <vector>

#include "brokers/kafka/kafka_reader.h"
#include "sources/cdc/change.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

using nlohmann::json;

std::string Header(const Headers& headers, const std::string& name) {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "(none)";
}

// Runs the consumer on a file sink's lines; its JSON summary.
json Consume(const TempDir& dir, const std::string& events) {
  auto p = Subprocess::Spawn(
      {"/usr/bin/python3", COURIER_SOURCE_DIR "/tests/support/debezium_consumer.py", events},
      dir.File("consumer.out"), dir.File("consumer.err"));
  EXPECT_OK(p);
  if (!p.ok()) return {};
  const std::optional<int> code = p->Wait(Duration(60000));
  EXPECT_EQ(code, 0) << ReadFile(dir.File("consumer.err"));
  return json::parse(ReadFile(dir.File("consumer.out")), nullptr, false);
}

cdc::RowChange Change(cdc::RowChange::Op op, int id, const std::string& name, uint64_t lsn) {
  cdc::RowChange c;
  c.op = op;
  c.database = "shop";
  c.schema = "public";
  c.table = "products";
  c.key_columns = {"id"};
  c.commit_lsn = lsn;
  c.position = 1;
  c.xid = op == cdc::RowChange::Op::kRead ? 0 : 700 + id;
  c.snapshot = op == cdc::RowChange::Op::kRead;
  c.commit_time_us = 1795731503123456 + static_cast<int64_t>(lsn);
  std::vector<cdc::ColumnValue> row = {
      {"id", cdc::RenderColumn(23, std::to_string(id))},
      {"name", cdc::RenderColumn(25, name)},
      {"price", cdc::RenderColumn(1700, "12345678901234567890.0100")},
      {"tags", cdc::RenderColumn(1009, R"({"a b","c\"d",NULL})")},
      {"attrs", cdc::RenderColumn(3802, R"({"k": [1, 2.5], "z": null})")},
      {"updated", cdc::RenderColumn(1184, "2026-11-26 22:18:23.5+00")}};
  if (op == cdc::RowChange::Op::kDelete) {
    c.before = std::vector<cdc::ColumnValue>{row[0]};  // REPLICA IDENTITY DEFAULT: the key
  } else if (op != cdc::RowChange::Op::kTruncate) {
    c.after = row;
    if (op == cdc::RowChange::Op::kUpdate) c.before = std::vector<cdc::ColumnValue>{row[0]};
  } else {
    c.key_columns.clear();
  }
  return c;
}

// Every kind of change event, through the file sink, parsed by the Debezium consumer.
TEST(DebeziumFormat, ADebeziumConsumerParsesEveryEventKind) {
  using Op = cdc::RowChange::Op;
  const std::vector<cdc::RowChange> changes = {
      Change(Op::kRead, 1, "snap", 10),        Change(Op::kInsert, 2, "tea", 20),
      Change(Op::kUpdate, 2, "green tea", 30), Change(Op::kInsert, 3, "x\"y\n", 40),
      Change(Op::kDelete, 3, "", 50),          Change(Op::kTruncate, 0, "", 60)};
  std::vector<Event> events;
  for (const cdc::RowChange& c : changes) {
    Event e;
    cdc::RenderChange(c, cdc::ChangeFormat::kDebezium, 7300000000000000001ULL, &e);
    events.push_back(std::move(e));
  }
  TempDir dir;
  const std::string file = dir.File("events.jsonl");
  PublishEvents("file://" + file, events);
  const json summary = Consume(dir, file);
  ASSERT_TRUE(summary.is_object()) << ReadFile(file);
  EXPECT_EQ(summary["counts"], json::parse(R"({"c":2,"d":1,"r":1,"t":1,"u":1})"));
  EXPECT_EQ(summary["tables"], json::parse(R"(["public.products"])"));
  EXPECT_EQ(summary["rows"][R"({"id": 2})"]["name"], "green tea");
  EXPECT_EQ(summary["rows"][R"({"id": 2})"]["tags"], json::parse(R"(["a b", "c\"d", null])"));
  EXPECT_TRUE(summary["rows"][R"({"id": 3})"].is_null());
  EXPECT_EQ(summary["rows"][R"({"id": 1})"]["updated"], "2026-11-26T22:18:23.5+00:00");
}

// The same consumer on what a real relay publishes: `courier relay --capture --format
// debezium` streams a table's inserts, updates, deletes and truncate to a file sink; every event
// parses, and the rows it ends with are the table's rows as to_jsonb writes them.
TEST(DebeziumFormat, ADebeziumConsumerParsesWhatTheRelayPublishes) {
  const TestDb db = TestDb::Make(true);
  ASSERT_OK(db.Transaction(
      {"CREATE TABLE products (id int PRIMARY KEY, name text, price numeric(30, 4), tags text[],"
       " attrs jsonb, updated timestamptz)"}));
  const CommandResult migrated =
      RunCourier({"migrate", "--source", db.url, "--capture", "products"});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  ASSERT_OK(db.Transaction(
      {"INSERT INTO products VALUES (1, 'tea', 12345678901234567890.0100, '{\"a b\",NULL}',"
       " '{\"k\": [1, 2.5]}', '2026-11-26 22:18:23.5+00')",
       "INSERT INTO products VALUES (2, 'cup', 3.5, '{}', NULL, now())"}));
  ASSERT_OK(db.Transaction({"UPDATE products SET name = 'green tea', tags = '{x}' WHERE id = 1"}));
  ASSERT_OK(db.Transaction({"DELETE FROM products WHERE id = 2"}));
  const std::map<std::string, json> rows = [&] {
    std::map<std::string, json> out;
    auto r = PgQuery(db.url, "SELECT to_jsonb(p)::text FROM products p");
    EXPECT_OK(r);
    for (const std::string& row : r.ok() ? *r : std::vector<std::string>{}) {
      const json j = json::parse(row);
      out["{\"id\": " + j["id"].dump() + "}"] = j;
    }
    return out;
  }();
  ASSERT_OK(db.Transaction({"TRUNCATE products"}));

  TempDir dir;
  const std::string file = dir.File("events.jsonl");
  const CommandResult relay =
      RunCourier({"relay", "--source", db.url, "--mode", "cdc", "--capture", "products", "--format",
                  "debezium", "--sink", "file://" + file, "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  const json summary = Consume(dir, file);
  ASSERT_TRUE(summary.is_object()) << ReadFile(file);
  EXPECT_EQ(summary["counts"], json::parse(R"({"c":2,"d":1,"r":0,"t":1,"u":1})"));
  EXPECT_EQ(summary["tables"], json::parse(R"(["public.products"])"));
  EXPECT_EQ(summary["dbs"], json::array({db.url.substr(db.url.rfind('/') + 1)}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(summary["rows"]["{\"id\": 1}"], rows.at("{\"id\": 1}"));
  EXPECT_TRUE(summary["rows"]["{\"id\": 2}"].is_null());
}

class DebeziumOutbox : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    auto url = SharedPostgres().NewDatabase("dbz");
    ASSERT_OK(url);
    url_ = *url;
  }
  void TearDown() override { DropReplicationSlots(url_); }

  // Runs a script of statements (one transaction when it says BEGIN ... COMMIT).
  void Run(const std::string& sql) {
    auto conn = PgConnect(url_);
    ASSERT_OK(conn);
    ASSERT_OK(PgRun(conn->get(), sql));
  }

  std::unique_ptr<DevBroker> broker_;
  std::string url_;
};

// `courier migrate --outbox-format debezium` makes Debezium's table; the relay in CDC mode
// routes its rows as the Outbox Event Router does: topic outbox.event.<aggregatetype>, key
// aggregateid, header id, value payload; a row inserted and deleted in one transaction (the
// usual Debezium outbox pattern) is delivered too; the application's rows are left alone.
TEST_F(DebeziumOutbox, RoutesRowsAsTheOutboxEventRouterDoes) {
  const CommandResult migrated = RunCourier({"migrate", "--source", url_, "--mode", "cdc",
                                             "--outbox-format", "debezium", "--table", "outbox"});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  auto cols = PgQuery(url_,
                      "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', '"
                      " ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'outbox'::regclass"
                      " AND attnum > 0 AND NOT attisdropped");
  ASSERT_OK(cols);
  EXPECT_EQ((*cols)[0],
            "id uuid, aggregatetype character varying(255), aggregateid character varying(255), "
            "type character varying(255), payload jsonb");
  const char* kKept = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a01";
  const char* kDeleted = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a02";
  const char* kOther = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a03";
  ASSERT_OK(PgQuery(url_, std::string("INSERT INTO outbox VALUES ('") + kKept +
                              "', 'Order', 'o-1', 'OrderCreated', '{\"total\": 12.50}')"));
  Run(std::string("BEGIN; INSERT INTO outbox VALUES ('") + kDeleted +
      "', 'Order', 'o-1', 'OrderPaid', '{\"paid\": true}'); DELETE FROM "
      "outbox WHERE id = '" +
      kDeleted + "'; COMMIT");
  ASSERT_OK(PgQuery(url_, std::string("INSERT INTO outbox VALUES ('") + kOther +
                              "', 'Customer', 'c-9', 'CustomerMoved', NULL)"));
  const CommandResult relay =
      RunCourier({"relay", "--source", url_, "--sink", "kafka://" + broker_->bootstrap(), "--mode",
                  "cdc", "--outbox-format", "debezium", "--table", "outbox", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;

  const std::vector<KafkaRecord> orders = ReadTopic(*broker_, "outbox.event.Order");
  ASSERT_EQ(orders.size(), 2u);
  EXPECT_EQ(orders[0].event.aggregate_id, "o-1");  // the Kafka key
  EXPECT_EQ(orders[0].event.payload, R"({"total": 12.50})");
  EXPECT_EQ(Header(orders[0].event.headers, "id"), kKept);
  EXPECT_EQ(orders[0].event.event_id, kKept);
  EXPECT_EQ(orders[1].event.payload, R"({"paid": true})");
  EXPECT_EQ(Header(orders[1].event.headers, "id"), kDeleted);
  EXPECT_EQ(orders[1].event.event_type, "OrderPaid");
  const std::vector<KafkaRecord> customers = ReadTopic(*broker_, "outbox.event.Customer");
  ASSERT_EQ(customers.size(), 1u);
  EXPECT_EQ(customers[0].event.aggregate_id, "c-9");
  EXPECT_EQ(customers[0].event.payload, "");
  // Courier deletes nothing of Debezium's outbox: the rows are the application's.
  auto left = PgQuery(url_, "SELECT count(*) FROM outbox");
  ASSERT_OK(left);
  EXPECT_EQ((*left)[0], "2");
}

// Polling cannot read Debezium's outbox: one line saying what it needs, exit 2.
TEST_F(DebeziumOutbox, PollingSaysWhatItNeeds) {
  ASSERT_EQ(RunCourier({"migrate", "--source", url_, "--outbox-format", "debezium"}).exit_code, 0);
  const CommandResult r =
      RunCourier({"relay", "--source", url_, "--sink", "kafka://" + broker_->bootstrap(),
                  "--outbox-format", "debezium", "--once"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err,
            "courier: error: --outbox-format debezium needs --mode cdc: polling orders the outbox "
            "by a serial id column, which Debezium's outbox table has not (its id is a uuid)\n");
  const CommandResult bad =
      RunCourier({"relay", "--source", url_, "--sink", "kafka://" + broker_->bootstrap(),
                  "--outbox-format", "dbz"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--outbox-format must be courier or debezium, not 'dbz'"),
            std::string::npos)
      << bad.err;
}

}  // namespace
}  // namespace courier::test
