// The Redis Streams sink against a real redis-server (append-only file, fsync always).
#include <hiredis/hiredis.h>
#include <signal.h>

#include "core/uuid.h"
#include "sinks/redis.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class RedisSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start();
    ASSERT_OK(redis);
    redis_ = std::move(redis).value();
    db_ = std::make_unique<TestDb>(TestDb::Make(true));
  }

  RelayOptions Options() const {
    RelayOptions o = TestRelayOptions(db_->url, redis_->Url("{aggregate_type}"));
    return o;
  }

  std::set<std::string> Commit(int n, int aggregates, const std::string& type = "order") {
    return CommitEvents(*db_, n, aggregates, &seq_, type);
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<TestDb> db_;
  int64_t seq_ = 1;
};

TEST_F(RedisSinkTest, DeliversEveryEventInOrderWithItsDedupKey) {
  const std::set<std::string> ids = Commit(500, 10);
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
  const std::vector<KafkaRecord> orders = ReadRedis(*redis_, "order");
  ASSERT_EQ(orders.size(), 500u);
  for (const KafkaRecord& r : orders) {
    EXPECT_TRUE(IsUuid(r.event.event_id)) << "every entry carries event_id, the dedup key";
    EXPECT_EQ(r.event.event_type, "Happened");
    EXPECT_GT(r.event.created_at_us, 0);
  }
  EXPECT_EQ(ExpectDelivered(orders, ids), 0);
  const std::vector<KafkaRecord> invoices = ReadRedis(*redis_, "invoice");
  ASSERT_EQ(invoices.size(), 1u);
  EXPECT_EQ(invoices[0].event.headers, (Headers{{"trace_id", "abc"}}));
  EXPECT_EQ(invoices[0].event.aggregate_id, "i-1");
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
}

// G6: Redis stops for seconds; the application keeps committing, nothing is deleted without
// an ack, and the backlog drains once Redis is back (with what it had acked before).
TEST_F(RedisSinkTest, ServerStoppedThenBacklogDrains) {
  std::set<std::string> ids = Commit(100, 5);
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  ASSERT_OK(redis_->Stop());
  const std::set<std::string> during = Commit(300, 5);
  ids.insert(during.begin(), during.end());
  // Several seconds away, retried with backoff; the backlog stays whole meanwhile.
  ASSERT_TRUE(OutboxStaysAt(*db_, 300, std::chrono::seconds(3)));
  EXPECT_GE(relay.stats().retries, 3);
  ASSERT_OK(redis_->StartAgain());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(60000)));
  ASSERT_OK(relay.Stop());
  ExpectDelivered(ReadRedis(*redis_, "order"), ids);
}

// A key of the wrong type refuses XADD for good: the first event is parked, its aggregate's
// later ones held behind it, the rest flows.
TEST_F(RedisSinkTest, RefusedEventsAreDeadLetteredAndTheRestFlows) {
  auto endpoint = ParseRedisUrl(redis_->Url());
  ASSERT_OK(endpoint);
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  ASSERT_OK(conn);
  freeReplyObject(redisCommand(conn->get(), "SET blocked not-a-stream"));
  const std::set<std::string> ids = Commit(20, 2);
  Commit(3, 1, "blocked");
  RelayOptions o = Options();
  o.once = true;
  auto relay = Relay::Create(o);
  ASSERT_OK(relay);
  ASSERT_OK((*relay)->Run());
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE aggregate_type = 'blocked' AND error LIKE"
                       " '%WRONGTYPE%' AND sink LIKE 'redis://%' AND status = 'parked'"),
            1);
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE aggregate_type = 'blocked' AND status = 'held'"),
            2)
      << "the aggregate's later events wait behind the parked one";
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
  ExpectDelivered(ReadRedis(*redis_, "order"), ids);
}

TEST_F(RedisSinkTest, TailPrintsTheStream) {
  Commit(3, 1);
  CommandResult relay =
      RunCourier({"relay", "--source", db_->url, "--sink", redis_->Url("orders"), "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  CommandResult tail = RunCourier({"tail", redis_->Url("orders"), "--exit-at-end"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  size_t lines = 0;
  for (char c : tail.out) lines += c == '\n';
  EXPECT_EQ(lines, 3u) << tail.out;
  EXPECT_NE(tail.out.find("\"payload\":{\"seq\":3}"), std::string::npos) << tail.out;
  EXPECT_NE(tail.out.find("\"stream\":\"orders\""), std::string::npos) << tail.out;
}

TEST(RedisSinkUrl, BadSettingsAreOneLineErrors) {
  TempDir dir;
  const std::string source = "sqlite://" + dir.File("a.db");
  CommandResult r = RunCourier(
      {"relay", "--source", source, "--sink", "redis://127.0.0.1:6379/s?maxlen=abc", "--once"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("maxlen must be a positive number"), std::string::npos) << r.err;
  CommandResult port =
      RunCourier({"relay", "--source", source, "--sink", "redis://127.0.0.1:99999/s", "--once"});
  EXPECT_EQ(port.exit_code, 2);
  EXPECT_NE(port.err.find("bad port"), std::string::npos) << port.err;
}

}  // namespace
}  // namespace courier::test
