// The sink contract, run once per broker against its real server: events arrive in order per
// aggregate, as an independent reader sees them, each carrying its event id (the dedup key); an
// event the broker refuses is parked as a dead letter with the broker's reason while its
// aggregate's later events are held and the rest flows, and a drop releases them; with the
// server away the relay retries, deletes nothing, and drains everything once it is back.
// What only one broker does (TLS, tail, routing, dedup windows, torn lines) stays in that
// broker's own test file.
#include <hiredis/hiredis.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "core/encoding.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Larger than every broker's default message limit (Kafka's message.max.bytes, NATS's
// max_payload, the test RabbitMQ's max_message_size); the webhook refuses by path instead.
constexpr int kRefusedPayloadBytes = 2 << 20;

// One broker under the contract: its server, a sink URL routing by aggregate type, an
// independent reader, how the broker refuses an event, and how it goes away.
class Broker {
 public:
  virtual ~Broker() = default;
  virtual std::string SinkUrl() const = 0;
  // The sink URL's scheme, as the dead letter records it.
  virtual std::string scheme() const = 0;
  // Every message of aggregate type `type`, oldest first, read outside the relay.
  virtual std::vector<KafkaRecord> Read(const std::string& type) = 0;
  // Makes the broker refuse the first event of aggregate type "blocked" (event type
  // "rejected", a payload of kRefusedPayloadBytes); returns the text of the broker's reason.
  // Empty: the broker refuses nothing.
  virtual std::string Refuse() = 0;
  // Lets the later events of "blocked" through once the refused one is dropped.
  virtual void Unrefuse() {}
  // The server away and back, its data kept. False: the sink has no server.
  virtual bool has_server() const { return true; }
  virtual Status Stop() = 0;
  virtual Status StartAgain() = 0;
  // Whether the reader reports the event's created_at.
  virtual bool carries_created_at() const { return true; }
  // Whether the relay itself retries while the server is away; librdkafka and the NATS
  // client keep the messages and reconnect on their own, and the relay waits for the acks.
  virtual bool relay_retries() const { return true; }
};

class KafkaBroker final : public Broker {
 public:
  Status Start() {
    COURIER_ASSIGN_OR_RETURN(broker_, DevBroker::Start(1));
    return Status::Ok();
  }
  std::string SinkUrl() const override {
    return "kafka://" + broker_->bootstrap() + "/{aggregate_type}";
  }
  std::string scheme() const override { return "kafka"; }
  std::vector<KafkaRecord> Read(const std::string& type) override {
    return ReadTopic(*broker_, type);
  }
  std::string Refuse() override { return "too large"; }
  bool relay_retries() const override { return false; }
  Status Stop() override {
    broker_->SetDown(true);
    return Status::Ok();
  }
  Status StartAgain() override {
    broker_->SetDown(false);
    return Status::Ok();
  }

 private:
  std::unique_ptr<DevBroker> broker_;
};

class RedisBroker final : public Broker {
 public:
  Status Start() {
    COURIER_ASSIGN_OR_RETURN(redis_, RedisServer::Start());
    return Status::Ok();
  }
  std::string SinkUrl() const override { return redis_->Url("{aggregate_type}"); }
  std::string scheme() const override { return "redis"; }
  std::vector<KafkaRecord> Read(const std::string& type) override {
    return ReadRedis(*redis_, type);
  }
  // A key of the wrong type refuses XADD for good.
  std::string Refuse() override {
    Command("SET blocked not-a-stream");
    return "WRONGTYPE";
  }
  void Unrefuse() override { Command("DEL blocked"); }
  Status Stop() override { return redis_->Stop(); }
  Status StartAgain() override { return redis_->StartAgain(); }

 private:
  void Command(const char* command) {
    auto endpoint = ParseRedisUrl(redis_->Url());
    ASSERT_OK(endpoint);
    auto conn = ConnectRedis(*endpoint, Duration(5000));
    ASSERT_OK(conn);
    auto* reply = static_cast<redisReply*>(redisCommand(conn->get(), command));
    ASSERT_NE(reply, nullptr);
    EXPECT_NE(reply->type, REDIS_REPLY_ERROR) << command;
    freeReplyObject(reply);
  }

  std::unique_ptr<RedisServer> redis_;
};

class NatsBroker final : public Broker {
 public:
  Status Start() {
    COURIER_ASSIGN_OR_RETURN(nats_, NatsServer::Start());
    return nats_->AddStream("EVENTS", {"order", "invoice", "blocked"});
  }
  std::string SinkUrl() const override { return nats_->Url("{aggregate_type}"); }
  std::string scheme() const override { return "nats"; }
  std::vector<KafkaRecord> Read(const std::string& type) override { return ReadNats(*nats_, type); }
  std::string Refuse() override { return "Maximum Payload Exceeded"; }
  bool relay_retries() const override { return false; }
  Status Stop() override { return nats_->Stop(); }
  Status StartAgain() override { return nats_->StartAgain(); }

 private:
  std::unique_ptr<NatsServer> nats_;
};

// One rabbitmq-server for the binary (it takes seconds to start), stopped when the binary
// exits; each test has its own exchange, with a queue per aggregate type.
class AmqpBroker final : public Broker {
 public:
  Status Start() {
    static std::unique_ptr<RabbitMqServer> shared = [] {
      auto server = RabbitMqServer::Start();
      EXPECT_OK(server);
      return server.ok() ? std::move(server).value() : nullptr;
    }();
    if (shared == nullptr) return InternalError("rabbitmq-server did not start");
    server_ = shared.get();
    exchange_ = "ex-" + NewUuidV7();
    COURIER_RETURN_IF_ERROR(server_->DeclareExchange(exchange_));
    for (const char* type : {"order", "invoice", "blocked"}) {
      COURIER_RETURN_IF_ERROR(server_->DeclareQueue(Queue(type), exchange_, type));
    }
    return Status::Ok();
  }
  std::string SinkUrl() const override {
    return server_->Url(exchange_, "routing_key={aggregate_type}");
  }
  std::string scheme() const override { return "amqp"; }
  std::vector<KafkaRecord> Read(const std::string& type) override {
    return ReadAmqp(*server_, Queue(type));
  }
  std::string Refuse() override { return "larger than configured max"; }
  Status Stop() override { return server_->Stop(); }
  Status StartAgain() override { return server_->StartAgain(); }

 private:
  std::string Queue(const std::string& type) const { return type + "-" + exchange_; }

  RabbitMqServer* server_ = nullptr;
  std::string exchange_;
};

class HttpBroker final : public Broker {
 public:
  Status Start() {
    COURIER_ASSIGN_OR_RETURN(server_, WebhookServer::Start());
    return Status::Ok();
  }
  // The receiver answers 422 to a path ending in /rejected.
  std::string SinkUrl() const override {
    return server_->Url("hooks/{aggregate_type}/{event_type}");
  }
  std::string scheme() const override { return "http"; }
  std::vector<KafkaRecord> Read(const std::string& type) override {
    std::vector<KafkaRecord> out;
    for (KafkaRecord& r : ReadWebhook(*server_)) {
      if (r.event.aggregate_type != type) continue;
      EXPECT_EQ(r.topic, "/hooks/" + type + "/" + r.event.event_type) << "routed by its URL";
      out.push_back(std::move(r));
    }
    return out;
  }
  std::string Refuse() override { return "answered HTTP 422"; }
  Status Stop() override { return server_->Stop(); }
  Status StartAgain() override { return server_->StartAgain(); }
  bool carries_created_at() const override { return false; }

 private:
  std::unique_ptr<WebhookServer> server_;
};

class FileBroker final : public Broker {
 public:
  Status Start() { return Status::Ok(); }
  std::string SinkUrl() const override { return "file://" + path(); }
  std::string scheme() const override { return "file"; }
  std::vector<KafkaRecord> Read(const std::string& type) override {
    std::vector<KafkaRecord> out;
    std::stringstream lines(ReadFile(path()));
    for (std::string line; std::getline(lines, line);) {
      auto event = EventFromJsonLine(line);
      EXPECT_OK(event);
      if (!event.ok() || event->aggregate_type != type) continue;
      KafkaRecord r;
      r.topic = type;
      r.event = std::move(event).value();
      out.push_back(std::move(r));
    }
    return out;
  }
  std::string Refuse() override { return ""; }
  bool has_server() const override { return false; }
  Status Stop() override { return Status::Ok(); }
  Status StartAgain() override { return Status::Ok(); }

 private:
  std::string path() const { return dir_.File("events.jsonl"); }
  TempDir dir_;
};

template <typename B>
Result<std::unique_ptr<Broker>> Make() {
  auto broker = std::make_unique<B>();
  COURIER_RETURN_IF_ERROR(broker->Start());
  return std::unique_ptr<Broker>(std::move(broker));
}

Result<std::unique_ptr<Broker>> StartBroker(const std::string& name) {
  if (name == "kafka") return Make<KafkaBroker>();
  if (name == "redis") return Make<RedisBroker>();
  if (name == "nats") return Make<NatsBroker>();
  if (name == "amqp") return Make<AmqpBroker>();
  if (name == "http") return Make<HttpBroker>();
  if (name == "file") return Make<FileBroker>();
  return InvalidArgumentError("no broker " + name);
}

// The dead letters' errors, one per line, for an assertion's message.
std::string DeadLetterErrors(const TestDb& db) {
  auto errors = PgQuery(db.url, "SELECT status || ': ' || error FROM courier_dead_letter");
  std::string out;
  if (errors.ok()) {
    for (const std::string& e : *errors) out += "\n  " + e.substr(0, 300);
  }
  return out;
}

class SinkContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto broker = StartBroker(GetParam());
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
  }

  RelayOptions Options() const { return TestRelayOptions(outbox_.db.url, broker_->SinkUrl()); }

  std::unique_ptr<Broker> broker_;
  Outbox outbox_;
};

TEST_P(SinkContract, DeliversEveryEventInOrderWithItsDedupKey) {
  const std::set<std::string> ids = outbox_.Commit(300, 10);
  ASSERT_OK(outbox_.db.Transaction(
      {"INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload, headers)"
       " VALUES ('invoice', 'i 1/2', 'Issued', '{\"seq\":1}', '{\"x-trace\":\"abc\"}')"}));
  RelayOptions o = Options();
  o.batch_size = 64;
  ASSERT_OK(RunRelayOnce(o));
  const std::vector<KafkaRecord> orders = broker_->Read("order");
  ASSERT_EQ(orders.size(), 300u);
  for (const KafkaRecord& r : orders) {
    EXPECT_TRUE(IsUuid(r.event.event_id)) << "every message carries event_id, the dedup key";
    EXPECT_EQ(r.event.aggregate_type, "order");
    EXPECT_EQ(r.event.event_type, "Happened");
    if (broker_->carries_created_at()) {
      EXPECT_GT(r.event.created_at_us, 0);
    }
  }
  EXPECT_EQ(ExpectDelivered(orders, ids), 0) << "in order per aggregate, each once";
  const std::vector<KafkaRecord> invoices = broker_->Read("invoice");
  ASSERT_EQ(invoices.size(), 1u);
  EXPECT_EQ(invoices[0].event.aggregate_id, "i 1/2");
  EXPECT_EQ(invoices[0].event.event_type, "Issued");
  EXPECT_EQ(invoices[0].event.headers, (Headers{{"x-trace", "abc"}}));
  EXPECT_EQ(invoices[0].event.payload, "{\"seq\":1}") << "the payload, byte for byte";
  EXPECT_EQ(outbox_.db.Count("courier_outbox"), 0);
}

// The refused event is parked with the broker's reason, its aggregate's later events are held
// (never sent ahead of it), the events around it flow; dropping it releases the held ones,
// delivered once each, in order.
TEST_P(SinkContract, RefusedEventIsDeadLetteredWithItsReasonAndTheRestFlows) {
  const std::string reason = broker_->Refuse();
  if (reason.empty()) GTEST_SKIP() << GetParam() << " refuses no event";
  std::set<std::string> ids = outbox_.Commit(10, 2);
  const std::string refused = NewUuidV7();
  std::set<std::string> held = {NewUuidV7(), NewUuidV7()};
  std::vector<std::string> statements = {
      "INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload)"
      " VALUES ('" +
      refused + "', 'blocked', 'b-1', 'rejected', json_build_object('seq', 1, 'pad', repeat('x', " +
      std::to_string(kRefusedPayloadBytes) + ")))"};
  int64_t seq = 2;
  for (const std::string& id : held) {
    statements.push_back(InsertEventSql(id, "b-1", seq++, "blocked"));
  }
  ASSERT_OK(outbox_.db.Transaction(statements));
  const std::set<std::string> after = outbox_.Commit(10, 2);
  ids.insert(after.begin(), after.end());

  ASSERT_OK(RunRelayOnce(Options()));
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE status = 'parked' AND"
                             " CAST(event_id AS text) = '" +
                             refused + "' AND error LIKE '%" + reason + "%' AND sink LIKE '" +
                             broker_->scheme() + "://%'"),
            1)
      << DeadLetterErrors(outbox_.db);
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE status = 'held'"), 2)
      << "the aggregate's later events wait behind the parked one";
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter WHERE length(CAST(payload AS TEXT)) > " +
                             std::to_string(kRefusedPayloadBytes)),
            1)
      << "the parked event keeps its payload";
  EXPECT_EQ(outbox_.db.Count("courier_outbox"), 0);
  EXPECT_EQ(ExpectDelivered(broker_->Read("order"), ids), 0);

  broker_->Unrefuse();
  ASSERT_OK(outbox_.db.Transaction({"DELETE FROM courier_dead_letter WHERE status = 'parked'"}));
  ASSERT_OK(RunRelayOnce(Options()));
  EXPECT_EQ(outbox_.db.Count("courier_dead_letter"), 0);
  const std::vector<KafkaRecord> blocked = broker_->Read("blocked");
  EXPECT_EQ(blocked.size(), 2u) << "nothing of the aggregate was sent before the drop";
  EXPECT_EQ(ExpectDelivered(blocked, held), 0) << "the held events once each, in order";
}

// G6: the server away for seconds while the application keeps committing: the relay retries,
// nothing is deleted without an ack, and everything drains once the server is back (with what
// it had acked before).
TEST_P(SinkContract, ServerAwayThenEverythingDrainsOnceItIsBack) {
  if (!broker_->has_server()) GTEST_SKIP() << GetParam() << " has no server";
  std::set<std::string> ids = outbox_.Commit(100, 5);
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return outbox_.db.Count("courier_outbox") == 0; }));
  ASSERT_OK(broker_->Stop());
  const std::set<std::string> during = outbox_.Commit(200, 5);
  ids.insert(during.begin(), during.end());
  ASSERT_TRUE(OutboxStaysAt(outbox_.db, 200, std::chrono::seconds(3)));
  if (broker_->relay_retries()) {
    EXPECT_GE(relay.stats().retries, 3) << "retried with backoff while away";
  }
  ASSERT_OK(broker_->StartAgain());
  ASSERT_TRUE(WaitUntil([&] { return outbox_.db.Count("courier_outbox") == 0; }, Duration(60000)));
  ASSERT_OK(relay.Stop());
  ExpectDelivered(broker_->Read("order"), ids);
}

INSTANTIATE_TEST_SUITE_P(Brokers, SinkContract,
                         ::testing::Values("kafka", "redis", "nats", "amqp", "http", "file"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace courier::test
