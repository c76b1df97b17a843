// The CDC source against real PostgreSQL, where it must stay safe when things go wrong around
// it: a relay frozen while its stream holds the slot, the server crashing under a steady
// writer, outboxes whose names look alike or reach PostgreSQL's identifier limit.
#include <signal.h>

#include <atomic>
#include <map>
#include <optional>
#include <thread>

#include "support/fixtures.h"

namespace courier::test {
namespace {

class CdcSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    db_ = std::make_unique<TestDb>(TestDb::Make(true));
  }

  std::string Query1(const std::string& sql) const {
    auto rows = PgQuery(db_->url, sql);
    EXPECT_OK(rows);
    return rows.ok() && !rows->empty() ? (*rows)[0] : "";
  }

  std::vector<std::string> RelayArgs(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = {"relay",
                                     "--mode",
                                     "cdc",
                                     "--source",
                                     db_->url,
                                     "--sink",
                                     "kafka://" + broker_->bootstrap() + "/{aggregate_type}",
                                     "--poll-interval",
                                     "20ms",
                                     "--backoff-initial",
                                     "50ms",
                                     "--backoff-max",
                                     "500ms"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  Status RunSql(const std::string& sql) const {
    auto rows = PgQuery(db_->url, sql);
    return rows.ok() ? Status::Ok() : rows.status();
  }

  bool LogSays(const std::string& log, const std::string& what) const {
    return WaitUntil([&] { return ReadFile(log).find(what) != std::string::npos; });
  }

  std::set<std::string> Commit(int n, int aggregates, const std::string& type = "order") {
    return CommitEvents(*db_, n, aggregates, &seq_, type);
  }

  std::unique_ptr<DevBroker> broker_;
  std::unique_ptr<TestDb> db_;
  int64_t seq_ = 1;
};

// "orders-outbox" and "orders_outbox" in one database made the same slot name: the second
// migration recreated the first one's slot, and one outbox's events were never published
// while its relay looked healthy. Each outbox now has its own slot and publication, and its
// relay publishes exactly its own events.
TEST_F(CdcSafety, OutboxesWhoseNamesLookAlikeEachPublishOnlyTheirOwnEvents) {
  const TableNames dash{"orders-outbox", "orders-outbox_dead_letter"};
  const TableNames underscore{"orders_outbox", "orders_outbox_dead_letter"};
  CdcOptions cdc;
  cdc.enabled = true;
  ASSERT_OK(Migrate(db_->url, dash, cdc));
  ASSERT_OK(Migrate(db_->url, underscore, cdc));
  ASSERT_OK(Migrate(db_->url, dash, cdc));  // idempotent: keeps its own slot
  const std::string dash_slot = Query1("SELECT slot_name FROM \"orders-outbox_cdc_slot\"");
  const std::string underscore_slot = Query1("SELECT slot_name FROM orders_outbox_cdc_slot");
  EXPECT_NE(dash_slot, underscore_slot);
  EXPECT_EQ(Query1("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"),
            "2");
  EXPECT_EQ(
      Query1("SELECT string_agg(pubname, ',' ORDER BY pubname COLLATE \"C\") FROM pg_publication"),
      "orders-outbox,orders_outbox");

  auto options = [&](const TableNames& t) {
    RelayOptions o =
        TestRelayOptions(db_->url, "kafka://" + broker_->bootstrap() + "/{aggregate_type}");
    o.mode = RelayOptions::Mode::kCdc;
    o.outbox_table = t.outbox;
    o.dead_letter_table = t.dead_letter;
    return o;
  };
  ASSERT_OK(broker_->CreateTopic("alpha", 1));
  ASSERT_OK(broker_->CreateTopic("beta", 1));
  BackgroundRelay dash_relay(options(dash));
  BackgroundRelay underscore_relay(options(underscore));
  std::set<std::string> dash_ids, underscore_ids;
  for (int tx = 0; tx < 10; ++tx) {
    std::vector<std::string> to_dash, to_underscore;
    for (int i = 0; i < 3; ++i) {
      const std::string dash_id = NewUuidV7();
      const std::string underscore_id = NewUuidV7();
      dash_ids.insert(dash_id);
      underscore_ids.insert(underscore_id);
      to_dash.push_back(
          InsertEventSql(dash_id, "d" + std::to_string(i), seq_, "alpha", dash.outbox));
      to_underscore.push_back(
          InsertEventSql(underscore_id, "u" + std::to_string(i), seq_, "beta", underscore.outbox));
      ++seq_;
    }
    ASSERT_OK(db_->Transaction(to_dash));
    ASSERT_OK(db_->Transaction(to_underscore));
  }
  EXPECT_TRUE(WaitUntil(
      [&] {
        return db_->Count(QuoteIdent(dash.outbox)) == 0 &&
               db_->Count(QuoteIdent(underscore.outbox)) == 0;
      },
      Duration(60000)))
      << "each relay publishes (and deletes) its own outbox's events";
  EXPECT_EQ(dash_relay.stats().published, 30);
  EXPECT_EQ(underscore_relay.stats().published, 30);
  ASSERT_OK(dash_relay.Stop());
  ASSERT_OK(underscore_relay.Stop());
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "alpha"), dash_ids), 0);
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "beta"), underscore_ids), 0);
}

// The server streams a transaction once its commit record is flushed, before the
// transaction is visible to other sessions (a window that a loaded machine stretches, and
// that synchronous replication holds open until a standby confirms). A checkpoint in that
// window deleted nothing, the slot moved on, and the row stayed in the outbox forever (a
// restart republished it). The relay now waits until the rows it deletes are visible.
TEST_F(CdcSafety, RowStreamedBeforeItsTransactionIsVisibleIsStillDeleted) {
  const std::string database = Query1("SELECT current_database()");
  // Only the writer below waits for the (absent) synchronous standby.
  ASSERT_OK(RunSql("ALTER DATABASE " + QuoteIdent(database) + " SET synchronous_commit = local"));
  ASSERT_OK(RunSql("ALTER SYSTEM SET synchronous_standby_names = 'courier_absent'"));
  struct ResetStandbys {
    std::string url;
    ~ResetStandbys() {
      (void)PgQuery(url, "ALTER SYSTEM RESET synchronous_standby_names");
      (void)PgQuery(url, "SELECT pg_reload_conf()");
    }
  } reset{db_->url};
  ASSERT_OK(RunSql("SELECT pg_reload_conf()"));
  ASSERT_TRUE(
      WaitUntil([&] { return Query1("SHOW synchronous_standby_names") == "courier_absent"; }));
  CdcOptions cdc;
  cdc.enabled = true;
  ASSERT_OK(Migrate(db_->url, TableNames{}, cdc));

  RelayOptions o = TestRelayOptions(db_->url, "kafka://" + broker_->bootstrap() + "/order");
  o.mode = RelayOptions::Mode::kCdc;
  ASSERT_OK(broker_->CreateTopic("order", 1));
  BackgroundRelay relay(o);
  std::set<std::string> ids = Commit(1, 1);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(30000)));

  const std::string id = NewUuidV7();
  ids.insert(id);
  std::atomic<int> writer_pid{0};
  Status written;
  std::thread writer([&] {
    auto conn = PgConnect(db_->url);
    if (!conn.ok()) {
      written = conn.status();
      writer_pid = -1;
      return;
    }
    written = PgRun(conn->get(), "SET synchronous_commit = on");
    writer_pid = PQbackendPID(conn->get());
    // Commits locally, then waits for the standby: streamed, not yet visible.
    if (written.ok()) written = PgRun(conn->get(), InsertEventSql(id, "late", seq_));
  });
  ASSERT_TRUE(WaitUntil([&] { return writer_pid != 0; }));
  const std::string pid = std::to_string(writer_pid.load());
  const bool waiting = WaitUntil([&] {
    return Query1("SELECT wait_event FROM pg_stat_activity WHERE pid = " + pid) == "SyncRep";
  });
  const bool delivered =
      waiting && WaitUntil(
                     [&] {
                       for (const KafkaRecord& r : ReadTopic(*broker_, "order")) {
                         if (r.event.event_id == id) return true;
                       }
                       return false;
                     },
                     Duration(30000));
  // Without waiting for visibility the checkpoint is done by now, having deleted nothing.
  (void)WaitUntil([&] { return relay.stats().published == 2; }, Duration(3000));
  (void)PgQuery(db_->url, "SELECT pg_cancel_backend(" + pid + ")");
  writer.join();
  ASSERT_TRUE(waiting) << "the writer did not wait for the synchronous standby";
  ASSERT_TRUE(delivered) << "the row was not streamed before its transaction was visible";
  EXPECT_OK(written);
  EXPECT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(15000)))
      << "the published row stayed in the outbox";
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(relay.stats().published, 2);
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), ids), 0);
}

// A 63-byte outbox name: its lease and CDC tables used to be cut to the outbox's own name,
// and migrate succeeded without creating them. They are now distinct tables within 63 bytes,
// and the relay works; a name longer than PostgreSQL keeps is refused with one line.
TEST_F(CdcSafety, LongOutboxNameGetsDistinctTablesAndWorks) {
  const std::string outbox = "orders_outbox_of_the_warehouse_and_fulfilment_service_in_the_eu";
  ASSERT_EQ(outbox.size(), 63u);
  const TableNames t{outbox, "long_dead_letter"};
  CdcOptions cdc;
  cdc.enabled = true;
  ASSERT_OK(Migrate(db_->url, t, cdc));
  const std::set<std::string> tables = {t.outbox, t.Leases(), t.CdcSlots(), t.CdcBackfill()};
  ASSERT_EQ(tables.size(), 4u);
  for (const std::string& name : tables) {
    EXPECT_LE(name.size(), 63u) << name;
    EXPECT_EQ(Query1("SELECT to_regclass(" + QuoteLiteral(QuoteIdent(name)) + ") IS NOT NULL"), "t")
        << name;
  }
  EXPECT_EQ(Query1("SELECT count(*) FROM pg_attribute WHERE attrelid = " +
                   QuoteLiteral(QuoteIdent(t.Leases())) + "::regclass AND attname = 'holder'"),
            "1");
  EXPECT_EQ(Query1("SELECT count(*) FROM pg_indexes WHERE tablename = " + QuoteLiteral(outbox)),
            "3")
      << "primary key, pending and published";
  RelayOptions o = TestRelayOptions(db_->url, "kafka://" + broker_->bootstrap() + "/order");
  o.mode = RelayOptions::Mode::kCdc;
  o.outbox_table = t.outbox;
  o.dead_letter_table = t.dead_letter;
  BackgroundRelay relay(o);
  std::set<std::string> ids;
  std::vector<std::string> inserts;
  for (int i = 0; i < 20; ++i) {
    const std::string id = NewUuidV7();
    ids.insert(id);
    inserts.push_back(InsertEventSql(id, "a", seq_++, "order", outbox));
  }
  ASSERT_OK(db_->Transaction(inserts));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 20; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), ids), 0);
  EXPECT_EQ(db_->Count(QuoteIdent(outbox)), 0);

  CommandResult longer = RunCourier({"migrate", "--source", db_->url, "--table", outbox + "x"});
  EXPECT_EQ(longer.exit_code, 2);
  EXPECT_EQ(longer.err, "courier: error: table name '" + outbox +
                            "x' is too long: 'orders_outbox_of_the...' has 64 bytes and "
                            "PostgreSQL keeps 63; choose a shorter name\n");
}

// A slot that is not this outbox's is refused with one line (exit 2), by migrate and by the
// relay, and left as it is: another outbox's, and one made by hand.
TEST_F(CdcSafety, SlotOfAnotherOutboxIsRefusedWithOneLine) {
  CdcOptions cdc;
  cdc.enabled = true;
  ASSERT_OK(Migrate(db_->url, TableNames{}, cdc));
  const std::string slot = Query1("SELECT slot_name FROM courier_outbox_cdc_slot");
  const std::string created = Query1("SELECT consistent_lsn::text FROM courier_outbox_cdc_slot");
  ASSERT_OK(Migrate(db_->url, TableNames{"other_outbox", "other_dead_letter"}));
  const std::vector<std::string> other = {
      "--source",          db_->url, "--table", "other_outbox", "--dead-letter-table",
      "other_dead_letter", "--mode", "cdc",     "--slot"};
  auto run = [&](const std::string& command, const std::string& slot_name,
                 const std::vector<std::string>& extra) {
    std::vector<std::string> args = {command};
    args.insert(args.end(), other.begin(), other.end());
    args.push_back(slot_name);
    args.insert(args.end(), extra.begin(), extra.end());
    return RunCourier(args);
  };
  const std::string taken = "courier: error: replication slot " + slot +
                            " is registered to another outbox (in courier_outbox_cdc_slot); "
                            "choose another --slot for public.other_outbox\n";
  CommandResult migrate = run("migrate", slot, {});
  EXPECT_EQ(migrate.exit_code, 2);
  EXPECT_EQ(migrate.err.substr(migrate.err.find("courier: error")), taken) << migrate.err;
  CommandResult relay = run("relay", slot, {"--sink", "file:///dev/null", "--once"});
  EXPECT_EQ(relay.exit_code, 2);
  EXPECT_EQ(relay.err.substr(relay.err.find("courier: error")), taken) << relay.err;
  EXPECT_EQ(Query1("SELECT consistent_lsn::text FROM courier_outbox_cdc_slot"), created)
      << "the other outbox's slot was not recreated";
  EXPECT_EQ(Query1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + slot + "'"),
            "1");

  ASSERT_OK(PgQuery(db_->url, "SELECT pg_create_logical_replication_slot('by_hand', 'pgoutput')"));
  CommandResult by_hand = run("migrate", "by_hand", {});
  EXPECT_EQ(by_hand.exit_code, 2);
  EXPECT_EQ(by_hand.err.substr(by_hand.err.find("courier: error")),
            "courier: error: replication slot by_hand exists but was not created by courier for "
            "public.other_outbox; choose another --slot, or drop it if nothing uses it: SELECT "
            "pg_drop_replication_slot('by_hand')\n");
  EXPECT_EQ(Query1("SELECT count(*) FROM other_outbox_cdc_slot"), "0");
}

// The active relay freezes (SIGSTOP) while its walsender still holds the slot. The standby
// cuts the frozen holder's session off once its lease is a whole period overdue (two leases
// at most), then ends the walsender still attached to the slot and streams: new events go out
// within four leases of the freeze, not after wal_sender_timeout (60 s). Resumed, the frozen
// relay loses nothing and breaks no aggregate's order (it may repeat what it had in flight).
TEST_F(CdcSafety, StandbyTakesTheSlotFromAFrozenRelayWithinAFewLeases) {
  constexpr Duration kLease{2000};
  const std::vector<std::string> args = RelayArgs({"--lease", "2s", "--batch-size", "20"});
  const std::string log_a = db_->dir.File("a.log");
  const std::string log_b = db_->dir.File("b.log");
  auto a = SpawnCourier(args, log_a);
  ASSERT_OK(a);
  ASSERT_TRUE(LogSays(log_a, "streaming from replication slot")) << ReadFile(log_a);
  auto b = SpawnCourier(args, log_b);
  ASSERT_OK(b);
  ASSERT_TRUE(LogSays(log_b, "standing by")) << ReadFile(log_b);
  std::set<std::string> ids = Commit(100, 5);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }));

  const std::string holder = Query1("SELECT holder FROM courier_outbox_lease");
  const std::string pid = holder.substr(holder.rfind(':') + 1);
  Subprocess* active = std::to_string(a->pid()) == pid ? &*a : &*b;
  Subprocess* standby = active == &*a ? &*b : &*a;
  ASSERT_EQ(std::to_string(active->pid()), pid) << holder;
  active->Signal(SIGSTOP);
  const TimePoint frozen = Clock::Real().Now();
  const std::set<std::string> during = Commit(50, 5);
  ids.insert(during.begin(), during.end());
  const bool taken = WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, kLease * 4);
  const auto took_ms = std::chrono::duration_cast<Duration>(Clock::Real().Now() - frozen).count();
  std::printf("[takeover] standby %s %lld ms after the active relay froze\n",
              taken ? "published" : "had published nothing", static_cast<long long>(took_ms));
  active->Signal(SIGCONT);
  EXPECT_TRUE(taken) << "the standby did not publish within 4 leases\n"
                     << ReadFile(log_a) << "\n---\n"
                     << ReadFile(log_b);
  const std::set<std::string> after = Commit(50, 5);
  ids.insert(after.begin(), after.end());
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(60000)));
  standby->Signal(SIGTERM);
  active->Signal(SIGTERM);
  EXPECT_EQ(standby->Wait(Duration(20000)).value_or(-1), 0);
  EXPECT_EQ(active->Wait(Duration(20000)).value_or(-1), 0);
  const int64_t duplicates = ExpectDelivered(ReadTopic(*broker_, "order"), ids);
  std::printf("[takeover] duplicates=%lld\n", static_cast<long long>(duplicates));
}

// The position a checkpoint stores is past the last transaction of its batch, not one short
// of it: a batch used to end at its transaction's last change, the Commit unread, so the
// stored position lagged one transaction behind the rows deleted, and a server crash then
// published that transaction once more on top of the batch in flight.
TEST_F(CdcSafety, CheckpointStoresThePositionPastTheBatchsLastTransaction) {
  const std::string log = db_->dir.File("relay.log");
  auto relay = SpawnCourier(RelayArgs(), log);
  ASSERT_OK(relay);
  ASSERT_TRUE(LogSays(log, "streaming from replication slot")) << ReadFile(log);
  for (int i = 0; i < 5; ++i) {
    const std::string before = Query1("SELECT pg_current_wal_insert_lsn()::text");
    Commit(1, 1);
    // The rows are deleted in the transaction that stores the position.
    ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; })) << ReadFile(log);
    EXPECT_EQ(
        Query1("SELECT checkpoint_lsn > '" + before + "'::pg_lsn FROM courier_outbox_cdc_slot"),
        "t")
        << "stored " << Query1("SELECT checkpoint_lsn FROM courier_outbox_cdc_slot")
        << ", short of the event's transaction, which began after " << before;
  }
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(20000)).value_or(-1), 0);
}

// A steady writer of one-event transactions while PostgreSQL crashes three times
// (pg_ctl restart -m immediate) under a CDC relay. The server keeps a slot's confirmed
// position on disk only as of its last checkpoint; the relay's own position, committed with
// the rows it deletes, lets it skip everything it had checkpointed. So nothing is lost, order
// holds per aggregate, and each crash repeats at most about the batches that were in flight:
// one with checkpoints one after the other, up to --checkpoints-in-flight + 1 when pipelined.
class CdcServerCrash : public ::testing::TestWithParam<size_t> {};

TEST_P(CdcServerCrash, RepeatsAtMostAboutTheBatchesInFlightPerCrash) {
  constexpr int kBatch = 10;
  constexpr int kCrashes = 3;
  const size_t in_flight = GetParam();
  auto pg = PostgresServer::Start();  // its own server: this test crashes it
  ASSERT_OK(pg);
  auto url = (*pg)->NewDatabase("crash");
  ASSERT_OK(url);
  TestDb db;
  db.url = *url;
  ASSERT_OK(Migrate(db.url, TableNames{}));
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  RelayOptions o = TestRelayOptions(db.url, "kafka://" + (*broker)->bootstrap() + "/order");
  o.mode = RelayOptions::Mode::kCdc;
  o.batch_size = kBatch;
  o.checkpoints_in_flight = in_flight;
  o.lease = Duration(1000);
  BackgroundRelay relay(o);

  std::atomic<bool> stop{false};
  std::set<std::string> committed, in_doubt;
  std::thread writer([&] {
    int64_t seq = 0;
    PgConn conn;
    while (!stop.load()) {
      if (!conn) {
        auto c = PgConnect(db.url);
        if (!c.ok()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          continue;
        }
        conn = std::move(c).value();
      }
      const std::string id = NewUuidV7();
      ++seq;  // used even when in doubt: later events of the aggregate stay above it
      const Status st =
          PgRun(conn.get(), InsertEventSql(id, "agg-" + std::to_string(seq % 8), seq));
      if (st.ok()) {
        committed.insert(id);
      } else {
        in_doubt.insert(id);  // no answer to the commit: it may or may not exist
        conn.reset();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
  });
  for (int crash = 0; crash < kCrashes; ++crash) {
    const int64_t before = relay.stats().published;
    ASSERT_TRUE(WaitUntil([&] { return relay.stats().published >= before + 200; }, Duration(60000)))
        << "the relay publishes between crashes";
    ASSERT_OK((*pg)->Restart(/*immediate=*/true));
  }
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published >= 200; }, Duration(60000)));
  stop = true;
  writer.join();
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }, Duration(60000)));
  ASSERT_OK(relay.Stop());

  const std::vector<KafkaRecord> records = ReadTopic(**broker, "order");
  const Verdict v = Judge(Expectation{committed, in_doubt}, Deliveries(records));
  std::printf(
      "[cdc-crash] crashes=%d batch=%d in_flight=%zu committed=%zu in_doubt=%zu delivered=%zu "
      "duplicates=%lld lost=%lld\n",
      kCrashes, kBatch, in_flight, committed.size(), in_doubt.size(), records.size(),
      static_cast<long long>(v.duplicates), static_cast<long long>(v.lost));
  EXPECT_EQ(v.lost, 0) << "committed events never delivered" << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 0) << ExamplesOf(v);
  EXPECT_EQ(v.order_violations, 0) << "per-aggregate order broken" << ExamplesOf(v);
  EXPECT_LE(v.duplicates, static_cast<int64_t>(kCrashes * kBatch * (in_flight + 1)))
      << "about the batches in flight per crash at most";
}

INSTANTIATE_TEST_SUITE_P(CheckpointsInFlight, CdcServerCrash, ::testing::Values(0, 4));

}  // namespace
}  // namespace courier::test
