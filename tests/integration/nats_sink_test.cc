// The NATS JetStream sink against a real `nats-server -js` (file storage).
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Order, the dedup key, refusals and outages are the sink contract's (sink_contract_test.cc);
// here what only the NATS sink does.
class NatsSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_OK(nats);
    nats_ = std::move(nats).value();
    ASSERT_OK(nats_->AddStream("ORDERS", {"order", "invoice"}));
  }

  RelayOptions Options() const {
    return TestRelayOptions(outbox_.db.url, nats_->Url("{aggregate_type}"));
  }

  std::unique_ptr<NatsServer> nats_;
  Outbox outbox_;
};

// Redelivery of the same event_id inside the stream's duplicate window is dropped by the
// server (Nats-Msg-Id): the retained-mode rows are reset and published again.
TEST_F(NatsSinkTest, StreamDropsRedeliveredEventsByMsgId) {
  outbox_.Commit(20, 2);
  RelayOptions o = Options();
  o.retain = true;
  ASSERT_OK(RunRelayOnce(o));
  ASSERT_OK(outbox_.db.Transaction({"UPDATE courier_outbox SET published_at = NULL"}));
  ASSERT_OK(RunRelayOnce(o));
  EXPECT_EQ(ReadNats(*nats_, "order").size(), 20u) << "the second copies were deduplicated";
}

TEST_F(NatsSinkTest, TailPrintsTheSubject) {
  outbox_.Commit(3, 1);
  CommandResult relay =
      RunCourier({"relay", "--source", outbox_.db.url, "--sink", nats_->Url("order"), "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  CommandResult tail = RunCourier({"tail", nats_->Url("order"), "--exit-at-end"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_EQ(std::count(tail.out.begin(), tail.out.end(), '\n'), 3) << tail.out;
  EXPECT_NE(tail.out.find("\"payload\":{\"seq\":3}"), std::string::npos) << tail.out;
}

// nats+tls:// against a server that speaks only TLS and wants a client certificate: events
// go out and tail reads them back; an untrusted server or a plain URL stops the relay with one
// line, the outbox untouched.
TEST(NatsTlsTest, MutualTlsDeliversAndAnUntrustedServerStopsTheRelay) {
  auto certs = TestCertificates::Make();
  ASSERT_OK(certs);
  auto nats = NatsServer::Start(certs->get());
  ASSERT_OK(nats);
  ASSERT_OK((*nats)->AddStream("ORDERS", {"order"}));
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 50, 3, &seq);
  CommandResult relay = RunCourier(
      {"relay", "--source", db.url, "--sink", (*nats)->Url("{aggregate_type}"), "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  EXPECT_EQ(ExpectDelivered(ReadNats(**nats, "order"), ids), 0);
  CommandResult tail = RunCourier({"tail", (*nats)->Url("order"), "--exit-at-end"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_EQ(std::count(tail.out.begin(), tail.out.end(), '\n'), 50) << tail.out;

  CommitEvents(db, 5, 1, &seq);
  const std::string url = (*nats)->Url("order");
  const std::string base = url.substr(0, url.find('?'));
  const std::string client = "&cert=" + (*certs)->cert() + "&key=" + (*certs)->key();
  std::string plain = base;
  plain.replace(0, std::string("nats+tls").size(), "nats");
  struct Case {
    std::string sink;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {base + "?cacert=" + (*certs)->other_ca() + client,
            "unable to get local issuer certificate"},
           {base + "?cacert=" + (*certs)->other_ca() + client, "cacert= must name the CA"},
           {base + client, "cacert= must name the CA"},  // the system's CAs do not know it
           {base + "?cacert=/nonexistent.pem", "cannot read CA certificates from /nonexistent.pem"},
           {plain, "the server wants TLS: use nats+tls://"},
           {plain + "?cacert=" + (*certs)->ca(), "use nats+tls:// to connect with TLS"},
       }) {
    CommandResult r = RunCourier({"relay", "--source", db.url, "--sink", c.sink, "--once"});
    EXPECT_EQ(r.exit_code, 2) << c.sink << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.sink << ": " << r.err;
    EXPECT_EQ(r.err.find("courier: error:"), r.err.rfind("courier: error:")) << r.err;
  }
  EXPECT_EQ(db.Count("courier_outbox"), 5) << "nothing was taken from the outbox";
}

}  // namespace
}  // namespace courier::test
