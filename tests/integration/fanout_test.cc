// Fan-out: one relay, several sinks; an event is done when every sink acked it.
#include <fstream>

#include "support/fixtures.h"

namespace courier::test {
namespace {

TEST(FanOut, EverySinkGetsEveryEventInOrder) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  auto webhook = WebhookServer::Start();
  ASSERT_OK(webhook);
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 120, 6, &seq);
  RelayOptions o;
  o.source_url = db.url;
  o.sink_url = (*redis)->Url("order");
  o.extra_sink_urls = {(*webhook)->Url("hooks/{aggregate_type}")};
  o.once = true;
  o.batch_size = 50;
  auto relay = Relay::Create(o);
  ASSERT_OK(relay);
  ASSERT_OK((*relay)->Run());
  EXPECT_EQ(ExpectDelivered(ReadRedis(**redis, "order"), ids), 0);
  EXPECT_EQ(ExpectDelivered(ReadWebhook(**webhook), ids), 0);
  EXPECT_EQ(db.Count("courier_outbox"), 0);
}

// One sink is down: the events stay in the outbox (not acked by all), the healthy sink gets
// each of them once, not once per retry; when the other comes back it gets them all.
TEST(FanOut, StoppedSinkDelaysWithoutDuplicatingOrLosingForTheOthers) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  auto webhook = WebhookServer::Start();
  ASSERT_OK(webhook);
  ASSERT_OK((*webhook)->Stop());
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;
  RelayOptions o;
  o.source_url = db.url;
  o.sink_url = (*redis)->Url("order");
  o.extra_sink_urls = {(*webhook)->Url("hooks/order")};
  o.poll_interval = Duration(20);
  o.backoff_initial = Duration(50);
  o.backoff_max = Duration(200);
  BackgroundRelay relay(o);
  const std::set<std::string> ids = CommitEvents(db, 100, 5, &seq);
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().retries >= 5; }));
  EXPECT_EQ(ReadRedis(**redis, "order").size(), 100u) << "each event once, whatever the retries";
  EXPECT_EQ(db.Count("courier_outbox"), 100) << "not done until every sink acked";
  ASSERT_OK((*webhook)->StartAgain());
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(ExpectDelivered(ReadRedis(**redis, "order"), ids), 0);
  EXPECT_EQ(ExpectDelivered(ReadWebhook(**webhook), ids), 0);
}

// The CLI: --sink repeated fans out; on the command line it replaces the config file's list.
TEST(FanOut, RepeatedSinkFlagAndConfigList) {
  TempDir dir;
  TestDb db = TestDb::Make(false);
  int64_t seq = 1;
  CommitEvents(db, 3, 1, &seq);
  std::ofstream(dir.File("relay.toml"))
      << "source = \"" << db.url << "\"\nsink = [\"file://" << dir.File("a.jsonl")
      << "\", \"file://" << dir.File("b.jsonl") << "\"]\n";
  CommandResult r = RunCourier({"relay", "--config", dir.File("relay.toml"), "--once"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = [&](const std::string& name) {
    const std::string text = ReadFile(dir.File(name));
    return std::count(text.begin(), text.end(), '\n');
  };
  EXPECT_EQ(lines("a.jsonl"), 3);
  EXPECT_EQ(lines("b.jsonl"), 3);
  CommitEvents(db, 2, 1, &seq);
  CommandResult only_c = RunCourier({"relay", "--config", dir.File("relay.toml"), "--sink",
                                     "file://" + dir.File("c.jsonl"), "--once"});
  ASSERT_EQ(only_c.exit_code, 0) << only_c.err;
  EXPECT_EQ(lines("c.jsonl"), 2);
  EXPECT_EQ(lines("a.jsonl"), 3) << "the command line's --sink replaced the file's list";
}

}  // namespace
}  // namespace courier::test
