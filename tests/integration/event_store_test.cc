// The event store (include/courier/event_store.h) against real PostgreSQL and SQLite: the
// schema, expected versions under concurrent writers, and the gap-safe ReadAll.
#include "courier/event_store.h"

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "eventstore/horizon.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

NewEvent Deposited(int amount) {
  return NewEvent{.event_type = "FundsDeposited",
                  .payload = "{\"amount\": " + std::to_string(amount) + "}",
                  .headers = {{"trace_id", "t-" + std::to_string(amount)}}};
}

// A fresh PostgreSQL database with an event store (and the outbox tables, as TestDb makes).
std::string EventStoreDb() {
  TestDb db = TestDb::Make(true);
  const std::string url = db.url;
  db.url.clear();  // keep the database (no slots to drop)
  EXPECT_OK(Migrate(url, EventStoreTables()));
  return url;
}

PgConn Connect(const std::string& url) {
  auto conn = PgConnect(url);
  EXPECT_OK(conn);
  return conn.ok() ? std::move(conn).value() : nullptr;
}

TEST(EventStoreSchema, MigrateIsIdempotentAndQuotesTheName) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  ASSERT_OK(PgQuery(*url, "CREATE SCHEMA app"));
  const TableNames names = EventStoreTables("app.Account \"Events\"");
  ASSERT_OK(Migrate(*url, names));
  MigrateReport again;
  ASSERT_OK(Migrate(*url, names, CdcOptions{}, nullptr, &again));
  EXPECT_TRUE(again.applied.empty());
  EXPECT_EQ(again.version, 5);
  auto tables = PgQuery(*url,
                        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                        "WHERE table_schema IN ('app', 'public') ORDER BY 1");
  ASSERT_OK(tables);
  EXPECT_EQ(*tables, (std::vector<std::string>{
                         "app.Account \"Events\"", "app.Account \"Events\"_cdc_backfill",
                         "app.Account \"Events\"_cdc_slot", "app.Account \"Events\"_lease",
                         "app.Account \"Events\"_projections", "app.Account \"Events\"_schema",
                         "app.Account \"Events\"_snapshots", "public.courier_dead_letter"}));
  // The plain-SQL contract: no position, no event_id, no version check but the constraint.
  const std::string table = QuoteIdent(names.outbox);
  ASSERT_OK(PgQuery(*url, "INSERT INTO " + table +
                              " (stream_type, stream_id, version, event_type, payload) VALUES"
                              " ('account', 'acct-1', 1, 'Opened', '{}')"));
  auto conn = Connect(*url);
  EventStore store(names.outbox);
  ASSERT_OK(PgRun(conn.get(), "BEGIN"));
  auto appended = store.Append(conn.get(), "account", "acct-1", 1, {Deposited(5)});
  ASSERT_OK(appended);
  ASSERT_OK(PgRun(conn.get(), "COMMIT"));
  EXPECT_EQ(appended->version, 2);
}

TEST(EventStoreSchema, PlainSqlWithAStaleVersionIsAUniqueViolation) {
  const std::string url = EventStoreDb();
  const std::string insert =
      "INSERT INTO courier_events (stream_type, stream_id, version, event_type, payload)"
      " VALUES ('account', 'acct-1', 1, 'FundsDeposited', '{\"amount\":10}')";
  ASSERT_OK(PgQuery(url, insert));
  auto conn = Connect(url);
  PgResult res(PQexec(conn.get(), insert.c_str()));
  EXPECT_EQ(PgSqlState(res.get()), "23505");
  EXPECT_STATUS(PgQuery(url, insert), StatusCode::kAborted);
  // Versions start at 1.
  auto zero = PgQuery(url,
                      "INSERT INTO courier_events (stream_type, stream_id, version,"
                      " event_type, payload) VALUES ('account', 'acct-2', 0, 'X', '{}')");
  EXPECT_STATUS(zero, StatusCode::kInvalidArgument);
}

TEST(EventStoreApi, AppendChecksTheExpectedVersionAndKeepsTheTransactionUsable) {
  const std::string url = EventStoreDb();
  auto conn = Connect(url);
  EventStore store;
  EXPECT_STATUS(store.Append(conn.get(), "account", "a", kNoStream, {Deposited(1)}),
                StatusCode::kFailedPrecondition);

  ASSERT_OK(PgRun(conn.get(), "BEGIN"));
  auto first = store.Append(conn.get(), "account", "a", kNoStream, {Deposited(1), Deposited(2)});
  ASSERT_OK(first);
  EXPECT_EQ(first->version, 2);
  ASSERT_EQ(first->events.size(), 2u);
  EXPECT_EQ(first->events[0].version, 1);
  EXPECT_LT(first->events[0].position, first->events[1].position);
  EXPECT_TRUE(IsUuid(first->events[0].event_id));

  auto stale = store.Append(conn.get(), "account", "a", 1, {Deposited(3)});
  EXPECT_STATUS(stale, StatusCode::kAborted);
  EXPECT_EQ(stale.status().message(),
            "stream account/a is at version 2, not the expected 1: re-read it and retry");
  auto exists = store.Append(conn.get(), "account", "a", kNoStream, {Deposited(3)});
  EXPECT_STATUS(exists, StatusCode::kAborted);
  EXPECT_EQ(exists.status().message(),
            "stream account/a exists (at version 2), expected none: re-read it and retry");
  // Still usable: the refused appends left nothing, the first one is kept.
  auto any = store.Append(conn.get(), "account", "a", kAny, {Deposited(4)});
  ASSERT_OK(any);
  EXPECT_EQ(any->version, 3);
  const std::string dup_id = first->events[0].event_id;
  EXPECT_STATUS(store.Append(conn.get(), "account", "b", kNoStream,
                             {NewEvent{.event_type = "X", .payload = "{}", .event_id = dup_id}}),
                StatusCode::kInvalidArgument);
  EXPECT_STATUS(store.Append(conn.get(), "account", "b", kNoStream, {}),
                StatusCode::kInvalidArgument);
  ASSERT_OK(PgRun(conn.get(), "COMMIT"));

  auto events = store.ReadStream(conn.get(), "account", "a");
  ASSERT_OK(events);
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[2].version, 3);
  EXPECT_EQ((*events)[2].payload, "{\"amount\": 4}");  // byte for byte
  EXPECT_EQ((*events)[2].headers, (Headers{{"trace_id", "t-4"}}));
  EXPECT_EQ((*events)[2].stream_type, "account");
  EXPECT_EQ((*events)[2].created_at.size(), 27u) << (*events)[2].created_at;
  auto from2 = store.ReadStream(conn.get(), "account", "a", 2, 1);
  ASSERT_OK(from2);
  ASSERT_EQ(from2->size(), 1u);
  EXPECT_EQ((*from2)[0].version, 2);
}

// The conflict of two open transactions: the second waits for the first, then is refused
// with the version the first wrote; after a retry it succeeds.
TEST(EventStoreApi, AConcurrentAppendWaitsAndIsRefusedWithTheCurrentVersion) {
  const std::string url = EventStoreDb();
  auto a = Connect(url);
  auto b = Connect(url);
  EventStore store;
  ASSERT_OK(PgRun(a.get(), "BEGIN"));
  ASSERT_OK(store.Append(a.get(), "account", "x", kNoStream, {Deposited(1)}));
  std::atomic<bool> b_done{false};
  Result<AppendResult> b_result = InternalError("not run");
  std::thread writer([&] {
    EXPECT_OK(PgRun(b.get(), "BEGIN"));
    b_result = store.Append(b.get(), "account", "x", kNoStream, {Deposited(2)});
    b_done = true;
  });
  // b blocks on a's uncommitted version 1 until a commits.
  // b's insert waits on a's uncommitted row (holding the table's lock alone is not enough:
  // it is taken when the statement is parsed, before its snapshot).
  const std::string b_pid = std::to_string(PQbackendPID(b.get()));
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto waiting = PgExec(a.get(),
                              "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND"
                              " wait_event_type = 'Lock'",
                              {b_pid});
        return waiting.ok() && std::string(PQgetvalue(waiting->get(), 0, 0)) == "1";
      },
      Duration(10000)));
  EXPECT_EQ(TableWriters(a.get(), "courier_events").value().size(), 1u);
  EXPECT_FALSE(b_done.load());
  ASSERT_OK(PgRun(a.get(), "COMMIT"));
  writer.join();
  EXPECT_STATUS(b_result, StatusCode::kAborted);
  EXPECT_EQ(b_result.status().message(),
            "stream account/x is at version 1: another writer appended version 1 first; re-read "
            "the stream and retry");
  auto retry = store.Append(b.get(), "account", "x", 1, {Deposited(2)});
  ASSERT_OK(retry);
  ASSERT_OK(PgRun(b.get(), "COMMIT"));
  EXPECT_EQ(retry->version, 2);
}

// Several writers read-decide-append on one stream: each version is written exactly once,
// the losers are refused and win on a retry, and no update is lost.
TEST(EventStoreApi, ConcurrentWritersLoseNoUpdate) {
  const std::string url = EventStoreDb();
  constexpr int kWriters = 4;
  constexpr int kEach = 25;
  std::atomic<int> aborted{0};
  std::vector<std::thread> writers;
  EventStore store;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      auto conn = Connect(url);
      for (int i = 0; i < kEach; ++i) {
        while (true) {
          ASSERT_OK(PgRun(conn.get(), "BEGIN"));
          auto stream = store.Load(conn.get(), "counter", "c");
          ASSERT_OK(stream);
          auto appended =
              store.Append(conn.get(), "counter", "c", stream->version, {Deposited(w * 1000 + i)});
          if (appended.ok()) {
            ASSERT_OK(PgRun(conn.get(), "COMMIT"));
            break;
          }
          ASSERT_EQ(appended.status().code(), StatusCode::kAborted) << Describe(appended);
          ++aborted;
          ASSERT_OK(PgRun(conn.get(), "ROLLBACK"));
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  auto conn = Connect(url);
  auto events = store.ReadStream(conn.get(), "counter", "c");
  ASSERT_OK(events);
  ASSERT_EQ(events->size(), static_cast<size_t>(kWriters * kEach));
  std::set<std::string> payloads;
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].version, static_cast<int64_t>(i) + 1);
    if (i > 0) {
      EXPECT_GT((*events)[i].position, (*events)[i - 1].position);
    }
    payloads.insert((*events)[i].payload);
  }
  EXPECT_EQ(payloads.size(), static_cast<size_t>(kWriters * kEach)) << "an update was lost";
  std::printf("%d appends refused and retried\n", aborted.load());
}

TEST(EventStoreApi, SnapshotsAndTheFold) {
  const std::string url = EventStoreDb();
  auto conn = Connect(url);
  EventStore store;
  ASSERT_OK(PgRun(conn.get(), "BEGIN"));
  ASSERT_OK(store.Append(conn.get(), "account", "s", kNoStream,
                         {Deposited(1), Deposited(2), Deposited(3)}));
  ASSERT_OK(PgRun(conn.get(), "COMMIT"));
  auto none = store.LoadLatest(conn.get(), "account", "s");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_OK(store.SaveSnapshot(conn.get(), "account", "s", 2, "{\"balance\":3}"));
  ASSERT_OK(store.SaveSnapshot(conn.get(), "account", "s", 1, "{\"balance\":1}"));
  auto latest = store.LoadLatest(conn.get(), "account", "s");
  ASSERT_OK(latest);
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->version, 2);
  auto loaded = store.Load(conn.get(), "account", "s");
  ASSERT_OK(loaded);
  EXPECT_EQ(loaded->version, 3);
  ASSERT_EQ(loaded->events.size(), 1u);
  EXPECT_EQ(loaded->events[0].version, 3);
  EXPECT_STATUS(store.SaveSnapshot(conn.get(), "account", "s", 0, "{}"),
                StatusCode::kInvalidArgument);
}

// The classic bug: a writer holds a lower position open while later positions commit. ReadAll
// returns nothing past the open one until it is final, then everything in position order; a
// rolled-back one is passed over once it is gone.
TEST(EventStoreReadAll, NeverPassesAPositionStillOpen) {
  const std::string url = EventStoreDb();
  auto slow = Connect(url);
  auto fast = Connect(url);
  auto reader = Connect(url);
  EventStore store;
  for (bool commit : {true, false}) {
    SCOPED_TRACE(commit ? "commit" : "rollback");
    auto before = store.ReadAll(reader.get(), 0, 1000);
    ASSERT_OK(before);
    const int64_t start = before->empty() ? 0 : before->back().position;
    ASSERT_OK(PgRun(slow.get(), "BEGIN"));
    auto low = store.Append(slow.get(), "account", commit ? "slow-1" : "slow-2", kNoStream,
                            {Deposited(1)});
    ASSERT_OK(low);
    ASSERT_OK(PgRun(fast.get(), "BEGIN"));
    auto high = store.Append(fast.get(), "account", commit ? "fast-1" : "fast-2", kNoStream,
                             {Deposited(2)});
    ASSERT_OK(high);
    ASSERT_OK(PgRun(fast.get(), "COMMIT"));
    ASSERT_GT(high->events[0].position, low->events[0].position);

    auto blocked = store.ReadAll(reader.get(), start, 1000, std::chrono::milliseconds(0));
    EXPECT_STATUS(blocked, StatusCode::kRetriable);
    const std::string pid = std::to_string(PQbackendPID(slow.get()));
    EXPECT_NE(blocked.status().message().find("pid " + pid), std::string::npos)
        << blocked.status().message();
    EXPECT_STATUS(store.ReadAll(reader.get(), start, 1000, std::chrono::milliseconds(100)),
                  StatusCode::kRetriable);

    ASSERT_OK(PgRun(slow.get(), commit ? "COMMIT" : "ROLLBACK"));
    auto after = store.ReadAll(reader.get(), start, 1000, std::chrono::milliseconds(0));
    ASSERT_OK(after);
    std::vector<int64_t> positions;
    for (const RecordedEvent& e : *after) positions.push_back(e.position);
    if (commit) {
      EXPECT_EQ(positions,
                (std::vector<int64_t>{low->events[0].position, high->events[0].position}));
    } else {
      EXPECT_EQ(positions, (std::vector<int64_t>{high->events[0].position}));
    }
  }
  // A reader inside a transaction is refused: its snapshot could predate the horizon.
  ASSERT_OK(PgRun(reader.get(), "BEGIN"));
  EXPECT_STATUS(store.ReadAll(reader.get(), 0, 10), StatusCode::kFailedPrecondition);
}

// Writers commit out of position order at random while a reader follows with ReadAll: the
// reader sees every committed event exactly once, in increasing position order.
TEST(EventStoreReadAll, FollowsWritersThatCommitOutOfOrder) {
  const std::string url = EventStoreDb();
  constexpr int kWriters = 4;
  constexpr int kTransactions = 40;
  std::atomic<int> writers_left{kWriters};
  std::mutex mu;
  std::set<int64_t> committed;  // guarded by mu
  std::vector<std::thread> writers;
  EventStore store;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      auto conn = Connect(url);
      std::mt19937 rng(static_cast<unsigned>(w));
      for (int i = 0; i < kTransactions; ++i) {
        ASSERT_OK(PgRun(conn.get(), "BEGIN"));
        auto appended = store.Append(conn.get(), "w" + std::to_string(w), std::to_string(i % 3),
                                     kAny, std::vector<NewEvent>(1 + rng() % 3, Deposited(i)));
        ASSERT_OK(appended);
        // Hold the transaction open a while, so later positions commit first.
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 15));
        const bool commit = rng() % 5 != 0;
        ASSERT_OK(PgRun(conn.get(), commit ? "COMMIT" : "ROLLBACK"));
        if (commit) {
          std::lock_guard<std::mutex> lock(mu);
          for (const AppendedEvent& e : appended->events) committed.insert(e.position);
        }
      }
      --writers_left;
    });
  }
  auto reader = Connect(url);
  std::vector<int64_t> seen;
  const TimePoint deadline = Clock::Real().Now() + std::chrono::seconds(60);
  while (Clock::Real().Now() < deadline) {
    const bool done = writers_left.load() == 0;
    auto batch =
        store.ReadAll(reader.get(), seen.empty() ? 0 : seen.back(), 50, std::chrono::seconds(10));
    ASSERT_OK(batch);
    for (const RecordedEvent& e : *batch) seen.push_back(e.position);
    if (done && batch->empty()) break;
  }
  for (auto& t : writers) t.join();
  for (size_t i = 1; i < seen.size(); ++i) ASSERT_LT(seen[i - 1], seen[i]);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()), committed)
      << "the reader skipped or invented positions";
}

TEST(EventStoreSqlite, AppendReadAndSnapshots) {
  TempDir dir;
  const std::string url = "sqlite://" + dir.File("es.db");
  ASSERT_OK(Migrate(url, EventStoreTables()));
  ASSERT_OK(Migrate(url, EventStoreTables()));
  auto db = SqliteOpen(dir.File("es.db"), false);
  ASSERT_OK(db);
  sqlite3* s = db->get();
  EventStore store;
  EXPECT_STATUS(store.Append(s, "account", "a", kNoStream, {Deposited(1)}),
                StatusCode::kFailedPrecondition);
  ASSERT_OK(SqliteExec(s, "BEGIN IMMEDIATE"));
  auto first = store.Append(s, "account", "a", kNoStream, {Deposited(1), Deposited(2)});
  ASSERT_OK(first);
  EXPECT_EQ(first->version, 2);
  auto stale = store.Append(s, "account", "a", 1, {Deposited(3)});
  EXPECT_STATUS(stale, StatusCode::kAborted);
  EXPECT_EQ(stale.status().message(),
            "stream account/a is at version 2, not the expected 1: re-read it and retry");
  ASSERT_OK(store.Append(s, "account", "b", kAny, {Deposited(5)}));
  ASSERT_OK(SqliteExec(s, "COMMIT"));
  // Plain SQL with a stale version: the unique constraint.
  EXPECT_FALSE(SqliteExec(s,
                          "INSERT INTO courier_events (stream_type, stream_id, version,"
                          " event_type, payload) VALUES ('account', 'a', 2, 'X', '{}')")
                   .ok());
  auto all = store.ReadAll(s, 0, 10);
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[2].stream_id, "b");
  EXPECT_EQ((*all)[0].headers, (Headers{{"trace_id", "t-1"}}));
  auto after = store.ReadAll(s, (*all)[0].position, 10);
  ASSERT_OK(after);
  EXPECT_EQ(after->size(), 2u);
  ASSERT_OK(store.SaveSnapshot(s, "account", "a", 1, "{\"balance\":1}"));
  auto loaded = store.Load(s, "account", "a");
  ASSERT_OK(loaded);
  ASSERT_TRUE(loaded->snapshot.has_value());
  EXPECT_EQ(loaded->snapshot->state, "{\"balance\":1}");
  EXPECT_EQ(loaded->version, 2);
  ASSERT_EQ(loaded->events.size(), 1u);
}

}  // namespace
}  // namespace courier::test
