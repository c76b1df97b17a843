// The payload as committed, end to end: a PostgreSQL outbox's json payload with an integer
// beyond 2^53, a duplicate key and unsorted keys reaches the JSONL file, `courier tail` and a
// `courier consume --exec` handler's stdin byte for byte; Kafka messages carry the event's
// created_at as their timestamp.
#include <signal.h>

#include "brokers/sink.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Parsed and dumped again, this became {"a":2,"b":1} with a's first value gone, and
// 12345678901234567890 a float in other readers.
constexpr const char* kPayload = R"({"b":1,"a":12345678901234567890,"a":2, "nested":{"z":[1.0]}})";

// The event's created_at in microseconds, as PostgreSQL has it.
int64_t CreatedAtUs(const TestDb& db, const std::string& event_id) {
  auto rows = PgQuery(db.url,
                      "SELECT (extract(epoch FROM created_at) * 1000000)::bigint FROM "
                      "courier_outbox WHERE event_id = '" +
                          event_id + "'");
  EXPECT_OK(rows);
  return rows.ok() && !rows->empty() ? std::stoll((*rows)[0]) : -1;
}

std::string InsertPayloadEvent(const TestDb& db, const std::string& created_at) {
  const std::string id = NewUuidV7();
  EXPECT_OK(db.Transaction(
      {"INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, "
       "event_type, payload, created_at) VALUES ('" +
       id + "', 'order', 'o-1', 'OrderCreated', '" + kPayload + "', '" + created_at + "')"}));
  return id;
}

TEST(PayloadBytes, JsonlFileHasTheCommittedPayload) {
  TestDb db = TestDb::Make(true);
  TempDir dir;
  const std::string id = InsertPayloadEvent(db, "2024-01-02 03:04:05.678901+00");
  const std::string out = dir.File("events.jsonl");
  {
    BackgroundRelay relay(TestRelayOptions(db.url, "file://" + out));
    ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));
  }
  const std::string text = ReadFile(out);
  EXPECT_NE(text.find(std::string("\"payload\":") + kPayload + "}\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\"created_at_us\":1704164645678901"), std::string::npos) << text;
  EXPECT_NE(text.find(id), std::string::npos);
}

class PayloadKafka : public BrokerWithTopic {
 protected:
  void SetUp() override {
    BrokerWithTopic::SetUp();
    db_.emplace(TestDb::Make(true));
    // Long ago: a relay stamping messages with its own time would be caught out.
    id_ = InsertPayloadEvent(*db_, "2024-01-02 03:04:05.678901+00");
    created_at_us_ = CreatedAtUs(*db_, id_);
    ASSERT_EQ(created_at_us_, 1704164645678901);
    BackgroundRelay relay(TestRelayOptions(db_->url, topic_url_));
    ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  }

  std::optional<TestDb> db_;
  std::string id_;
  int64_t created_at_us_ = 0;
};

// The message's timestamp is created_at in ms; the value is the payload's bytes.
TEST_F(PayloadKafka, MessageTimestampIsTheEventsCreatedAt) {
  const std::vector<KafkaRecord> records = ReadTopic(*broker_, "orders");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.payload, kPayload);
  EXPECT_EQ(records[0].event.created_at_us, created_at_us_ / 1000 * 1000)
      << "the Kafka timestamp is when the event was written, not when it was produced";
}

TEST_F(PayloadKafka, TailPrintsTheCommittedPayloadAndEventTime) {
  CommandResult tail = RunCourier({"tail", topic_url_, "--exit-at-end"});
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_NE(tail.out.find(std::string("\"payload\":") + kPayload + "}\n"), std::string::npos)
      << tail.out;
  EXPECT_NE(tail.out.find("\"created_at_us\":1704164645678000"), std::string::npos) << tail.out;
}

TEST_F(PayloadKafka, ConsumeExecGetsTheCommittedPayloadOnStdin) {
  TempDir dir;
  const std::string inbox = "sqlite://" + dir.File("inbox.db");
  ASSERT_OK(Migrate(inbox, TableNames{}));
  const std::string got = dir.File("stdin.jsonl");
  auto consumer = SpawnCourier({"consume", "--from", topic_url_, "--db", inbox, "--consumer", "c",
                                "--exec", "cat >> " + got},
                               dir.File("consume.log"));
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return ReadFile(got).find('\n') != std::string::npos; }))
      << ReadFile(dir.File("consume.log"));
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  const std::string line = ReadFile(got);
  EXPECT_NE(line.find(std::string("\"payload\":") + kPayload + "}\n"), std::string::npos) << line;
  EXPECT_NE(line.find("\"created_at_us\":1704164645678000"), std::string::npos) << line;
  EXPECT_NE(line.find(id_), std::string::npos) << line;
}

}  // namespace
}  // namespace courier::test
