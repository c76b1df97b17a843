// The Redis cache sink against a real redis-server: the newest payload per aggregate, deletes,
// and no stale value under redelivery, in both source modes.
#include <hiredis/hiredis.h>

#include <cstdio>

#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class CacheSinkTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start();
    ASSERT_OK(redis);
    redis_ = std::move(redis).value();
    auto endpoint = ParseRedisUrl(redis_->Url());
    ASSERT_OK(endpoint);
    auto conn = ConnectRedis(*endpoint, Duration(5000));
    ASSERT_OK(conn);
    conn_ = std::move(conn).value();
    db_ = std::make_unique<TestDb>(TestDb::Make(true));
  }

  bool cdc() const { return GetParam() == "cdc"; }

  RelayOptions Options(const std::string& query = "delete_on=Deleted") const {
    RelayOptions o = TestRelayOptions(
        db_->url, "redis-cache://127.0.0.1:" + std::to_string(redis_->port()) + "/cache?" + query);
    o.mode = cdc() ? RelayOptions::Mode::kCdc : RelayOptions::Mode::kPoll;
    o.once = true;
    return o;
  }

  // Inserts one event and returns its row id.
  int64_t Insert(const std::string& aggregate_id, const std::string& event_type,
                 const std::string& payload, const std::string& aggregate_type = "order") {
    auto rows = PgQuery(db_->url,
                        "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type,"
                        " payload) VALUES ('" +
                            aggregate_type + "', '" + aggregate_id + "', '" + event_type + "', '" +
                            payload + "') RETURNING id");
    EXPECT_OK(rows);
    return rows.ok() && !rows->empty() ? std::stoll((*rows)[0]) : 0;
  }

  std::optional<std::string> Get(const std::string& key) {
    auto* reply = static_cast<redisReply*>(redisCommand(conn_.get(), "GET %s", key.c_str()));
    EXPECT_NE(reply, nullptr);
    std::optional<std::string> value;
    if (reply != nullptr && reply->type == REDIS_REPLY_STRING) {
      value.emplace(reply->str, reply->len);
    }
    if (reply != nullptr) freeReplyObject(reply);
    return value;
  }

  long long Ttl(const std::string& key) {
    auto* reply = static_cast<redisReply*>(redisCommand(conn_.get(), "TTL %s", key.c_str()));
    const long long ttl = reply != nullptr ? reply->integer : -3;
    if (reply != nullptr) freeReplyObject(reply);
    return ttl;
  }

  static std::string Version(int64_t row_id) {
    char text[24];
    std::snprintf(text, sizeof text, "%020lld", static_cast<long long>(row_id));
    return text;
  }

  void Run(const RelayOptions& o) {
    auto relay = Relay::Create(o);
    ASSERT_OK(relay);
    ASSERT_OK((*relay)->Run());
  }

  std::unique_ptr<RedisServer> redis_;
  RedisConn conn_;
  std::unique_ptr<TestDb> db_;
};

TEST_P(CacheSinkTest, HoldsTheNewestPayloadAndDeletesOnTheConfiguredType) {
  if (cdc()) {
    ASSERT_EQ(RunCourier({"migrate", "--source", db_->url, "--mode", "cdc"}).exit_code, 0);
  }
  Insert("a-1", "Created", R"({"v":1})");
  const int64_t newest = Insert("a-1", "Updated", R"({"v":2})");
  Insert("a-2", "Created", R"({"v":3})");
  const int64_t deleted = Insert("a-2", "Deleted", R"({})");
  Insert("i-1", "Issued", R"({"total":5})", "invoice");
  if (cdc()) {
    // A logical message is no row: it has no version, so it is parked, not applied.
    ASSERT_OK(db_->Transaction(
        {"SELECT pg_logical_emit_message(true, 'courier', '{\"aggregate_type\":\"order\","
         "\"aggregate_id\":\"a-9\",\"event_type\":\"Created\",\"payload\":{}}')"}));
  }
  // CDC: held behind the parked message of its aggregate, never applied before it.
  Insert("a-9", "Updated", R"({"v":9})");
  Run(Options());
  EXPECT_EQ(Get("cache:order:a-9"),
            cdc() ? std::nullopt : std::optional<std::string>(R"({"v":9})"));
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE status = 'held'"), cdc() ? 1 : 0);
  EXPECT_EQ(Get("cache:order:a-1"), R"({"v":2})");
  EXPECT_EQ(Get("courier:version:cache:order:a-1"), Version(newest)) << "the row id, in both modes";
  EXPECT_EQ(Get("cache:order:a-2"), std::nullopt) << "deleted by its Deleted event";
  EXPECT_EQ(Get("courier:version:cache:order:a-2"), Version(deleted)) << "the delete is remembered";
  EXPECT_EQ(Get("cache:invoice:i-1"), R"({"total":5})");
  EXPECT_EQ(Ttl("cache:order:a-1"), -1) << "no expiry unless ttl is set";
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE error LIKE '%no outbox row%'"), cdc() ? 1 : 0);
}

// Redelivery, also of older events after newer ones were applied (a retried batch, a crash
// between the cache write and the checkpoint, a reset in retain mode): never stale, never
// resurrected after a delete. The events first go out in the test's mode, then again by
// polling: versions are the same in both modes, so switching modes cannot go back either.
TEST_P(CacheSinkTest, RedeliveredOlderEventsNeverMakeItStale) {
  if (cdc()) {
    ASSERT_EQ(RunCourier({"migrate", "--source", db_->url, "--mode", "cdc"}).exit_code, 0);
  }
  std::vector<int64_t> ids;
  for (int v = 1; v <= 5; ++v) {
    ids.push_back(Insert("a-1", "Updated", R"({"v":)" + std::to_string(v) + "}"));
  }
  const int64_t created = Insert("a-2", "Created", R"({"v":10})");
  Insert("a-2", "Deleted", R"({})");
  RelayOptions o = Options();
  o.retain = true;
  Run(o);
  ASSERT_EQ(db_->Count("courier_outbox WHERE published_at IS NULL"), 0);
  ASSERT_EQ(Get("cache:order:a-1"), R"({"v":5})");
  ASSERT_EQ(Get("cache:order:a-2"), std::nullopt);
  // The older events go out again, alone.
  o.mode = RelayOptions::Mode::kPoll;
  ASSERT_OK(db_->Transaction({"UPDATE courier_outbox SET published_at = NULL WHERE id <= " +
                              std::to_string(ids[2]) + " OR id = " + std::to_string(created)}));
  Run(o);
  EXPECT_EQ(db_->Count("courier_outbox WHERE published_at IS NULL"), 0) << "stale events are acked";
  EXPECT_EQ(Get("cache:order:a-1"), R"({"v":5})");
  EXPECT_EQ(Get("cache:order:a-2"), std::nullopt);
  // Everything again, in order: still the newest.
  ASSERT_OK(db_->Transaction({"UPDATE courier_outbox SET published_at = NULL"}));
  Run(o);
  EXPECT_EQ(Get("cache:order:a-1"), R"({"v":5})");
  EXPECT_EQ(Get("cache:order:a-2"), std::nullopt);
}

// G6: Redis stops for seconds; the updates wait in the outbox and are applied after.
TEST_P(CacheSinkTest, ServerStoppedThenBacklogDrains) {
  if (cdc()) {
    ASSERT_EQ(RunCourier({"migrate", "--source", db_->url, "--mode", "cdc"}).exit_code, 0);
  }
  Insert("a-1", "Created", R"({"v":1})");
  RelayOptions o = Options();
  o.once = false;
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));
  ASSERT_OK(redis_->Stop());
  for (int v = 2; v <= 20; ++v)
    Insert("a-" + std::to_string(v % 4), "Updated", R"({"v":)" + std::to_string(v) + "}");
  ASSERT_TRUE(OutboxStaysAt(*db_, 19, std::chrono::seconds(3)));
  ASSERT_OK(redis_->StartAgain());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(60000)));
  ASSERT_OK(relay.Stop());
  auto endpoint = ParseRedisUrl(redis_->Url());
  ASSERT_OK(endpoint);
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  ASSERT_OK(conn);
  conn_ = std::move(conn).value();
  EXPECT_EQ(Get("cache:order:a-1"), R"({"v":17})");
  EXPECT_EQ(Get("cache:order:a-0"), R"({"v":20})");
  EXPECT_EQ(Get("cache:order:a-3"), R"({"v":19})");
}

TEST_P(CacheSinkTest, TtlExpiresValueAndVersion) {
  if (cdc()) {
    ASSERT_EQ(RunCourier({"migrate", "--source", db_->url, "--mode", "cdc"}).exit_code, 0);
  }
  Insert("a-1", "Created", R"({"v":1})");
  Run(Options("ttl=300"));
  const long long ttl = Ttl("cache:order:a-1");
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 300);
  EXPECT_GT(Ttl("courier:version:cache:order:a-1"), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, CacheSinkTest, ::testing::Values("poll", "cdc"),
                         [](const auto& info) { return info.param == "cdc" ? "Cdc" : "Poll"; });

TEST(CacheSinkUrl, BadSettingsAreOneLineErrors) {
  TempDir dir;
  const std::string source = "sqlite://" + dir.File("a.db");
  for (const auto& [sink, expected] : std::vector<std::pair<std::string, std::string>>{
           {"redis-cache://127.0.0.1:6379", "needs a plain key prefix"},
           {"redis-cache://127.0.0.1:6379/{aggregate_type}", "needs a plain key prefix"},
           {"redis-cache://127.0.0.1:6379/c?ttl=soon", "ttl must be seconds"},
           {"redis-cache://127.0.0.1:6379/c?maxlen=5", "unknown parameter 'maxlen'"}}) {
    CommandResult r = RunCourier({"relay", "--source", source, "--sink", sink, "--once"});
    EXPECT_EQ(r.exit_code, 2) << sink;
    EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("courier: error:"), r.err.rfind("courier: error:")) << r.err;
  }
}

}  // namespace
}  // namespace courier::test
