// The Redis Streams sink against a real redis-server (append-only file, fsync always).
#include "brokers/redis/redis.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Order, the dedup key, refusals and outages are the sink contract's (sink_contract_test.cc);
// here what only the Redis sink does.
class RedisSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start();
    ASSERT_OK(redis);
    redis_ = std::move(redis).value();
  }

  std::unique_ptr<RedisServer> redis_;
  Outbox outbox_;
};

TEST_F(RedisSinkTest, TailPrintsTheStream) {
  outbox_.Commit(3, 1);
  CommandResult relay =
      RunCourier({"relay", "--source", outbox_.db.url, "--sink", redis_->Url("orders"), "--once"});
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
