// The HTTP webhook sink against a real HTTP server (tests/support/webhook_server.py).
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class HttpSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = WebhookServer::Start();
    ASSERT_OK(server);
    server_ = std::move(server).value();
    db_ = std::make_unique<TestDb>(TestDb::Make(true));
  }

  RelayOptions Options() const {
    RelayOptions o = TestRelayOptions(db_->url, server_->Url("hooks/{aggregate_type}"));
    return o;
  }

  std::set<std::string> Commit(int n, int aggregates, const std::string& type = "order") {
    return CommitEvents(*db_, n, aggregates, &seq_, type);
  }

  Status RunOnce() {
    RelayOptions o = Options();
    o.once = true;
    auto relay = Relay::Create(o);
    if (!relay.ok()) return relay.status();
    return (*relay)->Run();
  }

  std::unique_ptr<WebhookServer> server_;
  std::unique_ptr<TestDb> db_;
  int64_t seq_ = 1;
};

TEST_F(HttpSinkTest, PostsEveryEventInOrderWithItsIdempotencyKey) {
  const std::set<std::string> ids = Commit(300, 12);
  ASSERT_OK(
      db_->Transaction({"INSERT INTO courier_outbox (aggregate_type, aggregate_id,"
                        " event_type, payload, headers) VALUES ('invoice', 'i 1/2',"
                        " 'Issued', '{\"seq\":1}', '{\"x-trace\":\"abc\"}')"}));
  ASSERT_OK(RunOnce());
  const std::vector<KafkaRecord> records = ReadWebhook(*server_);
  std::vector<KafkaRecord> orders;
  for (const KafkaRecord& r : records) {
    EXPECT_TRUE(IsUuid(r.event.event_id)) << "every request has Idempotency-Key = event_id";
    if (r.event.aggregate_type == "order") {
      EXPECT_EQ(r.topic, "/hooks/order");
      EXPECT_EQ(r.event.event_type, "Happened");
      orders.push_back(r);
    } else {
      EXPECT_EQ(r.topic, "/hooks/invoice");
      EXPECT_EQ(r.event.aggregate_id, "i 1/2");
      EXPECT_EQ(r.event.headers, (Headers{{"x-trace", "abc"}}));
      EXPECT_EQ(r.event.payload, "{\"seq\":1}") << "the body is the payload, byte for byte";
    }
  }
  EXPECT_EQ(records.size(), 301u);
  EXPECT_EQ(ExpectDelivered(orders, ids), 0) << "in order per aggregate, each once";
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
}

// 4xx (other than 408/429) parks the event; 5xx is retried until it goes through; the
// aggregate's later events are not delivered before it.
TEST_F(HttpSinkTest, ClientErrorsAreDeadLetteredServerErrorsRetried) {
  const std::set<std::string> ok = Commit(20, 4);
  Commit(3, 1, "rejected");
  const std::set<std::string> flaky = Commit(6, 2, "flaky");
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE aggregate_type = 'rejected' AND error LIKE"
                       " '%HTTP 422%' AND sink LIKE 'http://%' AND status = 'parked'"),
            1);
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE aggregate_type = 'rejected' AND status = 'held'"),
            2);
  std::vector<KafkaRecord> flaky_records, ok_records;
  for (const KafkaRecord& r : ReadWebhook(*server_)) {
    (r.event.aggregate_type == "flaky" ? flaky_records : ok_records).push_back(r);
  }
  EXPECT_EQ(ExpectDelivered(flaky_records, flaky), 0);
  EXPECT_EQ(ExpectDelivered(ok_records, ok), 0);
  EXPECT_GT(relay.stats().retries, 0);
}

// G6: the receiver is down for seconds; nothing is deleted meanwhile; the backlog drains.
TEST_F(HttpSinkTest, ReceiverDownThenBacklogDrains) {
  std::set<std::string> ids = Commit(50, 5);
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  ASSERT_OK(server_->Stop());
  const std::set<std::string> during = Commit(200, 5);
  ids.insert(during.begin(), during.end());
  ASSERT_TRUE(OutboxStaysAt(*db_, 200, std::chrono::seconds(3)));
  ASSERT_OK(server_->StartAgain());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(60000)));
  ASSERT_OK(relay.Stop());
  ExpectDelivered(ReadWebhook(*server_), ids);
}

}  // namespace
}  // namespace courier::test
