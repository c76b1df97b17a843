// The inbox against real PostgreSQL and SQLite: one effect per event and consumer, however
// often it is delivered and however consumers race.
#include "courier/inbox.h"

#include <algorithm>
#include <random>

#include "support/fixtures.h"

namespace courier::test {
namespace {

// Effects of the handler: one counter row per event, incremented each time it runs.
constexpr const char* kEffects =
    "CREATE TABLE effects (event_id TEXT PRIMARY KEY, runs INTEGER NOT NULL)";

class InboxTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<TestDb>(TestDb::Make(GetParam()));
    ASSERT_OK(db_->Transaction({kEffects}));
  }
  bool postgres() const { return GetParam(); }

  // Delivers `event_id` once to `consumer`: the handler counts a run.
  Result<bool> Deliver(const Inbox& inbox, const std::string& event_id, bool fail = false) {
    const std::string upsert = "INSERT INTO effects (event_id, runs) VALUES ('" + event_id +
                               "', 1) ON CONFLICT (event_id) DO UPDATE SET runs = effects.runs + 1";
    if (postgres()) {
      if (!pg_) {
        COURIER_ASSIGN_OR_RETURN(pg_, PgConnect(db_->url));
      }
      return inbox.Process(pg_.get(), event_id, [&](pg_conn* c) -> Status {
        COURIER_RETURN_IF_ERROR(PgRun(c, upsert));
        return fail ? InternalError("handler failed") : Status::Ok();
      });
    }
    if (!lite_) {
      COURIER_ASSIGN_OR_RETURN(lite_, SqliteOpen(db_->url.substr(9), false));
    }
    return inbox.Process(lite_.get(), event_id, [&](sqlite3* d) -> Status {
      COURIER_RETURN_IF_ERROR(SqliteExec(d, upsert));
      return fail ? InternalError("handler failed") : Status::Ok();
    });
  }

  int64_t Runs(const std::string& event_id) const {
    return db_->Count("effects WHERE event_id = '" + event_id + "'") == 0
               ? 0
               : std::stoll(Value("SELECT runs FROM effects WHERE event_id = '" + event_id + "'"));
  }

  std::string Value(const std::string& sql) const {
    if (postgres()) {
      auto rows = PgQuery(db_->url, sql);
      return rows.ok() && !rows->empty() ? (*rows)[0] : "";
    }
    auto d = SqliteOpen(db_->url.substr(9), false);
    auto stmt = SqlitePrepare(d->get(), sql);
    if (!stmt.ok() || sqlite3_step(stmt->get()) != SQLITE_ROW) return "";
    return reinterpret_cast<const char*>(sqlite3_column_text(stmt->get(), 0));
  }

  std::unique_ptr<TestDb> db_;
  PgConn pg_;
  SqliteDb lite_;
};

TEST_P(InboxTest, EventDeliveredOnceTwiceOrTenTimesHasOneEffect) {
  const Inbox inbox("inventory");
  for (int times : {1, 2, 10}) {
    const std::string id = NewUuidV7();
    for (int i = 0; i < times; ++i) {
      auto fresh = Deliver(inbox, id);
      ASSERT_OK(fresh);
      EXPECT_EQ(*fresh, i == 0) << "delivery " << i + 1 << " of " << times;
    }
    EXPECT_EQ(Runs(id), 1) << times << " deliveries";
  }
  EXPECT_EQ(db_->Count("courier_inbox WHERE consumer = 'inventory'"), 3);
}

TEST_P(InboxTest, EachConsumerHandlesTheEventOnce) {
  const std::string id = NewUuidV7();
  ASSERT_TRUE(Deliver(Inbox("inventory"), id).value());
  ASSERT_TRUE(Deliver(Inbox("billing"), id).value());
  ASSERT_FALSE(Deliver(Inbox("billing"), id).value());
  EXPECT_EQ(Runs(id), 2);
}

// A failing handler rolls back its writes and the claim: the redelivery handles it.
TEST_P(InboxTest, FailedHandlerLeavesTheEventToBeHandledAgain) {
  const Inbox inbox("inventory");
  const std::string id = NewUuidV7();
  auto failed = Deliver(inbox, id, /*fail=*/true);
  EXPECT_FALSE(failed.ok());
  EXPECT_EQ(Runs(id), 0);
  EXPECT_EQ(db_->Count("courier_inbox"), 0);
  ASSERT_TRUE(Deliver(inbox, id).value());
  EXPECT_EQ(Runs(id), 1);
}

TEST_P(InboxTest, ClaimOutsideATransactionIsRefused) {
  const Inbox inbox("inventory");
  Result<bool> r = false;
  if (postgres()) {
    auto conn = PgConnect(db_->url);
    ASSERT_OK(conn);
    r = inbox.Claim(conn->get(), "e-1");
  } else {
    auto d = SqliteOpen(db_->url.substr(9), false);
    ASSERT_OK(d);
    r = inbox.Claim(d->get(), "e-1");
  }
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("BEGIN"), std::string::npos);
}

TEST_P(InboxTest, MissingTableSaysToMigrate) {
  const Inbox inbox("inventory", "no_such_inbox");
  auto r = Deliver(inbox, "e-1");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("courier migrate"), std::string::npos)
      << r.status().message();
}

// Old entries go in batches; recent ones and other consumers' stay.
TEST_P(InboxTest, PruneDeletesOnlyThisConsumersOldEntries) {
  const Inbox inbox("inventory");
  for (int i = 0; i < 25; ++i) ASSERT_OK(Deliver(inbox, "old-" + std::to_string(i)));
  for (int i = 0; i < 5; ++i) ASSERT_OK(Deliver(inbox, "new-" + std::to_string(i)));
  ASSERT_OK(Deliver(Inbox("billing"), "old-0"));
  const std::string two_days_ago =
      postgres() ? "now() - interval '2 days'" : "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')";
  ASSERT_OK(db_->Transaction({"UPDATE courier_inbox SET processed_at = " + two_days_ago +
                              " WHERE event_id LIKE 'old-%'"}));
  Result<int64_t> pruned = 0;
  if (postgres()) {
    auto conn = PgConnect(db_->url);
    ASSERT_OK(conn);
    pruned = inbox.Prune(conn->get(), std::chrono::hours(24), /*batch=*/10);
  } else {
    auto d = SqliteOpen(db_->url.substr(9), false);
    ASSERT_OK(d);
    pruned = inbox.Prune(d->get(), std::chrono::hours(24), /*batch=*/10);
  }
  ASSERT_OK(pruned);
  EXPECT_EQ(*pruned, 25);
  EXPECT_EQ(db_->Count("courier_inbox WHERE consumer = 'inventory'"), 5);
  EXPECT_EQ(db_->Count("courier_inbox WHERE consumer = 'billing'"), 1);
}

INSTANTIATE_TEST_SUITE_P(Databases, InboxTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Postgres" : "Sqlite"; });

// Two consumer instances on one duplicate: the second waits for the first transaction, then
// sees the claim (commit) or takes it over (rollback). One effect, never a deadlock.
TEST(InboxRace, SecondInstanceWaitsThenSkipsOrTakesOver) {
  TestDb db = TestDb::Make(true);
  ASSERT_OK(db.Transaction({kEffects}));
  const Inbox inbox("inventory");
  for (const bool first_commits : {true, false}) {
    const std::string id = NewUuidV7();
    auto a = PgConnect(db.url);
    ASSERT_OK(a);
    ASSERT_OK(PgRun(a->get(), "BEGIN"));
    ASSERT_TRUE(inbox.Claim(a->get(), id).value());
    std::atomic<int> second{-1};
    std::thread b([&] {
      auto conn = PgConnect(db.url);
      ASSERT_OK(conn);
      auto fresh = inbox.Process(conn->get(), id, [&](pg_conn* c) {
        return PgRun(c, "INSERT INTO effects VALUES ('" + id + "', 1)");
      });
      ASSERT_OK(fresh);
      second = *fresh ? 1 : 0;
    });
    // The second instance is blocked on the first's claim.
    ASSERT_TRUE(WaitUntil([&] {
      return db.Count(
                 "pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = "
                 "current_database()") == 1;
    }));
    EXPECT_EQ(second.load(), -1);
    if (first_commits) {
      ASSERT_OK(PgRun(a->get(), "INSERT INTO effects VALUES ('" + id + "', 1)"));
      ASSERT_OK(PgRun(a->get(), "COMMIT"));
    } else {
      ASSERT_OK(PgRun(a->get(), "ROLLBACK"));
    }
    b.join();
    EXPECT_EQ(second.load(), first_commits ? 0 : 1);
    EXPECT_EQ(db.Count("effects WHERE event_id = '" + id + "'"), 1);
  }
}

// Many instances, each handling every event of a set in its own order, all at once.
TEST(InboxRace, ManyInstancesEveryEventOneEffect) {
  TestDb db = TestDb::Make(true);
  ASSERT_OK(db.Transaction({kEffects}));
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.push_back(NewUuidV7());
  std::atomic<int> handled{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto conn = PgConnect(db.url);
      ASSERT_OK(conn);
      std::vector<std::string> order = ids;
      std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<unsigned>(t)));
      const Inbox inbox("inventory");
      for (const std::string& id : order) {
        auto fresh = inbox.Process(conn->get(), id, [&](pg_conn* c) {
          return PgRun(c, "INSERT INTO effects VALUES ('" + id + "', 1)");
        });
        ASSERT_OK(fresh);
        if (*fresh) ++handled;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(handled.load(), 200);
  EXPECT_EQ(db.Count("effects"), 200);
}

}  // namespace
}  // namespace courier::test
