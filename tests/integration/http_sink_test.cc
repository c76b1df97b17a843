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

// Park policy, one aggregate's events e1..e4 with e2 answered 422 (its event type's path
// refuses), another aggregate's events beside them, all in one batch. The webhook sends an
// aggregate's events one after the other, so nothing after e2 may reach the receiver while e2
// is parked: e3 and e4 are held, not delivered (and later delivered a second time).
class HttpParkTest : public HttpSinkTest {
 protected:
  RelayOptions ParkOptions() const {
    return TestRelayOptions(db_->url, server_->Url("hooks/{event_type}"));
  }

  // Commits e1..e4 of order/a (e2 of type `rejected`) and three events of order/b, in one
  // transaction; returns their event ids in commit order, a's first.
  void CommitRefusedAmongOthers() {
    std::vector<std::string> statements;
    auto add = [&](const std::string& aggregate, const std::string& type, int seq) {
      const std::string id = NewUuidV7();
      (aggregate == "a" ? a_ : b_).push_back(id);
      statements.push_back(
          "INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type,"
          " payload) VALUES ('" +
          id + "', 'order', '" + aggregate + "', '" + type + "', '{\"seq\":" + std::to_string(seq) +
          "}')");
    };
    add("a", "Happened", 1);
    add("b", "Happened", 2);
    add("a", "rejected", 3);
    add("b", "Happened", 4);
    add("a", "Happened", 5);
    add("a", "Happened", 6);
    add("b", "Happened", 7);
    ASSERT_OK(db_->Transaction(statements));
  }

  // The event ids the receiver accepted for aggregate `aggregate`, in arrival order.
  std::vector<std::string> Delivered(const std::string& aggregate) const {
    std::vector<std::string> out;
    for (const KafkaRecord& r : ReadWebhook(*server_)) {
      if (r.event.aggregate_id == aggregate) out.push_back(r.event.event_id);
    }
    return out;
  }

  // Waits until the relay parked e2 with the receiver's answer and held e3, e4 behind it.
  void ExpectParkedAndHeld() {
    ASSERT_TRUE(WaitUntil([&] {
      return db_->Count("courier_outbox") == 0 && db_->Count("courier_dead_letter") == 3;
    }));
    EXPECT_EQ(db_->Count("courier_dead_letter WHERE status = 'parked' AND error LIKE"
                         " '%answered HTTP 422%' AND CAST(event_id AS text) = '" +
                         a_[1] + "'"),
              1);
    EXPECT_EQ(db_->Count("courier_dead_letter WHERE status = 'held'"), 2);
    EXPECT_EQ(Delivered("a"), std::vector<std::string>{a_[0]})
        << "nothing of the aggregate after the refused event reaches the receiver";
    EXPECT_EQ(Delivered("b"), b_) << "other aggregates flow";
  }

  Status DeadLetters(const std::vector<std::string>& args) {
    std::vector<std::string> command = {"dead-letters"};
    command.insert(command.end(), args.begin(), args.end());
    command.insert(command.end(), {"--source", db_->url});
    const CommandResult r = RunCourier(command);
    if (r.exit_code != 0) return InternalError("courier dead-letters: " + r.err);
    return Status::Ok();
  }

  std::vector<std::string> a_, b_;
};

TEST_F(HttpParkTest, RefusedEventHoldsItsAggregateAndDropReleasesTheRestOnceInOrder) {
  CommitRefusedAmongOthers();
  BackgroundRelay relay(ParkOptions());
  ExpectParkedAndHeld();
  auto parked = PgQuery(db_->url, "SELECT id FROM courier_dead_letter WHERE status = 'parked'");
  ASSERT_OK(parked);
  ASSERT_EQ(parked->size(), 1u);
  ASSERT_OK(DeadLetters({"drop", (*parked)[0]}));
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_dead_letter") == 0; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(Delivered("a"), (std::vector<std::string>{a_[0], a_[2], a_[3]}))
      << "after the drop the held events arrive once each, in order";
  EXPECT_EQ(Delivered("b"), b_);
}

TEST_F(HttpParkTest, RetriedUnfixedStaysParkedThenFixedDeliversTheRestInOrder) {
  CommitRefusedAmongOthers();
  BackgroundRelay relay(ParkOptions());
  ExpectParkedAndHeld();
  // Retried as it is: refused again, and e3, e4 stay behind it, not sent.
  ASSERT_OK(DeadLetters({"retry", "--all"}));
  ASSERT_TRUE(WaitUntil([&] {
    return db_->Count("courier_dead_letter WHERE status = 'parked' AND attempts = 2") == 1;
  }));
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE status = 'held'"), 2);
  EXPECT_EQ(Delivered("a"), std::vector<std::string>{a_[0]});
  // The cause corrected in the dead letter (the path that refuses it), then retried.
  ASSERT_OK(db_->Transaction(
      {"UPDATE courier_dead_letter SET event_type = 'Fixed' WHERE status = 'parked'"}));
  ASSERT_OK(DeadLetters({"retry", "--all"}));
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_dead_letter") == 0; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(Delivered("a"), a_) << "e1, e2, e3, e4, once each, in order";
  EXPECT_EQ(Delivered("b"), b_);
}

// `courier status` shows the relay's real throughput while one event is answered 503 again
// and again: the others are published, and the lease row counts them.
TEST_F(HttpSinkTest, StatusShowsThroughputWhileAnEventIsRetried) {
  Commit(1, 1, "unavailable");
  RelayOptions o = Options();
  o.lease = Duration(1000);  // renewed, with the count, every 250 ms
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().retries > 0; }));
  const std::set<std::string> ids = Commit(200, 10);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 1; }));
  ExpectDelivered(ReadWebhook(*server_), ids);
  std::string last;
  EXPECT_TRUE(WaitUntil([&] {
    const CommandResult st = RunCourier({"status", "--source", db_->url, "--json"});
    last = st.out + st.err;
    if (st.exit_code != 0) return false;
    const nlohmann::json j = nlohmann::json::parse(st.out, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("leases") || j["leases"].size() != 1) return false;
    const nlohmann::json& lease = j["leases"][0];
    return lease.value("live", false) && lease.value("published", -1) == 200 &&
           lease.value("per_second", 0.0) > 0;
  })) << last;
  const CommandResult human = RunCourier({"status", "--source", db_->url});
  EXPECT_NE(human.out.find("(200 since it took over)"), std::string::npos) << human.out;
  EXPECT_EQ(human.out.find("throughput         0.0 events/s"), std::string::npos) << human.out;
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
