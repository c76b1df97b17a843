// The RabbitMQ sink against a real rabbitmq-server (one node for the suite; each test has its
// own exchange and queues).
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Order, the dedup key, refusals and outages are the sink contract's (sink_contract_test.cc);
// here what only the RabbitMQ sink does.
class AmqpSinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = RabbitMqServer::Start();
    ASSERT_OK(server);
    server_ = std::move(server).value().release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    exchange_ = "ex-" + name;
    queue_ = "orders-" + name;
    ASSERT_OK(server_->DeclareExchange(exchange_));
    ASSERT_OK(server_->DeclareQueue(queue_, exchange_, "order"));
  }

  RelayOptions Options() const {
    return TestRelayOptions(outbox_.db.url,
                            server_->Url(exchange_, "routing_key={aggregate_type}"));
  }

  static RabbitMqServer* server_;
  std::string exchange_;
  std::string queue_;
  Outbox outbox_;
};

RabbitMqServer* AmqpSinkTest::server_ = nullptr;

// Mandatory routing: an event no queue would take is not acked; it waits in the outbox (the
// other aggregate types flow) until a queue is bound for it.
TEST_F(AmqpSinkTest, UnroutableEventsWaitUntilAQueueIsBound) {
  std::set<std::string> shipments;
  std::vector<std::string> statements;
  for (int i = 0; i < 30; ++i) {
    const std::string id = NewUuidV7();
    shipments.insert(id);
    statements.push_back(
        InsertEventSql(id, "ship-" + std::to_string(i % 3), outbox_.seq++, "shipment"));
  }
  ASSERT_OK(outbox_.db.Transaction(statements));
  const std::set<std::string> orders = outbox_.Commit(50, 5);
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return ReadAmqp(*server_, queue_).size() == 50; }));
  ASSERT_TRUE(OutboxStaysAt(outbox_.db, 30, std::chrono::seconds(2)));
  ASSERT_OK(server_->DeclareQueue("shipments-" + exchange_, exchange_, "shipment"));
  ASSERT_TRUE(WaitUntil([&] { return outbox_.db.Count("courier_outbox") == 0; }));
  ASSERT_OK(relay.Stop());
  ExpectDelivered(ReadAmqp(*server_, "shipments-" + exchange_), shipments);
  ExpectDelivered(ReadAmqp(*server_, queue_), orders);
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter"), 0);
}

// A message above the broker's max_message_size closes the channel: that event alone is
// parked as a dead letter, the events of other aggregates around it are delivered in order, and
// the later events of its aggregate are held, not delivered (found by sending the unconfirmed
// messages again one by one, they were sent after it), until it is dropped: then they arrive
// once each, in order.
TEST_F(AmqpSinkTest, OversizedMessageIsDeadLetteredAndTheRestFlows) {
  std::set<std::string> ids = outbox_.Commit(20, 2);
  const std::string big = NewUuidV7();
  ASSERT_OK(outbox_.db.Transaction(
      {"INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload)"
       " VALUES ('" +
       big + "', 'order', 'agg-0', 'Happened', json_build_object('seq', 100, 'pad', repeat('x', " +
       std::to_string(2 << 20) + ")))"}));
  outbox_.seq = 101;
  const std::set<std::string> after = outbox_.Commit(20, 2);
  ids.insert(after.begin(), after.end());
  ASSERT_OK(RunRelayOnce(Options()));
  EXPECT_EQ(
      outbox_.db.Count("courier_dead_letter WHERE error LIKE '%larger than configured max%' AND"
                       " sink LIKE 'amqp://%' AND status = 'parked'"),
      1);
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE status = 'held'"), 10);
  EXPECT_EQ(outbox_.db.Count("courier_outbox"), 0);
  const std::vector<KafkaRecord> delivered = ReadAmqp(*server_, queue_);
  for (const KafkaRecord& r : delivered) {
    EXPECT_FALSE(r.event.aggregate_id == "agg-0" && SeqOf(r.event) >= 100)
        << "delivered behind the refused event: " << r.event.event_id;
  }
  // The unconfirmed messages are sent again when the channel closes: a message the broker had
  // routed before its confirm was lost with the channel arrives twice (at least once).
  std::set<std::string> distinct;
  for (const KafkaRecord& r : delivered) distinct.insert(r.event.event_id);
  EXPECT_EQ(distinct.size(), 30u) << "agg-1's 20 and agg-0's 10 before the refused one";
  const int64_t sent_again = static_cast<int64_t>(delivered.size() - distinct.size());

  ASSERT_OK(outbox_.db.Transaction({"DELETE FROM courier_dead_letter WHERE status = 'parked'"}));
  ASSERT_OK(RunRelayOnce(Options()));
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter"), 0);
  // The reader leaves the queue as it is: everything delivered, in the order it arrived.
  EXPECT_EQ(ExpectDelivered(ReadAmqp(*server_, queue_), ids), sent_again)
      << "the held events once each, in order";
}

TEST_F(AmqpSinkTest, TailReadsAQueueWithoutEmptyingIt) {
  outbox_.Commit(3, 1);
  CommandResult relay = RunCourier({"relay", "--source", outbox_.db.url, "--sink",
                                    server_->Url(exchange_, "routing_key=order"), "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  CommandResult tail = RunCourier({"tail", server_->Url("", "queue=" + queue_), "--exit-at-end"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_EQ(std::count(tail.out.begin(), tail.out.end(), '\n'), 3) << tail.out;
  EXPECT_NE(tail.out.find("\"payload\":{\"seq\":3}"), std::string::npos) << tail.out;
  EXPECT_NE(tail.out.find("\"queue\":\"" + queue_ + "\""), std::string::npos) << tail.out;
  EXPECT_TRUE(WaitUntil([&] {
    auto length = server_->QueueLength(queue_);
    return length.ok() && *length == 3;
  }));
}

TEST_F(AmqpSinkTest, MissingExchangeOrBadLoginStopsTheRelayWithOneLine) {
  CommandResult missing = RunCourier(
      {"relay", "--source", outbox_.db.url, "--sink", server_->Url("no-such-exchange"), "--once"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("exchange 'no-such-exchange' does not exist in vhost '/'"),
            std::string::npos)
      << missing.err;
  std::string bad_login = server_->Url(exchange_);
  bad_login.replace(bad_login.find("guest:guest"), 11, "guest:wrong");
  CommandResult login =
      RunCourier({"relay", "--source", outbox_.db.url, "--sink", bad_login, "--once"});
  EXPECT_EQ(login.exit_code, 2);
  EXPECT_NE(login.err.find("refused user 'guest'"), std::string::npos) << login.err;
  EXPECT_EQ(login.err.find("wrong"), std::string::npos) << "the password is never printed";
}

// amqps://: the broker's certificate is checked against cacert= (the system's CAs by default)
// and the URL's host, and the client certificate is sent. A certificate that does not verify,
// or TLS settings that cannot work, stop the relay with one line and leave the outbox as it was.
TEST_F(AmqpSinkTest, AmqpsVerifiesTheBrokerAndStopsOnAnUntrustedCertificate) {
  const TestCertificates& certs = server_->certificates();
  const std::string trusted = "routing_key=order&cacert=" + certs.ca();
  const std::set<std::string> ids = outbox_.Commit(50, 3);
  CommandResult relay = RunCourier(
      {"relay", "--source", outbox_.db.url, "--sink",
       server_->TlsUrl(exchange_, trusted + "&cert=" + certs.cert() + "&key=" + certs.key()),
       "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  EXPECT_EQ(ExpectDelivered(ReadAmqp(*server_, queue_), ids), 0);

  outbox_.Commit(5, 1);
  struct Case {
    std::string sink;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {server_->TlsUrl(exchange_, "routing_key=order"), "does not verify"},
           {server_->TlsUrl(exchange_, "cacert=" + certs.other_ca()), "does not verify"},
           {server_->TlsUrl(exchange_, "cacert=/nonexistent/ca.pem"),
            "cannot read CA certificates from /nonexistent/ca.pem"},
           {server_->TlsUrl(exchange_, trusted + "&cert=" + certs.cert()),
            "needs both cert=PATH and key=PATH"},
           {server_->Url(exchange_, trusted), "use amqps:// to connect with TLS"},
           {server_->TlsUrl(exchange_, "verify=maybe"), "verify must be true or false"},
       }) {
    CommandResult r = RunCourier({"relay", "--source", outbox_.db.url, "--sink", c.sink, "--once"});
    EXPECT_EQ(r.exit_code, 2) << c.sink << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.sink << ": " << r.err;
    EXPECT_EQ(r.err.find("courier: error:"), r.err.rfind("courier: error:")) << r.err;
    EXPECT_EQ(r.err.find("guest:guest"), std::string::npos) << "the password is never printed";
  }
  EXPECT_EQ(outbox_.db.Count("courier_outbox"), 5) << "nothing was taken from the outbox";

  // verify=false (tests, migrations) connects to any certificate.
  CommandResult unverified = RunCourier({"relay", "--source", outbox_.db.url, "--sink",
                                         server_->TlsUrl(exchange_, "verify=false"), "--once"});
  EXPECT_EQ(unverified.exit_code, 0) << unverified.err;
  EXPECT_EQ(outbox_.db.Count("courier_outbox"), 0);
}

}  // namespace
}  // namespace courier::test
