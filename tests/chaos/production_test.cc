// The production chaos run, in both modes: a minute (COURIER_CHAOS_SECONDS) of concurrent
// writers (some rolling back, some holding long transactions) while two relays (one active,
// one standing by) are SIGKILLed every 0.5-3 s at random, the broker goes down, the active
// relay's database session is cut, PostgreSQL is restarted with -m immediate, and (polling)
// twice, at 40 % and 85 %, the lease holder is frozen (SIGSTOP) past its lease until the standby
// took over and published newer events, then resumed (SIGCONT): a zombie. Afterwards an independent
// Kafka consumer reads the topic: 0 lost, 0 ghosts, per-aggregate order kept, and every aggregate's
// last delivered event is its newest (no stale copy after a newer one); duplicates counted. The
// counters go to the log.
#include <signal.h>

#include <cstdlib>
#include <optional>

#include "chaos/writers.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = 0; (p = text.find(what, p)) != std::string::npos; p += what.size()) ++n;
  return n;
}

class ProductionChaos : public ::testing::TestWithParam<std::string> {};

TEST_P(ProductionChaos, LosesNothingPublishesNoGhostAndKeepsOrder) {
  const std::string mode = GetParam();
  const char* env = std::getenv("COURIER_CHAOS_SECONDS");
  const int seconds = env != nullptr ? std::max(10, std::atoi(env)) : 60;

  auto pg = PostgresServer::Start();  // its own server: this test restarts it
  ASSERT_OK(pg);
  auto url = (*pg)->NewDatabase("chaos");
  ASSERT_OK(url);
  TestDb db;
  db.url = *url;
  ASSERT_OK(Migrate(db.url, TableNames{}));
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("order", 4));
  const std::vector<std::string> relay_args = {"relay",
                                               "--mode",
                                               mode,
                                               "--source",
                                               db.url,
                                               "--sink",
                                               "kafka://" + (*broker)->bootstrap() + "/order",
                                               "--batch-size",
                                               "100",
                                               "--poll-interval",
                                               "10ms",
                                               "--backoff-initial",
                                               "50ms",
                                               "--backoff-max",
                                               "1s",
                                               "--lease",
                                               "2s"};

  std::atomic<bool> stop{false};
  std::vector<Writer> writers(3);
  std::vector<std::thread> threads;
  for (size_t w = 0; w < writers.size(); ++w) {
    threads.emplace_back([&, w] {
      WriteLoop(db, static_cast<int>(w), stop, writers[w], /*tolerate_restarts=*/true);
    });
  }

  // Two relay slots: whichever holds the lease is active, the other stands by. One of them is
  // killed every 0.5-3 s and started again at once.
  std::mt19937 rng(20261124);
  std::optional<Subprocess> slots[2];
  auto log_of = [&](int i) { return db.dir.File("relay" + std::to_string(i) + ".log"); };
  for (int i = 0; i < 2; ++i) {
    auto r = SpawnCourier(relay_args, log_of(i));
    ASSERT_OK(r);
    slots[i] = std::move(r).value();
  }
  int kills = 0, broker_outages = 0, pg_restarts = 0, session_cuts = 0, freezes = 0;
  int standby_published = 0;  // freezes during which the standby published newer events
  // The slot whose relay holds the lease (-1: none known), and how much it published.
  auto holder_slot = [&]() -> int {
    auto holder = PgQuery(db.url, "SELECT holder FROM courier_outbox_lease");
    if (!holder.ok() || holder->empty()) return -1;
    const std::string pid = holder->front().substr(holder->front().rfind(':') + 1);
    for (int i = 0; i < 2; ++i) {
      if (std::to_string(slots[i]->pid()) == pid) return i;
    }
    return -1;
  };
  auto published = [&]() -> int64_t {
    auto rows = PgQuery(db.url, "SELECT published FROM courier_outbox_lease");
    return rows.ok() && !rows->empty() ? std::stoll(rows->front()) : -1;
  };
  // The zombie round: freeze the holder past its lease, let the standby take over and publish
  // newer events of the same aggregates (the writers go on), then resume the frozen one.
  Duration frozen_for{0};  // time spent in zombie rounds (no kills meanwhile)
  auto freeze_holder = [&] {
    const int frozen = holder_slot();
    if (frozen < 0) return false;
    const TimePoint round_start = Clock::Real().Now();
    slots[frozen]->Signal(SIGSTOP);
    ++freezes;
    const bool took_over = WaitUntil([&] { return holder_slot() == 1 - frozen; }, Duration(30000));
    EXPECT_TRUE(took_over) << "round " << freezes << ": the standby took over the frozen relay";
    if (took_over) {
      // The standby's renewals report what it published in this term.
      const int64_t at_takeover = published();
      if (WaitUntil([&] { return published() > at_takeover; }, Duration(10000))) {
        ++standby_published;
      }
    }
    slots[frozen]->Signal(SIGCONT);
    frozen_for += std::chrono::duration_cast<Duration>(Clock::Real().Now() - round_start);
    return true;
  };
  // Both modes: in CDC the standby ends the frozen relay's walsender, which still holds the
  // slot, once it holds the lease.
  bool freeze_done[2] = {false, false};
  const TimePoint start = Clock::Real().Now();
  const TimePoint end = start + std::chrono::seconds(seconds);
  auto at = [&](double fraction) {
    return start + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000 * fraction));
  };
  bool broker_done = false, cut_done = false, pg_done = false;
  // Every scheduled fault happens in every run: a short budget (or a slow machine, where a
  // zombie round takes most of it) runs past its end until the last one is done.
  auto all_done = [&] {
    return broker_done && cut_done && pg_done && freeze_done[0] && freeze_done[1];
  };
  const TimePoint hard_end = end + std::chrono::seconds(120);
  while (Clock::Real().Now() < end || (!all_done() && Clock::Real().Now() < hard_end)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 2500));
    const TimePoint now = Clock::Real().Now();
    if (!broker_done && now >= at(0.25)) {
      (*broker)->SetDown(true);
      std::this_thread::sleep_for(std::chrono::seconds(3));
      (*broker)->SetDown(false);
      broker_done = true;
      ++broker_outages;
    } else if (!cut_done && now >= at(0.5)) {
      ASSERT_OK(PgQuery(db.url,
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE"
                        " locktype = 'advisory' AND granted AND database = (SELECT oid FROM"
                        " pg_database WHERE datname = current_database())"));
      cut_done = true;
      ++session_cuts;
    } else if (!pg_done && now >= at(0.7)) {
      ASSERT_OK((*pg)->Restart(/*immediate=*/true));
      pg_done = true;
      ++pg_restarts;
    } else if (!freeze_done[0] && now >= at(0.4)) {
      freeze_done[0] = freeze_holder();
      continue;  // no kill this round: the resumed zombie must get to run
    } else if (!freeze_done[1] && now >= at(0.85)) {
      freeze_done[1] = freeze_holder();
      continue;
    }
    // Every other kill hits the active relay (the lease holder), so the standby takes over.
    int victim = static_cast<int>(rng() % 2);
    bool active_killed = false;
    if (kills % 2 == 0) {
      auto holder = PgQuery(db.url, "SELECT holder FROM courier_outbox_lease");
      if (holder.ok() && !holder->empty()) {
        const std::string pid = holder->front().substr(holder->front().rfind(':') + 1);
        for (int i = 0; i < 2; ++i) {
          if (std::to_string(slots[i]->pid()) == pid) {
            victim = i;
            active_killed = true;
          }
        }
      }
    }
    slots[victim]->Signal(SIGKILL);
    slots[victim]->Wait(Duration(10000));
    ++kills;
    // The standby polls the lock twice a second: give it the chance before the killed relay
    // comes back.
    if (active_killed) std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    auto r = SpawnCourier(relay_args, log_of(victim));
    ASSERT_OK(r);
    slots[victim] = std::move(r).value();
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  for (auto& slot : slots) {
    slot->Signal(SIGKILL);
    slot->Wait(Duration(10000));
  }
  const std::string logs = ReadFile(log_of(0)) + ReadFile(log_of(1));

  // A last relay drains what is left.
  std::vector<std::string> last_args = relay_args;
  last_args.push_back("--once");
  CommandResult last = RunCourier(last_args, Duration(180000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  EXPECT_EQ(db.Count("courier_dead_letter"), 0) << "nothing is refused in this test";

  Expectation expected;
  int64_t rolled_back = 0, reconnects = 0;
  for (const Writer& w : writers) {
    expected.committed.insert(w.committed.begin(), w.committed.end());
    expected.in_doubt.insert(w.in_doubt.begin(), w.in_doubt.end());
    rolled_back += w.rolled_back;
    reconnects += w.reconnects;
  }
  // The independent consumer: every record of the topic, all partitions, from the start. Per
  // aggregate (one key, one partition) the records come in arrival order, so the last one is
  // what a consumer applying them in that order ends with: it must be the newest.
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "order");
  const Verdict v = Judge(expected, Deliveries(records));
  std::printf(
      "[chaos] production mode=%s seconds=%d relay_kills=%d takeovers=%zu fenced=%zu "
      "freezes=%d (standby published during %d) zombie_batches_dropped=%zu broker_outages=%d "
      "session_cuts=%d pg_restarts=%d "
      "writer_reconnects=%lld\n",
      mode.c_str(), seconds, kills, Occurrences(logs, "took over the outbox"),
      Occurrences(logs, "lost the outbox lease"), freezes, standby_published,
      Occurrences(logs, "not published: this relay is fenced"), broker_outages, session_cuts,
      pg_restarts, static_cast<long long>(reconnects));
  std::printf(
      "[chaos] production mode=%s committed=%zu rolled_back_tx=%lld in_doubt=%zu "
      "(delivered %lld) delivered=%zu duplicates=%lld lost=%lld ghosts=%lld "
      "order_violations=%lld stale_endings=%lld\n",
      mode.c_str(), expected.committed.size(), static_cast<long long>(rolled_back),
      expected.in_doubt.size(), static_cast<long long>(v.in_doubt_delivered), records.size(),
      static_cast<long long>(v.duplicates), static_cast<long long>(v.lost),
      static_cast<long long>(v.ghosts), static_cast<long long>(v.order_violations),
      static_cast<long long>(v.stale_endings));
  EXPECT_EQ(v.lost, 0) << "committed events never delivered" << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 0) << "events of rolled-back transactions delivered" << ExamplesOf(v);
  EXPECT_EQ(v.order_violations, 0) << "per-aggregate order broken" << ExamplesOf(v);
  EXPECT_EQ(v.stale_endings, 0) << "an aggregate's last record is not its newest" << ExamplesOf(v);
  EXPECT_GT(kills, (seconds - frozen_for.count() / 1000) / 4);
  EXPECT_GT(expected.committed.size(), 1000u);
  EXPECT_GT(rolled_back, 0);
  EXPECT_EQ(pg_restarts, 1);
  EXPECT_EQ(freezes, 2) << "the lease holder was frozen past its lease twice";
  EXPECT_EQ(standby_published, 2) << "the standby published while the holder was frozen";
  EXPECT_GT(Occurrences(logs, "took over the outbox"), 0u) << "a standby took over";
}

INSTANTIATE_TEST_SUITE_P(Modes, ProductionChaos, ::testing::Values("poll", "cdc"),
                         [](const auto& info) {
                           return std::string(info.param == "cdc" ? "Cdc" : "Poll");
                         });

}  // namespace
}  // namespace courier::test
