// The pipeline's own decisions, with a real SQLite source and a sink whose answers the test
// scripts (an implementation of courier's Sink interface, not a stand-in for a broker).
#include <mutex>
#include <thread>

#include "core/uuid.h"
#include "relay/relay_internal.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

// Records every event it is handed; fails the first attempt of the events named in
// `fail_once` with a retriable error.
class ScriptedSink final : public Sink {
 public:
  explicit ScriptedSink(std::set<std::string> fail_once) : fail_once_(std::move(fail_once)) {}
  Status Configure() override { return Status::Ok(); }
  Status Open() override { return Status::Ok(); }
  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Status> results;
    for (const Event& e : batch) {
      delivered_.push_back(e);
      if (fail_once_.erase(e.event_id) > 0) {
        delivered_.pop_back();  // not acked: the broker never got it
        results.push_back(RetriableError("injected timeout"));
      } else {
        results.push_back(Status::Ok());
      }
    }
    return results;
  }
  std::string Describe() const override { return "scripted://"; }
  std::vector<Event> delivered() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return delivered_;
  }

 private:
  mutable std::mutex mutex_;
  std::set<std::string> fail_once_;  // guarded by mutex_
  std::vector<Event> delivered_;     // guarded by mutex_
};

TEST(Pipeline, AFailedEventHoldsBackTheRestOfItsAggregateOnly) {
  TestDb db = TestDb::Make(false);
  std::vector<std::string> a, b;
  std::vector<std::string> statements;
  for (int i = 1; i <= 3; ++i) {
    a.push_back(NewUuidV7());
    statements.push_back(InsertEventSql(a.back(), "A", i));
    b.push_back(NewUuidV7());
    statements.push_back(InsertEventSql(b.back(), "B", i));
  }
  ASSERT_OK(db.Transaction(statements));

  RelayOptions options;
  options.source_url = db.url;
  options.poll_interval = Duration(10);
  options.backoff_initial = Duration(10);
  options.backoff_max = Duration(50);
  SourceOptions source_options{.url = db.url, .poll_interval = Duration(10)};
  auto sink = std::make_unique<ScriptedSink>(std::set<std::string>{a[0]});
  ScriptedSink* sink_view = sink.get();
  auto made =
      MakeRelay(options, MakeSqlitePollSource(source_options, db.url.substr(9)), std::move(sink));
  ASSERT_OK(made);
  std::unique_ptr<Relay> relay = std::move(made).value();
  Status result;
  std::thread runner([&] { result = relay->Run(); });
  const bool drained = WaitUntil([&] { return db.Count("courier_outbox") == 0; });
  relay->RequestStop();
  runner.join();
  ASSERT_TRUE(drained);
  EXPECT_OK(result);

  // First attempt: A1 fails; A2, A3 reach the sink but are not checkpointed; B goes through.
  // Second attempt: A1, A2, A3 again. So A2 and A3 arrive twice, and their last copies follow
  // A1: a consumer keeping the latest version of each event sees A in order.
  std::vector<std::string> seen_a, seen_b;
  for (const Event& e : sink_view->delivered()) {
    (e.aggregate_id == "A" ? seen_a : seen_b).push_back(e.event_id);
  }
  EXPECT_EQ(seen_a, (std::vector<std::string>{a[1], a[2], a[0], a[1], a[2]}));
  EXPECT_EQ(seen_b, b) << "other aggregates are not held back or repeated";
  EXPECT_EQ(relay->stats().published, 6);
  EXPECT_EQ(relay->stats().retries, 1);
}

}  // namespace
}  // namespace courier::test
