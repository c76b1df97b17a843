// `courier tail` of a Kafka topic that does not exist: one line and exit 2, or a wait with
// --wait-for-topic; in neither case is the topic created.
#include <signal.h>

#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Whether the cluster has `topic`, from a listing of every topic (which creates none).
bool TopicExists(const DevBroker& broker, const std::string& topic) {
  auto conf = MakeKafkaConf({{"bootstrap.servers", broker.bootstrap()}});
  EXPECT_OK(conf);
  if (!conf.ok()) return false;
  char err[512];
  KafkaHandle rk(rd_kafka_new(RD_KAFKA_PRODUCER, conf->get(), err, sizeof err));
  EXPECT_NE(rk, nullptr) << err;
  if (rk == nullptr) return false;
  conf->release();
  const rd_kafka_metadata_t* md = nullptr;
  EXPECT_EQ(rd_kafka_metadata(rk.get(), /*all_topics=*/1, nullptr, &md, 5000),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  if (md == nullptr) return false;
  bool found = false;
  for (int t = 0; t < md->topic_cnt; ++t) found = found || topic == md->topics[t].topic;
  rd_kafka_metadata_destroy(md);
  return found;
}

using TailMissingTopic = BrokerWithTopic;
TEST_F(TailMissingTopic, SaysSoInOneLineExits2AndCreatesNothing) {
  const std::string url = "kafka://" + broker_->bootstrap() + "/ordres";
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{}, {"--exit-at-end"}, {"--from-beginning", "--limit", "1"}}) {
    std::vector<std::string> args = {"tail", url};
    args.insert(args.end(), flags.begin(), flags.end());
    CommandResult tail = RunCourier(args, Duration(30000));
    EXPECT_EQ(tail.exit_code, 2) << tail.err;
    EXPECT_EQ(tail.err, "courier: error: no topic ordres on kafka://" + broker_->bootstrap() +
                            " (tail creates none; --wait-for-topic waits until it is created)\n");
    EXPECT_EQ(tail.out, "");
  }
  EXPECT_FALSE(TopicExists(*broker_, "ordres")) << "tail created the topic it was asked about";
  EXPECT_TRUE(TopicExists(*broker_, "orders"));
}

// With --wait-for-topic it says it waits, creates nothing, and prints the topic's events
// from its beginning once something else created it.
TEST_F(TailMissingTopic, WaitForTopicWaitsWithoutCreatingIt) {
  TempDir dir;
  const std::string url = "kafka://" + broker_->bootstrap() + "/later";
  auto tail = Subprocess::Spawn({COURIER_BINARY, "tail", url, "--wait-for-topic", "--limit", "2"},
                                dir.File("out"), dir.File("err"));
  ASSERT_OK(tail);
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(dir.File("err")).find("waiting for the topic to be created") !=
           std::string::npos;
  })) << ReadFile(dir.File("err"));
  // Several metadata rounds of the waiting tail.
  ASSERT_FALSE(WaitUntil([&] { return TopicExists(*broker_, "later"); }, Duration(2000)))
      << "the waiting tail created the topic";
  TestDb db = TestDb::Make(false);
  ASSERT_OK(
      db.Transaction({InsertEventSql(NewUuidV7(), "k", 1), InsertEventSql(NewUuidV7(), "k", 2)}));
  CommandResult relay = RunCourier({"relay", "--source", db.url, "--sink", url, "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  auto code = tail->Wait(Duration(30000));
  ASSERT_TRUE(code.has_value()) << "tail did not print the 2 events: " << ReadFile(dir.File("err"));
  EXPECT_EQ(*code, 0);
  EXPECT_NE(ReadFile(dir.File("out")).find("\"seq\":1"), std::string::npos);
  EXPECT_NE(ReadFile(dir.File("out")).find("\"seq\":2"), std::string::npos);
}

}  // namespace
}  // namespace courier::test
