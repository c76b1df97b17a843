// `courier project --from kafka://...` (listen-to-yourself's projector) against the dev broker
// and a real PostgreSQL: offsets and effects commit together, so SIGKILLs anywhere apply each
// event exactly once; `project wait` gives read-your-writes; a database outage is waited out.
#include <signal.h>

#include <random>

#include "support/fixtures.h"
#include "support/projection.h"

namespace courier::test {
namespace {

class ProjectionKafkaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    ASSERT_OK(broker_->CreateTopic("acct", 2));
    topic_url_ = "kafka://" + broker_->bootstrap() + "/acct";
    ASSERT_OK(CreateAppliedTable(db_.url));
  }

  std::vector<std::string> Args(const std::string& name = "balances") const {
    return {
        "project", "--from",        topic_url_,        "--db",        db_.url, "--name",
        name,      "--exec",        CountingHandler(), "--batch",     "10",    "--backoff-initial",
        "20ms",    "--backoff-max", "200ms",           "--log-level", "debug"};
  }

  // Every message of the topic, read back with its offset.
  std::vector<KafkaRecord> Records() const { return ReadTopic(*broker_, "acct"); }

  TempDir dir_;
  TestDb db_ = TestDb::Make(true);
  std::unique_ptr<DevBroker> broker_;
  std::string topic_url_;
};

TEST_F(ProjectionKafkaTest, KilledAtEitherSideOfTheCommitAppliesEachEventOnce) {
  const std::vector<Event> events = AccountEvents(40, 4);
  Publish(topic_url_, events);
  const std::string log = dir_.File("project.log");
  // Killed right before the COMMIT, then right after it: the offsets went with the effects.
  for (const char* point : {"project-before-commit", "project-after-commit"}) {
    ::setenv("COURIER_FAILPOINTS", point, 1);
    auto crashing = SpawnCourier(Args(), log);
    ::unsetenv("COURIER_FAILPOINTS");
    ASSERT_OK(crashing);
    ASSERT_EQ(crashing->Wait(Duration(30000)), 128 + SIGKILL) << ReadFile(log);
  }
  // The second run died right after committing its first batch (at most --batch 10 events).
  const size_t first_batch = Applied(db_.url).size();
  EXPECT_GE(first_batch, 1u);
  EXPECT_LE(first_batch, 10u);
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return Applied(db_.url).size() == events.size(); })) << ReadFile(log);
  ExpectEachAppliedOnce(db_.url, events);
  // The stored next offsets are the partitions' ends.
  std::map<int32_t, int64_t> ends;
  for (const KafkaRecord& r : Records()) ends[r.partition] = r.offset + 1;
  for (const auto& [partition, end] : ends) {
    EXPECT_EQ(PgQuery(db_.url,
                      "SELECT next_offset FROM courier_projection_offsets WHERE name = "
                      "'balances' AND topic = 'acct' AND partition = " +
                          std::to_string(partition))
                  .value(),
              std::vector<std::string>{std::to_string(end)});
  }
}

TEST_F(ProjectionKafkaTest, SigkilledRepeatedlyWhileEventsFlowAppliesEachEventOnce) {
  const std::vector<Event> events = AccountEvents(600, 8);
  std::thread producer([&] {
    for (size_t i = 0; i < events.size(); i += 20) {
      Publish(topic_url_, std::vector<Event>(events.begin() + static_cast<long>(i),
                                             events.begin() + static_cast<long>(i + 20)));
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
    }
  });
  const std::string log = dir_.File("project.log");
  std::mt19937 rng(7);
  int kills = 0;
  const TimePoint until = Clock::Real().Now() + std::chrono::seconds(6);
  while (Clock::Real().Now() < until) {
    auto projector = SpawnCourier(Args(), log);
    ASSERT_OK(projector);
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 400));
    projector->Signal(SIGKILL);
    projector->Wait(Duration(10000));
    ++kills;
  }
  producer.join();
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return Applied(db_.url).size() == events.size(); }))
      << "applied " << Applied(db_.url).size() << " of " << events.size();
  ExpectEachAppliedOnce(db_.url, events);
  EXPECT_GE(kills, 8);
}

TEST_F(ProjectionKafkaTest, WaitReturnsOnceAppliedAndTimesOutWithWhereItIs) {
  const std::vector<Event> events = AccountEvents(5, 1);
  Publish(topic_url_, events);
  const std::vector<KafkaRecord> records = Records();
  ASSERT_EQ(records.size(), 5u);
  const KafkaRecord& last = records.back();
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  const CommandResult applied =
      RunCourier({"project", "wait", "--db", db_.url, "--name", "balances", "--partition",
                  std::to_string(last.partition), "--offset", std::to_string(last.offset),
                  "--timeout", "20s"});
  EXPECT_EQ(applied.exit_code, 0) << applied.err << ReadFile(log);
  // Read-your-writes: once wait returned, the effect is visible.
  EXPECT_EQ(Applied(db_.url).count(last.event.event_id), 1u);
  const CommandResult timed_out =
      RunCourier({"project", "wait", "--db", db_.url, "--name", "balances", "--partition",
                  std::to_string(last.partition), "--offset", std::to_string(last.offset + 10),
                  "--timeout", "300ms"});
  EXPECT_EQ(timed_out.exit_code, 1);
  EXPECT_EQ(timed_out.err, "projection 'balances' has not applied partition " +
                               std::to_string(last.partition) + " offset " +
                               std::to_string(last.offset + 10) + " within 300ms (it is at " +
                               std::to_string(last.offset) + ")\n");
  // The C++ form.
  EXPECT_OK(WaitFor(db_.url, "balances", "acct", last.partition, last.offset,
                    std::chrono::milliseconds(1000)));
  const Status nothing = WaitFor(db_.url, "other", "acct", 0, 0, std::chrono::milliseconds(100));
  EXPECT_EQ(nothing.code(), StatusCode::kRetriable);
  EXPECT_EQ(nothing.message(),
            "projection 'other' has not applied acct[0] offset 0 within 100ms (it has applied "
            "nothing)");
}

// The HTTP form of WaitFor: GET /wait?topic=T&partition=P&offset=O on the projector's
// --metrics-port, 200 once applied with the last offset applied, 504 with where it is,
// 400 for a parameter of the other source; /metrics shows the next offsets.
TEST_F(ProjectionKafkaTest, HttpWaitAnswersOnceTheOffsetIsApplied) {
  const std::vector<Event> events = AccountEvents(5, 1);
  Publish(topic_url_, events);
  const std::vector<KafkaRecord> records = Records();
  ASSERT_EQ(records.size(), 5u);
  const KafkaRecord& last = records.back();
  const int port = FreePort();
  std::vector<std::string> args = Args();
  args.insert(args.end(), {"--metrics-port", std::to_string(port)});
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(args, log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return HttpGet(port, "/healthz").status == 200; })) << ReadFile(log);
  const std::string where = "topic=acct&partition=" + std::to_string(last.partition) + "&offset=";
  Got got = HttpGet(port, "/wait?" + where + std::to_string(last.offset) + "&timeout=20s");
  EXPECT_EQ(got.status, 200) << got.body << ReadFile(log);
  EXPECT_EQ(got.body, "{\"name\":\"balances\",\"offset\":" + std::to_string(last.offset) +
                          ",\"partition\":" + std::to_string(last.partition) +
                          ",\"topic\":\"acct\"}\n");
  // Read-your-writes: the effect is visible once /wait answered.
  EXPECT_EQ(Applied(db_.url).count(last.event.event_id), 1u);
  got = HttpGet(port, "/wait?" + where + std::to_string(last.offset + 10) + "&timeout=300ms");
  EXPECT_EQ(got.status, 504);
  EXPECT_EQ(got.body, "projection 'balances' has not applied acct[" +
                          std::to_string(last.partition) + "] offset " +
                          std::to_string(last.offset + 10) + " within 300ms (it is at " +
                          std::to_string(last.offset) + ")\n");
  got = HttpGet(port, "/wait?position=3");
  EXPECT_EQ(got.status, 400);
  EXPECT_EQ(got.body,
            "unknown parameter 'position': /wait?[topic=T&]partition=P&offset=O[&timeout=5s] (a "
            "Kafka-sourced projection)\n");
  const std::string metrics = HttpGet(port, "/metrics").body;
  EXPECT_NE(metrics.find("courier_projection_events_applied_total{projection=\"balances\"} 5\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("courier_projection_next_offset{projection=\"balances\",topic=\"acct\","
                         "partition=\"" +
                         std::to_string(last.partition) + "\"} " + std::to_string(last.offset + 1) +
                         "\n"),
            std::string::npos)
      << metrics;
  projector->Signal(SIGTERM);
  EXPECT_EQ(projector->Wait(Duration(10000)), 0) << ReadFile(log);
}

TEST_F(ProjectionKafkaTest, FailingHandlerIsRolledBackAndRetriedUntilItPasses) {
  const std::vector<Event> events = AccountEvents(12, 2);
  Publish(topic_url_, events);
  // Fails (after printing its SQL) twice at the 7th event it sees, then works.
  const std::string flaky = dir_.File("flaky");
  const std::string handler =
      "n=$(cat " + flaky + " 2>/dev/null || echo 0); n=$((n+1)); echo $n > " + flaky + "; " +
      CountingHandler() + "; if [ $n -eq 7 ] || [ $n -eq 8 ]; then exit 1; fi";
  std::vector<std::string> args = Args();
  args[8] = handler;
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(args, log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return Applied(db_.url).size() == events.size(); })) << ReadFile(log);
  ExpectEachAppliedOnce(db_.url, events);
  EXPECT_NE(ReadFile(log).find("projection handler failed; retrying"), std::string::npos);
}

TEST_F(ProjectionKafkaTest, DatabaseDownIsWaitedForThenCaughtUp) {
  const std::vector<Event> events = AccountEvents(30, 3);
  Publish(topic_url_, std::vector<Event>(events.begin(), events.begin() + 10));
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return Applied(db_.url).size() == 10; })) << ReadFile(log);
  ASSERT_OK(SharedPostgres().Stop(/*immediate=*/false));
  // Commands keep being accepted: Kafka takes them while the database is away.
  Publish(topic_url_, std::vector<Event>(events.begin() + 10, events.end()));
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(log).find("projection database unavailable; retrying") != std::string::npos;
  }));
  ASSERT_OK(SharedPostgres().StartAgain());
  ASSERT_TRUE(WaitUntil([&] { return Applied(db_.url).size() == events.size(); })) << ReadFile(log);
  ExpectEachAppliedOnce(db_.url, events);
  EXPECT_TRUE(projector->Running());
}

// Records the broker deleted (retention) before the projection applied them are not skipped
// without a word: the restarted projector stops with one line naming the partition.
TEST_F(ProjectionKafkaTest, RecordsGoneFromTheBrokerStopTheProjectorInsteadOfBeingSkipped) {
  const std::vector<Event> first = AccountEvents(4, 1);
  Publish(topic_url_, first);
  const std::string log = dir_.File("project.log");
  auto projector = SpawnCourier(Args(), log);
  ASSERT_OK(projector);
  ASSERT_TRUE(WaitUntil([&] { return Applied(db_.url).size() == first.size(); })) << ReadFile(log);
  projector->Signal(SIGTERM);
  ASSERT_TRUE(projector->Wait(Duration(30000)).has_value());
  // Over the dev broker's 5 MiB per partition, to the same stream (the same partition): the
  // oldest records, applied or not, are dropped.
  std::vector<Event> big = AccountEvents(80, 1);
  for (Event& e : big) e.payload.insert(1, "\"pad\":\"" + std::string(100000, 'x') + "\",");
  Publish(topic_url_, big);
  const CommandResult again = RunCourier(Args(), Duration(60000));
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("retention deleted the rest"), std::string::npos) << again.err;
  EXPECT_EQ(Applied(db_.url).size(), first.size()) << "nothing applied past the gap";
}

TEST_F(ProjectionKafkaTest, RefusesWhatItCannotDo) {
  const CommandResult both = RunCourier({"project", "--from", topic_url_, "--event-store", "--db",
                                         db_.url, "--name", "x", "--exec", "true"});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.err.find("give the source as --event-store or --from"), std::string::npos)
      << both.err;
  const CommandResult no_reset = RunCourier({"project", "--from", topic_url_, "--db", db_.url,
                                             "--name", "x", "--exec", "true", "--rebuild"});
  EXPECT_EQ(no_reset.exit_code, 2);
  EXPECT_NE(no_reset.err.find("--rebuild with --exec needs --reset SQL"), std::string::npos)
      << no_reset.err;
}

}  // namespace
}  // namespace courier::test
