// The NATS JetStream sink against a real `nats-server -js` (file storage).
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class NatsSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_OK(nats);
    nats_ = std::move(nats).value();
    ASSERT_OK(nats_->AddStream("ORDERS", {"order", "invoice"}));
    db_ = std::make_unique<TestDb>(TestDb::Make(true));
  }

  RelayOptions Options() const {
    RelayOptions o = TestRelayOptions(db_->url, nats_->Url("{aggregate_type}"));
    return o;
  }

  std::set<std::string> Commit(int n, int aggregates, const std::string& type = "order") {
    return CommitEvents(*db_, n, aggregates, &seq_, type);
  }

  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<TestDb> db_;
  int64_t seq_ = 1;
};

TEST_F(NatsSinkTest, DeliversEveryEventInOrderWithItsMsgId) {
  const std::set<std::string> ids = Commit(400, 8);
  ASSERT_OK(
      db_->Transaction({"INSERT INTO courier_outbox (aggregate_type, aggregate_id,"
                        " event_type, payload, headers) VALUES ('invoice', 'i-1',"
                        " 'Issued', '{\"seq\":1}', '{\"trace_id\":\"abc\"}')"}));
  RelayOptions o = Options();
  o.once = true;
  o.batch_size = 64;
  auto relay = Relay::Create(o);
  ASSERT_OK(relay);
  ASSERT_OK((*relay)->Run());
  const std::vector<KafkaRecord> orders = ReadNats(*nats_, "order");
  ASSERT_EQ(orders.size(), 400u);
  for (const KafkaRecord& r : orders) EXPECT_TRUE(IsUuid(r.event.event_id));
  EXPECT_EQ(ExpectDelivered(orders, ids), 0);
  const std::vector<KafkaRecord> invoices = ReadNats(*nats_, "invoice");
  ASSERT_EQ(invoices.size(), 1u);
  EXPECT_EQ(invoices[0].event.headers, (Headers{{"trace_id", "abc"}}));
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
}

// Redelivery of the same event_id inside the stream's duplicate window is dropped by the
// server (Nats-Msg-Id): the retained-mode rows are reset and published again.
TEST_F(NatsSinkTest, StreamDropsRedeliveredEventsByMsgId) {
  const std::set<std::string> ids = Commit(20, 2);
  RelayOptions o = Options();
  o.once = true;
  o.retain = true;
  ASSERT_OK(Relay::Create(o).value()->Run());
  ASSERT_OK(db_->Transaction({"UPDATE courier_outbox SET published_at = NULL"}));
  ASSERT_OK(Relay::Create(o).value()->Run());
  EXPECT_EQ(ReadNats(*nats_, "order").size(), 20u) << "the second copies were deduplicated";
}

// G6: the server stops for seconds; the backlog waits in the outbox and drains after.
TEST_F(NatsSinkTest, ServerStoppedThenBacklogDrains) {
  std::set<std::string> ids = Commit(100, 5);
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  ASSERT_OK(nats_->Stop());
  const std::set<std::string> during = Commit(200, 5);
  ids.insert(during.begin(), during.end());
  ASSERT_TRUE(OutboxStaysAt(*db_, 200, std::chrono::seconds(3)));
  ASSERT_OK(nats_->StartAgain());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(60000)));
  ASSERT_OK(relay.Stop());
  ExpectDelivered(ReadNats(*nats_, "order"), ids);
}

TEST_F(NatsSinkTest, TailPrintsTheSubject) {
  Commit(3, 1);
  CommandResult relay =
      RunCourier({"relay", "--source", db_->url, "--sink", nats_->Url("order"), "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  CommandResult tail = RunCourier({"tail", nats_->Url("order"), "--exit-at-end"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_EQ(std::count(tail.out.begin(), tail.out.end(), '\n'), 3) << tail.out;
  EXPECT_NE(tail.out.find("\"payload\":{\"seq\":3}"), std::string::npos) << tail.out;
}

}  // namespace
}  // namespace courier::test
