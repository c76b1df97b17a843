// CommandLog (include/courier/command_log.h) against the dev broker, checked by an independent
// reader (KafkaReader: a consumer, not the producer's code): every acknowledged event is where
// Append said, with the envelope the relay's Kafka sink writes; a broker that is down gives a
// timeout, not a hang.
#include "courier/command_log.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "support/fixtures.h"

namespace courier::test {
namespace {

class CommandLogTest : public BrokerWithTopic {
 protected:
  int partitions() const override { return 3; }

  std::unique_ptr<CommandLog> OpenLog(Duration timeout = Duration(10000)) {
    auto log = CommandLog::Open({.url = topic_url_, .timeout = timeout});
    EXPECT_OK(log);
    return log.ok() ? std::move(log).value() : nullptr;
  }

  // Records by (partition, offset).
  std::map<std::pair<int32_t, int64_t>, KafkaRecord> ReadBack() {
    std::map<std::pair<int32_t, int64_t>, KafkaRecord> out;
    for (KafkaRecord& r : ReadTopic(*broker_, "orders")) {
      const auto at = std::make_pair(r.partition, r.offset);
      out.emplace(at, std::move(r));
    }
    return out;
  }
};

CommandEvent Deposit(const std::string& account, int amount) {
  return {.stream_type = "account",
          .stream_id = account,
          .event_type = "FundsDeposited",
          .payload = "{\"amount\":" + std::to_string(amount) + "}",
          .headers = {{"trace_id", "t-" + std::to_string(amount)}}};
}

TEST_F(CommandLogTest, AppendReturnsThePositionTheReaderFindsTheEventAt) {
  auto log = OpenLog();
  ASSERT_NE(log, nullptr);
  std::vector<LogPosition> positions;
  std::vector<CommandEvent> sent;
  for (int i = 0; i < 30; ++i) {
    CommandEvent e = Deposit("acct-" + std::to_string(i % 4), i + 1);
    auto at = log->Append(e);
    ASSERT_OK(at);
    EXPECT_EQ(at->topic, "orders");
    EXPECT_FALSE(at->event_id.empty());
    positions.push_back(*at);
    sent.push_back(std::move(e));
  }
  const auto records = ReadBack();
  ASSERT_EQ(records.size(), 30u);
  std::map<std::string, std::pair<int32_t, int64_t>> last_of_stream;
  for (size_t i = 0; i < sent.size(); ++i) {
    const auto it = records.find({positions[i].partition, positions[i].offset});
    ASSERT_NE(it, records.end()) << "no record at the acknowledged position of event " << i;
    const Event& got = it->second.event;
    EXPECT_EQ(got.event_id, positions[i].event_id);
    EXPECT_EQ(got.aggregate_type, "account");
    EXPECT_EQ(got.aggregate_id, sent[i].stream_id);  // the key
    EXPECT_EQ(got.event_type, "FundsDeposited");
    EXPECT_EQ(got.payload, sent[i].payload);
    EXPECT_EQ(got.headers, sent[i].headers);
    // One stream, one partition, offsets in the order of the appends.
    auto [prev, fresh] = last_of_stream.try_emplace(sent[i].stream_id, it->first);
    if (!fresh) {
      EXPECT_EQ(prev->second.first, it->first.first) << sent[i].stream_id;
      EXPECT_LT(prev->second.second, it->first.second) << sent[i].stream_id;
      prev->second = it->first;
    }
  }
}

TEST_F(CommandLogTest, ConcurrentAppendsEachGetTheirOwnAcknowledgement) {
  auto log = OpenLog();
  ASSERT_NE(log, nullptr);
  constexpr int kThreads = 4, kEach = 50;
  std::vector<std::vector<LogPosition>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto at = log->Append(Deposit("acct-" + std::to_string(t), i + 1));
        EXPECT_OK(at);
        if (at.ok()) got[t].push_back(*at);
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto records = ReadBack();
  ASSERT_EQ(records.size(), static_cast<size_t>(kThreads * kEach));
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(got[t].size(), static_cast<size_t>(kEach));
    for (int i = 0; i < kEach; ++i) {
      const auto it = records.find({got[t][i].partition, got[t][i].offset});
      ASSERT_NE(it, records.end());
      EXPECT_EQ(it->second.event.event_id, got[t][i].event_id);
      EXPECT_EQ(it->second.event.payload, "{\"amount\":" + std::to_string(i + 1) + "}");
    }
  }
}

TEST_F(CommandLogTest, BrokerDownIsATimeoutThenTheSameEventGoesThroughOnce) {
  auto log = OpenLog(Duration(1500));
  ASSERT_NE(log, nullptr);
  ASSERT_OK(log->Append(Deposit("acct-1", 1)));  // connected and warmed up
  broker_->SetDown(true);
  CommandEvent e = Deposit("acct-1", 2);
  e.event_id = NewUuidV7();
  const TimePoint start = Clock::Real().Now();
  auto down = log->Append(e);
  const Duration took = std::chrono::duration_cast<Duration>(Clock::Real().Now() - start);
  EXPECT_STATUS(down, StatusCode::kRetriable);
  EXPECT_NE(down.status().message().find("no acknowledgement from Kafka within 1500 ms"),
            std::string::npos)
      << down.status().message();
  EXPECT_NE(down.status().message().find(e.event_id), std::string::npos);
  EXPECT_GE(took, Duration(1000));
  EXPECT_LT(took, Duration(4000)) << "an append must not hang while the broker is down";

  broker_->SetDown(false);
  Result<LogPosition> up = AbortedError("not tried");
  ASSERT_TRUE(WaitUntil([&] {
    up = log->Append(e);  // the caller's retry: same event_id
    return up.ok();
  })) << Describe(up);
  EXPECT_EQ(up->event_id, e.event_id);
  // The timed-out attempt was never acknowledged: the reader holds the event at most twice,
  // the retry where Append said.
  const auto records = ReadBack();
  int copies = 0;
  for (const auto& [at, r] : records) copies += r.event.event_id == e.event_id;
  EXPECT_GE(copies, 1);
  EXPECT_LE(copies, 2);
  ASSERT_TRUE(records.count({up->partition, up->offset}));
  EXPECT_EQ(records.at({up->partition, up->offset}).event.event_id, e.event_id);
}

TEST(CommandLog, NoBrokerListeningIsATimeout) {
  const int port = FreePort();
  auto log = CommandLog::Open(
      {.url = "kafka://127.0.0.1:" + std::to_string(port) + "/account", .timeout = Duration(800)});
  ASSERT_OK(log);
  const TimePoint start = Clock::Real().Now();
  auto at = (*log)->Append(Deposit("acct-1", 1));
  EXPECT_STATUS(at, StatusCode::kRetriable);
  EXPECT_NE(at.status().message().find("no acknowledgement from Kafka within 800 ms"),
            std::string::npos)
      << at.status().message();
  EXPECT_LT(Clock::Real().Now() - start, std::chrono::milliseconds(3000));
}

TEST(CommandLog, RefusesBadUrlsAndIncompleteEvents) {
  EXPECT_STATUS(CommandLog::Open({.url = "redis://127.0.0.1:6379/x"}),
                StatusCode::kInvalidArgument);
  EXPECT_STATUS(CommandLog::Open({.url = "kafka:///account"}), StatusCode::kInvalidArgument);
  EXPECT_STATUS(CommandLog::Open({.url = "kafka://127.0.0.1:1/a?no.such.property=1"}),
                StatusCode::kInvalidArgument);
  EXPECT_STATUS(CommandLog::Open({.url = "kafka://127.0.0.1:1/a", .timeout = Duration(0)}),
                StatusCode::kInvalidArgument);
  auto log = CommandLog::Open({.url = "kafka://127.0.0.1:1/a"});
  ASSERT_OK(log);
  CommandEvent no_stream = Deposit("", 1);
  auto at = (*log)->Append(no_stream);
  EXPECT_STATUS(at, StatusCode::kInvalidArgument);
  EXPECT_EQ(at.status().message(),
            "command log: an event needs stream_type, stream_id and event_type");
}

}  // namespace
}  // namespace courier::test
