// `courier relay --event-store` (polling, and CDC) SIGKILLed at random moments, mid-batch, while
// writers append to shared streams with expected versions (conflicts retried, some transactions
// rolled back, some held open so that positions commit out of order). Afterwards an independent
// Kafka reader must find every committed event, none of the rolled-back ones, each stream in
// version order; every event is stamped published_at and none is deleted.
#include <signal.h>

#include <atomic>
#include <random>
#include <thread>

#include "courier/event_store.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

struct StoreWriter {
  std::set<std::string> committed;  // event ids
  int64_t rolled_back = 0;
  int64_t conflicts = 0;
};

// Appends 1-3 events to one of 6 shared streams per transaction until `stop`, reading the
// stream's version first and retrying on kAborted. Every 10th transaction rolls back; every
// 7th holds its transaction open for 200 ms, so that later positions commit first.
void AppendLoop(const std::string& url, int writer_id, std::atomic<bool>& stop, StoreWriter& out) {
  std::mt19937 rng(static_cast<unsigned>(writer_id * 7919 + 1));
  auto conn = PgConnect(url);
  ASSERT_OK(conn);
  PGconn* c = conn->get();
  EventStore store;
  for (int tx = 1; !stop.load(); ++tx) {
    const std::string stream = "acct-" + std::to_string(rng() % 6);
    const bool commit = tx % 10 != 0;
    const int n = 1 + static_cast<int>(rng() % 3);
    while (true) {
      ASSERT_OK(PgRun(c, "BEGIN"));
      auto current = store.Load(c, "account", stream);
      ASSERT_OK(current);
      std::vector<NewEvent> events;
      for (int i = 1; i <= n; ++i) {
        // seq = the version it will have: the reader checks each stream's order by it.
        events.push_back({.event_type = "FundsDeposited",
                          .payload = "{\"seq\":" + std::to_string(current->version + i) + "}"});
      }
      auto appended = store.Append(c, "account", stream, current->version, events);
      if (!appended.ok()) {
        ASSERT_EQ(appended.status().code(), StatusCode::kAborted) << Describe(appended);
        ++out.conflicts;
        ASSERT_OK(PgRun(c, "ROLLBACK"));
        continue;
      }
      if (tx % 7 == 0) ASSERT_OK(PgRun(c, "SELECT pg_sleep(0.2)"));
      ASSERT_OK(PgRun(c, commit ? "COMMIT" : "ROLLBACK"));
      if (commit) {
        for (const AppendedEvent& e : appended->events) out.committed.insert(e.event_id);
      } else {
        ++out.rolled_back;
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// The relay's mode: "poll" or "cdc".
class EventStoreKillTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EventStoreKillTest, SigkillMidBatchLosesNothingKeepsStreamOrderAndStampsEveryEvent) {
  const std::string mode = GetParam();
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 4));
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  CdcOptions cdc;
  cdc.enabled = mode == "cdc";  // the slot is made before the writers start
  ASSERT_OK(Migrate(*url, EventStoreTables(), cdc));
  // Slots keep WAL on the shared server: dropped at the end, whatever happens.
  struct DropSlots {
    std::string url;
    ~DropSlots() { DropReplicationSlots(url); }
  } drop_slots{*url};
  TempDir dir;
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  const std::vector<std::string> relay_args = {"relay",
                                               "--event-store",
                                               "--mode",
                                               mode,
                                               "--source",
                                               *url,
                                               "--sink",
                                               sink,
                                               "--batch-size",
                                               "20",
                                               "--poll-interval",
                                               "10ms",
                                               "--backoff-initial",
                                               "20ms"};

  std::vector<StoreWriter> results(3);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (size_t w = 0; w < results.size(); ++w) {
    threads.emplace_back([&, w] { AppendLoop(*url, static_cast<int>(w), stop, results[w]); });
  }
  std::mt19937 rng(4242);
  int kills = 0;
  const TimePoint end = Clock::Real().Now() + std::chrono::seconds(10);
  while (Clock::Real().Now() < end) {
    auto relay = SpawnCourier(relay_args, dir.File("relay.log"));
    ASSERT_OK(relay);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 700));
    relay->Signal(SIGKILL);
    relay->Wait(Duration(10000));
    ++kills;
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  const size_t published_by_killed_relays = ReadTopic(**broker, "account").size();

  CommandResult last = RunCourier(
      {"relay", "--event-store", "--mode", mode, "--source", *url, "--sink", sink, "--once"},
      Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;

  std::set<std::string> committed;
  int64_t rolled_back = 0, conflicts = 0;
  for (const StoreWriter& w : results) {
    committed.insert(w.committed.begin(), w.committed.end());
    rolled_back += w.rolled_back;
    conflicts += w.conflicts;
  }
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "account");
  const int64_t duplicates = ExpectDelivered(records, committed);
  auto rows = PgQuery(*url, "SELECT count(*) || '/' || count(published_at) FROM courier_events");
  ASSERT_OK(rows);
  EXPECT_EQ((*rows)[0], std::to_string(committed.size()) + "/" + std::to_string(committed.size()))
      << "every committed event kept and stamped";
  std::printf(
      "[chaos] event store (%s) kills=%d committed=%zu rolled_back_tx=%lld conflicts=%lld "
      "delivered=%zu duplicates=%lld published_before_drain=%zu\n",
      mode.c_str(), kills, committed.size(), static_cast<long long>(rolled_back),
      static_cast<long long>(conflicts), records.size(), static_cast<long long>(duplicates),
      published_by_killed_relays);
  EXPECT_GT(kills, 5);
  EXPECT_GT(committed.size(), 100u);
  EXPECT_GT(rolled_back, 0);
  EXPECT_GT(published_by_killed_relays, committed.size() / 4);
}

INSTANTIATE_TEST_SUITE_P(Modes, EventStoreKillTest, ::testing::Values("poll", "cdc"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param == "poll" ? std::string("Poll") : std::string("Cdc");
                         });

}  // namespace
}  // namespace courier::test
