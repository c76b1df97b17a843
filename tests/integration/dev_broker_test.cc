// `courier dev-broker` as operators restart it: on a fixed --port a restarted broker serves the
// relays that kept running across the restart; a consumer group stopped cleanly resumes within
// seconds, not after the mock's ~45 s rebalance wait.
#include <signal.h>

#include "brokers/sink.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

// The event ids on `topic`, read to its end by `courier tail`.
std::set<std::string> TailIds(const std::string& bootstrap, const std::string& topic) {
  CommandResult r = RunCourier({"tail", "kafka://" + bootstrap + "/" + topic, "--exit-at-end"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> ids;
  const std::string key = "\"event_id\":\"";
  for (size_t p = 0; (p = r.out.find(key, p)) != std::string::npos;) {
    p += key.size();
    ids.insert(r.out.substr(p, r.out.find('"', p) - p));
  }
  return ids;
}

Result<Subprocess> SpawnBroker(int port, const TempDir& dir) {
  return SpawnCourier({"dev-broker", "--port", std::to_string(port), "--topic", "orders",
                       "--partitions", "2", "--bootstrap-file", dir.File("bootstrap")},
                      dir.File("broker.log"));
}

TEST(DevBroker, RestartedOnItsPortServesTheRelayThatRanAcrossTheRestart) {
  TempDir dir;
  const int port = FreePort();
  const std::string bootstrap = "127.0.0.1:" + std::to_string(port);
  auto broker = SpawnBroker(port, dir);
  ASSERT_OK(broker);
  ASSERT_TRUE(WaitUntil([&] { return ReadFile(dir.File("bootstrap")) == bootstrap + "\n"; }))
      << ReadFile(dir.File("bootstrap")) << ReadFile(dir.File("broker.log"));

  TestDb db = TestDb::Make(false);
  ASSERT_EQ(RunCourier({"migrate", "--source", db.url}).exit_code, 0);
  std::set<std::string> before, after;
  for (int i = 0; i < 3; ++i) before.insert(NewUuidV7());
  for (int i = 0; i < 3; ++i) after.insert(NewUuidV7());
  auto insert = [&](const std::set<std::string>& ids) {
    std::vector<std::string> sql;
    int seq = 0;
    for (const std::string& id : ids) sql.push_back(InsertEventSql(id, "o-1", ++seq));
    ASSERT_OK(db.Transaction(sql));
  };
  insert(before);
  auto relay = SpawnCourier({"relay", "--source", db.url, "--sink",
                             "kafka://" + bootstrap + "/orders", "--poll-interval", "100ms"},
                            dir.File("relay.log"));
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }))
      << ReadFile(dir.File("relay.log"));
  EXPECT_EQ(TailIds(bootstrap, "orders"), before);

  broker->Signal(SIGTERM);
  ASSERT_EQ(broker->Wait(Duration(20000)), 0);
  insert(after);
  // The relay cannot publish now; it keeps the events and keeps trying.
  auto restarted = SpawnBroker(port, dir);
  ASSERT_OK(restarted);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }, Duration(60000)))
      << ReadFile(dir.File("relay.log")) << ReadFile(dir.File("broker.log"));
  // The restarted broker starts empty: it holds exactly what the relay published since.
  EXPECT_EQ(TailIds(bootstrap, "orders"), after);
  EXPECT_FALSE(relay->Wait(Duration(0)).has_value()) << "one relay process throughout";
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(20000)), 0) << ReadFile(dir.File("relay.log"));
  restarted->Signal(SIGTERM);
  EXPECT_EQ(restarted->Wait(Duration(20000)), 0);
}

TEST(DevBroker, APortInUseIsOneClearLineAndExit2) {
  TempDir dir;
  const int port = FreePort();
  auto broker = SpawnBroker(port, dir);
  ASSERT_OK(broker);
  ASSERT_TRUE(WaitUntil([&] { return !ReadFile(dir.File("bootstrap")).empty(); }));
  CommandResult second = RunCourier({"dev-broker", "--port", std::to_string(port)});
  EXPECT_EQ(second.exit_code, 2);
  EXPECT_EQ(FirstLine(second.err),
            "courier: error: dev broker: cannot listen on 127.0.0.1:" + std::to_string(port) +
                ": Address already in use (is another broker running "
                "there?)");
  broker->Signal(SIGTERM);
  EXPECT_EQ(broker->Wait(Duration(20000)), 0);
}

Event PaddedEvent(int i, size_t bytes) {
  Event e;
  e.event_id = NewUuidV7();
  e.aggregate_type = "order";
  e.aggregate_id = "o-" + std::to_string(i);
  e.event_type = "OrderCreated";
  e.payload = "{\"pad\":\"" + std::string(bytes, 'x') + "\"}";
  return e;
}

// Retention is the mock's: the newest 5 MiB of batches per partition. A topic sized with
// DevBrokerPartitionsFor keeps everything.
TEST(DevBroker, KeepsTheNewest5MiBOfEachPartition) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  constexpr int kEvents = 8000;  // ~8 MiB
  const int partitions = DevBrokerPartitionsFor(kEvents, 1500, 1);
  EXPECT_EQ(partitions, 3);
  ASSERT_OK((*broker)->CreateTopic("small", 1));
  ASSERT_OK((*broker)->CreateTopic("sized", partitions));
  std::vector<Event> events;
  for (int i = 0; i < kEvents; ++i) events.push_back(PaddedEvent(i, 1000));
  for (const std::string topic : {"small", "sized"}) {
    auto sink = MakeSink({.url = "kafka://" + (*broker)->bootstrap() + "/" + topic});
    ASSERT_OK(sink);
    ASSERT_OK((*sink)->Open());
    const StopSignal never;
    for (size_t i = 0; i < events.size(); i += 500) {
      const std::vector<Event> batch(events.begin() + i, events.begin() + i + 500);
      for (const Status& st : (*sink)->Publish(batch, never)) ASSERT_OK(st);
    }
  }
  const std::vector<KafkaRecord> small = ReadTopic(**broker, "small");
  ASSERT_FALSE(small.empty());
  EXPECT_EQ(small.back().event.event_id, events.back().event_id) << "the newest are kept";
  const size_t kept_bytes = small.size() * 1100;
  EXPECT_LT(small.size(), static_cast<size_t>(kEvents)) << "older batches were dropped";
  EXPECT_GT(kept_bytes, kDevBrokerPartitionBytes * 3 / 4) << small.size() << " kept";
  EXPECT_LE(small.size() * 1000, kDevBrokerPartitionBytes) << small.size() << " kept";
  EXPECT_EQ(ReadTopic(**broker, "sized").size(), static_cast<size_t>(kEvents));
}

// The mock cluster, after a member leaves, waits the leaver's session timeout (less a second)
// for the group's other members before it assigns partitions to anyone: with librdkafka's
// default of 45 s a restarted consumer sat idle ~43 s. courier's consumers ask for 6 s.
class DevBrokerConsume : public BrokerWithTopic {
 protected:
  int partitions() const override { return 2; }
};

TEST_F(DevBrokerConsume, StoppedCleanlyResumesWithinSeconds) {
  TempDir dir;
  const std::string inbox = "sqlite://" + dir.File("inbox.db");
  ASSERT_OK(Migrate(inbox, TableNames{}));
  const std::string& url = topic_url_;
  auto publish = [&](int n) {
    std::vector<Event> events = MakeEvents(n);
    for (int i = 0; i < n; ++i) events[i].aggregate_id = "o-" + std::to_string(i);
    PublishEvents(url, events);
  };
  const std::string handled = dir.File("handled");
  const std::vector<std::string> args = {"consume",   "--from", url,
                                         "--db",      inbox,    "--consumer",
                                         "inventory", "--exec", "cat >> " + handled};
  TestDb db;
  db.postgres = false;
  db.url = inbox;
  publish(5);
  auto first = SpawnCourier(args, dir.File("consume.log"));
  ASSERT_OK(first);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_inbox") == 5; }))
      << ReadFile(dir.File("consume.log"));
  first->Signal(SIGTERM);
  ASSERT_EQ(first->Wait(Duration(20000)), 0) << ReadFile(dir.File("consume.log"));

  publish(5);
  auto second = SpawnCourier(args, dir.File("consume.log"));
  ASSERT_OK(second);
  EXPECT_TRUE(WaitUntil([&] { return db.Count("courier_inbox") == 10; }, Duration(15000)))
      << "the restarted consumer did not get its partitions within 15 s\n"
      << ReadFile(dir.File("consume.log"));
  second->Signal(SIGTERM);
  EXPECT_EQ(second->Wait(Duration(20000)), 0);
}

}  // namespace
}  // namespace courier::test
