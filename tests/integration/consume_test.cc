// `courier consume` against real brokers: duplicates reach the handler once, a consumer killed
// between its commit and its ack is skipped on redelivery, a poison event is parked.
#include <signal.h>
#include <stdlib.h>

#include "brokers/sink.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Appends each event it gets to a file, one line each; fails for events marked poison.
std::string Handler(const std::string& file) {
  return "read line; case \"$line\" in *poison*) exit 3;; esac; echo \"$line\" >> " + file;
}

std::vector<Event> MakeEvents(int n, const std::string& marker = "") {
  std::vector<Event> events;
  for (int i = 0; i < n; ++i) {
    Event e;
    e.event_id = NewUuidV7();
    e.aggregate_type = "order";
    e.aggregate_id = "o-" + std::to_string(i % 3);
    e.event_type = "OrderCreated";
    e.payload =
        "{\"seq\":" + std::to_string(i + 1) + (marker.empty() ? "" : ",\"" + marker + "\":1") + "}";
    e.created_at_us = 1700000000000000 + i;
    events.push_back(std::move(e));
  }
  return events;
}

// Publishes `events` through a sink, `times` times over.
void Publish(const std::string& sink_url, const std::vector<Event>& events, int times = 1) {
  auto sink = MakeSink({.url = sink_url});
  ASSERT_OK(sink);
  ASSERT_OK((*sink)->Open());
  const StopSignal never;
  for (int t = 0; t < times; ++t) {
    for (const Status& st : (*sink)->Publish(events, never)) ASSERT_OK(st);
  }
}

size_t Lines(const std::string& path) {
  const std::string text = ReadFile(path);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = 0; (p = text.find(what, p)) != std::string::npos; p += what.size()) ++n;
  return n;
}

class ConsumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    inbox_db_ = "sqlite://" + dir_.File("inbox.db");
    ASSERT_OK(Migrate(inbox_db_, TableNames{}));
  }

  std::vector<std::string> Args(const std::string& from, const std::string& handler_file) const {
    return {"consume",     "--from",         from,
            "--db",        inbox_db_,        "--consumer",
            "inventory",   "--exec",         Handler(handler_file),
            "--log-level", "debug",          "--backoff-initial",
            "10ms",        "--max-attempts", "3"};
  }

  int64_t Count(const std::string& table_and_where) const {
    auto db = SqliteOpen(inbox_db_.substr(9), false);
    if (!db.ok()) return -1;
    auto stmt = SqlitePrepare(db->get(), "SELECT count(*) FROM " + table_and_where);
    if (!stmt.ok() || sqlite3_step(stmt->get()) != SQLITE_ROW) return -1;
    return sqlite3_column_int64(stmt->get(), 0);
  }

  TempDir dir_;
  std::string inbox_db_;
};

enum class Kind { kKafka, kRedis, kNats, kAmqp };

// A real broker with a destination the sinks publish to and `courier consume` reads from.
struct Broker {
  std::unique_ptr<DevBroker> kafka;
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<NatsServer> nats;
  std::unique_ptr<RabbitMqServer> rabbit;
  std::string publish_url;
  std::string consume_url;
};

Broker StartBroker(Kind kind) {
  Broker b;
  switch (kind) {
    case Kind::kKafka: {
      auto broker = DevBroker::Start(1);
      EXPECT_OK(broker);
      if (!broker.ok()) return b;
      b.kafka = std::move(broker).value();
      EXPECT_OK(b.kafka->CreateTopic("orders", 2));
      b.publish_url = "kafka://" + b.kafka->bootstrap() + "/orders";
      // A killed member leaves the group after its session times out.
      b.consume_url = b.publish_url + "?session.timeout.ms=6000&heartbeat.interval.ms=500";
      break;
    }
    case Kind::kRedis: {
      auto redis = RedisServer::Start();
      EXPECT_OK(redis);
      if (!redis.ok()) return b;
      b.redis = std::move(redis).value();
      b.publish_url = b.consume_url = b.redis->Url("orders");
      break;
    }
    case Kind::kNats: {
      auto nats = NatsServer::Start();
      EXPECT_OK(nats);
      if (!nats.ok()) return b;
      b.nats = std::move(nats).value();
      EXPECT_OK(b.nats->AddStream("ORDERS", {"orders"}));
      b.publish_url = b.consume_url = b.nats->Url("orders");
      break;
    }
    case Kind::kAmqp: {
      auto rabbit = RabbitMqServer::Start();
      EXPECT_OK(rabbit);
      if (!rabbit.ok()) return b;
      b.rabbit = std::move(rabbit).value();
      EXPECT_OK(b.rabbit->DeclareExchange("events"));
      EXPECT_OK(b.rabbit->DeclareQueue("orders", "events", "order"));
      b.publish_url = b.rabbit->Url("events");
      b.consume_url = b.rabbit->Url("", "queue=orders");
      break;
    }
  }
  return b;
}

class ConsumeFromTest : public ConsumeTest, public ::testing::WithParamInterface<Kind> {};

TEST_P(ConsumeFromTest, EventsDeliveredOnceTwiceOrTenTimesReachTheHandlerOnce) {
  Broker broker = StartBroker(GetParam());
  ASSERT_FALSE(broker.publish_url.empty()) << "the broker did not start";
  Publish(broker.publish_url, MakeEvents(10));
  Publish(broker.publish_url, MakeEvents(5), 2);
  Publish(broker.publish_url, MakeEvents(5), 10);  // 70 messages, 20 events
  const std::string handled = dir_.File("handled.jsonl");
  const std::string log = dir_.File("consume.log");
  auto consumer = SpawnCourier(Args(broker.consume_url, handled), log);
  ASSERT_OK(consumer);
  // A JetStream stream drops the repeats itself (Nats-Msg-Id): its consumer sees 20 messages.
  const size_t duplicates = GetParam() == Kind::kNats ? 0 : 50;
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Count("courier_inbox") == 20 &&
               Occurrences(ReadFile(log), "duplicate skipped") == duplicates;
      },
      Duration(60000)))
      << ReadFile(log);
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  EXPECT_EQ(Lines(handled), 20u);
  EXPECT_EQ(Count("courier_inbox WHERE consumer = 'inventory'"), 20);
  EXPECT_NE(ReadFile(log).find("consumer stopped handled=20 duplicates=" +
                               std::to_string(duplicates) + " parked=0"),
            std::string::npos)
      << ReadFile(log);
}

// Killed after its commit and before its ack: the message comes again (Kafka: the offset was
// not committed; Redis: the entry stays pending and another member takes it over; NATS: the
// AckWait passes; RabbitMQ: the broker requeues it), and the inbox skips it. The handler saw
// each event once.
TEST_P(ConsumeFromTest, KilledBetweenCommitAndAckIsSkippedOnRedelivery) {
  Broker broker = StartBroker(GetParam());
  ASSERT_FALSE(broker.publish_url.empty()) << "the broker did not start";
  Publish(broker.publish_url, MakeEvents(5));
  const std::string handled = dir_.File("handled.jsonl");
  const std::string log = dir_.File("consume.log");
  std::vector<std::string> args = Args(broker.consume_url, handled);
  args.insert(args.end(), {"--claim-idle", "500ms"});
  ::setenv("COURIER_FAILPOINTS", "consume-after-commit", 1);
  auto crashing = SpawnCourier(args, log);
  ::unsetenv("COURIER_FAILPOINTS");
  ASSERT_OK(crashing);
  EXPECT_EQ(crashing->Wait(Duration(30000)), 128 + SIGKILL);
  ASSERT_EQ(Lines(handled), 1u) << "committed once, then killed before the ack";
  ASSERT_EQ(Count("courier_inbox"), 1);

  auto consumer = SpawnCourier(args, log);
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return Count("courier_inbox") == 5; }, Duration(60000)))
      << ReadFile(log);
  ASSERT_TRUE(WaitUntil([&] { return Occurrences(ReadFile(log), "duplicate skipped") == 1; }))
      << ReadFile(log);
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  EXPECT_EQ(Lines(handled), 5u) << "the redelivered message did not reach the handler again";
}

INSTANTIATE_TEST_SUITE_P(Brokers, ConsumeFromTest,
                         ::testing::Values(Kind::kKafka, Kind::kRedis, Kind::kNats, Kind::kAmqp),
                         [](const auto& info) {
                           switch (info.param) {
                             case Kind::kKafka:
                               return "Kafka";
                             case Kind::kRedis:
                               return "Redis";
                             case Kind::kNats:
                               return "Nats";
                             case Kind::kAmqp:
                               break;
                           }
                           return "Amqp";
                         });

TEST_F(ConsumeTest, PoisonEventIsParkedAndTheOthersGoOn) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  Publish((*redis)->Url("orders"), MakeEvents(3));
  Publish((*redis)->Url("orders"), MakeEvents(1, "poison"));
  Publish((*redis)->Url("orders"), MakeEvents(3));
  const std::string handled = dir_.File("handled.jsonl");
  const std::string log = dir_.File("consume.log");
  std::vector<std::string> args = Args((*redis)->Url("orders"), handled);
  auto consumer = SpawnCourier(args, log);
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return Lines(handled) == 6; }, Duration(30000))) << ReadFile(log);
  ASSERT_TRUE(WaitUntil([&] {
    return Count(
               "courier_inbox_parked WHERE attempts = 3 AND error = 'handler exited with 3'"
               " AND event LIKE '%poison%'") == 1;
  }));
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  EXPECT_EQ(Count("courier_inbox"), 6) << "the parked event holds no claim";
}

// --inbox-retention prunes this consumer's old entries while it runs; recent ones stay.
TEST_F(ConsumeTest, RetentionPrunesOldInboxEntries) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  {
    auto db = SqliteOpen(inbox_db_.substr(9), false);
    ASSERT_OK(db);
    ASSERT_OK(SqliteExec(db->get(),
                         "INSERT INTO courier_inbox (consumer, event_id, processed_at) VALUES"
                         " ('inventory', 'old-1', '2000-01-01T00:00:00.000Z'),"
                         " ('inventory', 'old-2', '2000-01-01T00:00:00.000Z'),"
                         " ('billing', 'old-3', '2000-01-01T00:00:00.000Z'),"
                         " ('inventory', 'recent', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"));
  }
  std::vector<std::string> args = Args((*redis)->Url("orders"), dir_.File("handled.jsonl"));
  args.insert(args.end(), {"--inbox-retention", "1d"});
  auto consumer = SpawnCourier(args, dir_.File("consume.log"));
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return Count("courier_inbox WHERE event_id LIKE 'old-%'") == 1; }))
      << ReadFile(dir_.File("consume.log"));
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  EXPECT_EQ(Count("courier_inbox WHERE event_id = 'recent'"), 1);
  EXPECT_EQ(Count("courier_inbox WHERE consumer = 'billing'"), 1) << "another consumer's";
}

// An HTTP handler in PostgreSQL-kept inbox mode: a 503 is retried, each event POSTed once
// with its Idempotency-Key after that.
TEST(ConsumeHttp, HandlerAnsweringLaterGetsEachEventOnce) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("orders", 1));
  const std::string topic = "kafka://" + (*broker)->bootstrap() + "/orders";
  const std::vector<Event> events = MakeEvents(8);
  Publish(topic, events, 3);
  auto webhook = WebhookServer::Start();
  ASSERT_OK(webhook);
  TestDb db = TestDb::Make(true);
  TempDir dir;
  auto consumer =
      SpawnCourier({"consume", "--from", topic, "--db", db.url, "--consumer", "mailer", "--to",
                    (*webhook)->Url("hooks/flaky"), "--backoff-initial", "10ms"},
                   dir.File("consume.log"));
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_inbox") == 8; }, Duration(30000)))
      << ReadFile(dir.File("consume.log"));
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  std::set<std::string> ids;
  for (const Event& e : events) ids.insert(e.event_id);
  EXPECT_EQ(ExpectDelivered(ReadWebhook(**webhook), ids), 0) << "one successful POST each";
}

TEST(ConsumeCli, BadInputIsOneLineAndExit2) {
  TempDir dir;
  const std::string db = "sqlite://" + dir.File("a.db");
  ASSERT_OK(Migrate(db, TableNames{}));
  CommandResult scheme = RunCourier(
      {"consume", "--from", "mqtt://h/x", "--db", db, "--consumer", "c", "--exec", "true"});
  EXPECT_EQ(scheme.exit_code, 2);
  EXPECT_NE(scheme.err.find("consume reads kafka://"), std::string::npos) << scheme.err;
  CommandResult both =
      RunCourier({"consume", "--from", "redis://127.0.0.1:1/s", "--db", db, "--consumer", "c"});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.err.find("--to http(s)://... or --exec COMMAND"), std::string::npos) << both.err;
}

}  // namespace
}  // namespace courier::test
