// The HTTP webhook sink against a real HTTP server (tests/support/webhook_server.py).
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Order, the dedup key, a 4xx refusal and the receiver away are the sink contract's
// (sink_contract_test.cc); here what only the webhook sink does.
class HttpSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = WebhookServer::Start();
    ASSERT_OK(server);
    server_ = std::move(server).value();
  }

  RelayOptions Options() const {
    return TestRelayOptions(outbox_.db.url, server_->Url("hooks/{aggregate_type}"));
  }

  std::unique_ptr<WebhookServer> server_;
  Outbox outbox_;
};

// 4xx (other than 408/429) parks the event; 5xx is retried until it goes through; the
// aggregate's later events are not delivered before it.
TEST_F(HttpSinkTest, ClientErrorsAreDeadLetteredServerErrorsRetried) {
  const std::set<std::string> ok = outbox_.Commit(20, 4);
  outbox_.Commit(3, 1, "rejected");
  const std::set<std::string> flaky = outbox_.Commit(6, 2, "flaky");
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return outbox_.db.Count("courier_outbox") == 0; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE aggregate_type = 'rejected' AND error LIKE"
                             " '%HTTP 422%' AND sink LIKE 'http://%' AND status = 'parked'"),
            1);
  EXPECT_EQ(
      outbox_.db.Count("courier_dead_letter WHERE aggregate_type = 'rejected' AND status = 'held'"),
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
    return TestRelayOptions(outbox_.db.url, server_->Url("hooks/{event_type}"));
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
    ASSERT_OK(outbox_.db.Transaction(statements));
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
      return outbox_.db.Count("courier_outbox") == 0 &&
             outbox_.db.Count("courier_dead_letter") == 3;
    }));
    EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE status = 'parked' AND error LIKE"
                               " '%answered HTTP 422%' AND CAST(event_id AS text) = '" +
                               a_[1] + "'"),
              1);
    EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE status = 'held'"), 2);
    EXPECT_EQ(Delivered("a"), std::vector<std::string>{a_[0]})
        << "nothing of the aggregate after the refused event reaches the receiver";
    EXPECT_EQ(Delivered("b"), b_) << "other aggregates flow";
  }

  Status DeadLetters(const std::vector<std::string>& args) {
    std::vector<std::string> command = {"dead-letters"};
    command.insert(command.end(), args.begin(), args.end());
    command.insert(command.end(), {"--source", outbox_.db.url});
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
  auto parked =
      PgQuery(outbox_.db.url, "SELECT id FROM courier_dead_letter WHERE status = 'parked'");
  ASSERT_OK(parked);
  ASSERT_EQ(parked->size(), 1u);
  ASSERT_OK(DeadLetters({"drop", (*parked)[0]}));
  ASSERT_TRUE(WaitUntil([&] { return outbox_.db.Count("courier_dead_letter") == 0; }));
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
    return outbox_.db.Count("courier_dead_letter WHERE status = 'parked' AND attempts = 2") == 1;
  }));
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE status = 'held'"), 2);
  EXPECT_EQ(Delivered("a"), std::vector<std::string>{a_[0]});
  // The cause corrected in the dead letter (the path that refuses it), then retried.
  ASSERT_OK(outbox_.db.Transaction(
      {"UPDATE courier_dead_letter SET event_type = 'Fixed' WHERE status = 'parked'"}));
  ASSERT_OK(DeadLetters({"retry", "--all"}));
  ASSERT_TRUE(WaitUntil([&] { return outbox_.db.Count("courier_dead_letter") == 0; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(Delivered("a"), a_) << "e1, e2, e3, e4, once each, in order";
  EXPECT_EQ(Delivered("b"), b_);
}

// `courier status` shows the relay's real throughput while one event is answered 503 again
// and again: the others are published, and the lease row counts them.
TEST_F(HttpSinkTest, StatusShowsThroughputWhileAnEventIsRetried) {
  outbox_.Commit(1, 1, "unavailable");
  RelayOptions o = Options();
  o.lease = Duration(1000);  // renewed, with the count, every 250 ms
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().retries > 0; }));
  const std::set<std::string> ids = outbox_.Commit(200, 10);
  ASSERT_TRUE(WaitUntil([&] { return outbox_.db.Count("courier_outbox") == 1; }));
  ExpectDelivered(ReadWebhook(*server_), ids);
  std::string last;
  EXPECT_TRUE(WaitUntil([&] {
    const CommandResult st = RunCourier({"status", "--source", outbox_.db.url, "--json"});
    last = st.out + st.err;
    if (st.exit_code != 0) return false;
    const nlohmann::json j = nlohmann::json::parse(st.out, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("leases") || j["leases"].size() != 1) return false;
    const nlohmann::json& lease = j["leases"][0];
    return lease.value("live", false) && lease.value("published", -1) == 200 &&
           lease.value("per_second", 0.0) > 0;
  })) << last;
  const CommandResult human = RunCourier({"status", "--source", outbox_.db.url});
  EXPECT_NE(human.out.find("(200 since it took over)"), std::string::npos) << human.out;
  EXPECT_EQ(human.out.find("throughput         0.0 events/s"), std::string::npos) << human.out;
}

}  // namespace
}  // namespace courier::test
