// The CDC source against real PostgreSQL (wal_level=logical) and the dev broker: what only
// the write-ahead log can do, and what it must never do (pin WAL, lose rows when its slot
// goes away, buffer a whole transaction).
#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "core/encoding.h"
#include "core/fault_points.h"
#include "core/uuid.h"
#include "relay/relay_internal.h"
#include "sources/cdc/stream.h"
#include "sources/pgoutput.h"
#include "stores/checkpoint_store.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class CdcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    db_ = std::make_unique<TestDb>(TestDb::Make(true));
  }

  RelayOptions Options(const std::string& topic = "{aggregate_type}") const {
    RelayOptions o = TestRelayOptions(db_->url, "kafka://" + broker_->bootstrap() + "/" + topic);
    o.mode = RelayOptions::Mode::kCdc;
    return o;
  }

  std::string Query1(const std::string& sql) const {
    auto rows = PgQuery(db_->url, sql);
    EXPECT_OK(rows);
    return rows.ok() && !rows->empty() ? (*rows)[0] : "";
  }

  // True once the relay streams from its slot (the slot is active).
  bool WaitStreaming() const {
    return WaitUntil([&] {
      return Query1(
                 "SELECT count(*) FROM pg_replication_slots WHERE database ="
                 " current_database() AND active") == "1";
    });
  }

  std::set<std::string> Commit(int n, int aggregates) {
    return CommitEvents(*db_, n, aggregates, &seq_);
  }

  std::unique_ptr<DevBroker> broker_;
  std::unique_ptr<TestDb> db_;
  int64_t seq_ = 1;
};

// Transactions reach the log in commit order, whatever ids they took; a rolled-back one
// never does.
TEST_F(CdcTest, PublishesInCommitOrderNotIdOrder) {
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitStreaming());
  auto early = PgConnect(db_->url);
  ASSERT_OK(early);
  const std::string first_id = NewUuidV7();   // takes the lower id, commits last
  const std::string second_id = NewUuidV7();  // takes the higher id, commits first
  const std::string ghost_id = NewUuidV7();
  ASSERT_OK(PgRun(early->get(), "BEGIN; " + InsertEventSql(first_id, "a", 2)));
  ASSERT_OK(db_->Transaction({InsertEventSql(second_id, "a", 1)}));
  ASSERT_OK(db_->Transaction({InsertEventSql(ghost_id, "a", 3)}, /*commit=*/false));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 1; }));
  ASSERT_OK(PgRun(early->get(), "COMMIT"));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 2; }));
  ASSERT_OK(relay.Stop());
  const std::vector<KafkaRecord> records = ReadTopic(*broker_, "order");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].event.event_id, second_id) << "first committed, first published";
  EXPECT_EQ(records[1].event.event_id, first_id);
  EXPECT_EQ(db_->Count("courier_outbox"), 0) << "acked rows are deleted";
}

// The table stays empty; the log still carries the event.
TEST_F(CdcTest, InsertThenDeleteInOneTransactionIsPublished) {
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitStreaming());
  const std::string id = NewUuidV7();
  ASSERT_OK(db_->Transaction(
      {InsertEventSql(id, "a", 1), "DELETE FROM courier_outbox WHERE event_id = '" + id + "'"}));
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 1; }));
  ASSERT_OK(relay.Stop());
  const std::vector<KafkaRecord> records = ReadTopic(*broker_, "order");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.event_id, id);
  EXPECT_EQ(SeqOf(records[0].event), 1);
}

// pg_logical_emit_message(true, 'courier', json): events without any table.
TEST_F(CdcTest, LogicalMessagesArePublishedWithoutATable) {
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitStreaming());
  const std::string explicit_id = NewUuidV7();
  auto emit = [](bool transactional, const std::string& prefix, const std::string& content) {
    return "SELECT pg_logical_emit_message(" + std::string(transactional ? "true" : "false") +
           ", '" + prefix + "', '" + content + "')";
  };
  ASSERT_OK(db_->Transaction({emit(true, "courier",
                                   R"({"aggregate_type":"order","aggregate_id":"m1",)"
                                   R"("event_type":"Shipped","payload":{"seq":1},)"
                                   R"("headers":{"trace":"t1"}})")}));
  ASSERT_OK(db_->Transaction({emit(true, "courier",
                                   R"({"aggregate_type":"order","aggregate_id":"m1",)"
                                   R"("event_type":"Rolled","payload":{"seq":99}})")},
                             /*commit=*/false));
  ASSERT_OK(db_->Transaction({emit(true, "other-app", R"({"ignored":true})"),
                              emit(true, "courier",
                                   R"({"event_id":")" + explicit_id +
                                       R"(","aggregate_type":"order","aggregate_id":"m1",)"
                                       R"("event_type":"Delivered","payload":{"seq":2}})")}));
  // Parked, not published: one could be a ghost, one cannot be read.
  ASSERT_OK(db_->Transaction({emit(false, "courier",
                                   R"({"aggregate_type":"order","aggregate_id":"m2",)"
                                   R"("event_type":"Loose","payload":{}})")}));
  ASSERT_OK(db_->Transaction({emit(true, "courier", "not json")}));
  ASSERT_TRUE(
      WaitUntil([&] { return relay.stats().published == 2 && relay.stats().dead_lettered == 2; }));
  ASSERT_OK(relay.Stop());
  const std::vector<KafkaRecord> records = ReadTopic(*broker_, "order");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].event.event_type, "Shipped");
  EXPECT_TRUE(IsUuid(records[0].event.event_id)) << records[0].event.event_id;
  EXPECT_EQ(records[0].event.aggregate_id, "m1");
  EXPECT_EQ(SeqOf(records[0].event), 1);
  EXPECT_EQ(records[0].event.headers, (Headers{{"trace", "t1"}}));
  EXPECT_EQ(records[1].event.event_id, explicit_id);
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE outbox_id IS NULL AND error LIKE "
                       "'non-transactional%'"),
            1);
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE error LIKE '%not a JSON object%'"), 1);
}

// A logical message's payload is serialized again: one nested 200 000 levels deep (400 kB of
// text) overflowed the relay's stack, after every restart. It is parked; the stream goes on.
TEST_F(CdcTest, DeeplyNestedLogicalMessageIsParked) {
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitStreaming());
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  ASSERT_OK(
      db_->Transaction({"SELECT pg_logical_emit_message(true, 'courier', "
                        R"('{"aggregate_type":"order","aggregate_id":"m1",)"
                        R"("event_type":"Deep","payload":)" +
                        deep + "}')"}));
  ASSERT_OK(db_->Transaction({InsertEventSql(NewUuidV7(), "a", 1)}));
  ASSERT_TRUE(
      WaitUntil([&] { return relay.stats().published == 1 && relay.stats().dead_lettered == 1; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE error = 'logical message nests deeper than "
                       "256 levels'"),
            1);
}

// A logical message that is not JSON is parked with its reason; `dead-letters retry` of it
// unfixed parks it again, with that reason, and publishes nothing (it once went out as an
// event with an empty key, type and value).
TEST_F(CdcTest, MalformedLogicalMessageRetriedIsParkedAgainNotPublished) {
  const std::string out = db_->dir.File("events.jsonl");
  RelayOptions o = TestRelayOptions(db_->url, "file://" + out);
  o.mode = RelayOptions::Mode::kCdc;
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitStreaming());
  ASSERT_OK(db_->Transaction({"SELECT pg_logical_emit_message(true, 'courier', 'not json')"}));
  ASSERT_OK(db_->Transaction({InsertEventSql(NewUuidV7(), "a", 1)}));
  ASSERT_TRUE(
      WaitUntil([&] { return relay.stats().published == 1 && relay.stats().dead_lettered == 1; }));
  const std::string reason = "logical message is not a JSON object: not json";
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE status = 'parked' AND error = '" + reason + "'"),
            1);

  const CommandResult retry = RunCourier({"dead-letters", "retry", "--all", "--source", db_->url});
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  EXPECT_NE(retry.out.find("queued 1 dead letter"), std::string::npos) << retry.out;
  ASSERT_TRUE(WaitUntil([&] {
    return db_->Count("courier_dead_letter WHERE status = 'parked' AND attempts = 2") == 1;
  }));
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE error LIKE '%" + reason + "%'"), 1)
      << Query1("SELECT error FROM courier_dead_letter");
  EXPECT_EQ(db_->Count("courier_dead_letter WHERE error LIKE '%outbox row 0%'"), 0)
      << "a logical message has no outbox row";
  ASSERT_OK(relay.Stop());
  std::vector<std::string> lines;
  std::stringstream text(ReadFile(out));
  for (std::string line; std::getline(text, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 1u) << ReadFile(out);
  auto event = EventFromJsonLine(lines[0]);
  ASSERT_OK(event);
  EXPECT_EQ(event->aggregate_id, "a");
  EXPECT_EQ(relay.stats().republished, 0);
}

// Rows committed before the slot existed go out first; rows committed while the slot is
// being created are neither lost nor doubled.
TEST_F(CdcTest, RowsFromBeforeTheSlotArePublishedThenTheStream) {
  std::set<std::string> ids = Commit(300, 6);
  std::atomic<bool> writing{true};
  std::set<std::string> during;
  std::thread writer([&] {
    while (writing.load()) {
      const std::set<std::string> more = Commit(10, 6);
      during.insert(more.begin(), more.end());
    }
  });
  {
    BackgroundRelay relay(Options());
    ASSERT_TRUE(WaitStreaming());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // keep writing across it
    writing = false;
    writer.join();
    ids.insert(during.begin(), during.end());
    ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(60000)));
    ASSERT_OK(relay.Stop());
  }
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), ids), 0)
      << "each row either predates the slot or follows it, never both";
  EXPECT_EQ(db_->Count("courier_outbox_cdc_backfill"), 0) << "the backfill is done";
}

// `courier migrate --mode cdc` creates the slot ahead of the relay: rows from before the
// migration are still published, once.
TEST_F(CdcTest, SlotCreatedByMigrateStillPublishesOlderRows) {
  std::set<std::string> ids = Commit(40, 4);
  CdcOptions cdc;
  cdc.enabled = true;
  ASSERT_OK(Migrate(db_->url, TableNames{}, cdc));
  ASSERT_OK(Migrate(db_->url, TableNames{}, cdc));  // idempotent
  const std::set<std::string> after = Commit(40, 4);
  ids.insert(after.begin(), after.end());
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 80; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), ids), 0);
}

// Where the relay keeps its stream position is a seam (stores/checkpoint_store.h): the CDC
// source saves it to the store it is given, and resumes where that store says, whatever the
// slot and the slot table say.
TEST_F(CdcTest, PositionIsKeptInTheCheckpointStoreItIsGiven) {
  CdcOptions cdc;
  cdc.enabled = true;
  ASSERT_OK(Migrate(db_->url, TableNames{}, cdc));  // the slot first: what follows is streamed
  struct Kept {
    std::mutex mu;
    std::optional<uint64_t> position;
    int saves = 0;
  };
  class MemoryCheckpoints final : public CheckpointStore {
   public:
    explicit MemoryCheckpoints(std::shared_ptr<Kept> kept) : kept_(std::move(kept)) {}
    Result<std::optional<uint64_t>> Load() override {
      std::lock_guard<std::mutex> lock(kept_->mu);
      return kept_->position;
    }
    Status Save(uint64_t position) override {
      std::lock_guard<std::mutex> lock(kept_->mu);
      kept_->position = position;
      ++kept_->saves;
      return Status::Ok();
    }

   private:
    std::shared_ptr<Kept> kept_;
  };
  auto kept = std::make_shared<Kept>();
  auto run_once = [&]() -> Status {
    RelayOptions o = Options();
    o.once = true;
    SourceOptions so;
    so.url = o.source_url;
    so.poll_interval = o.poll_interval;
    so.cdc.enabled = true;
    so.checkpoints = [kept](const std::string&) -> std::unique_ptr<CheckpointStore> {
      return std::make_unique<MemoryCheckpoints>(kept);
    };
    COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, MakeSource(so));
    COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Sink> sink, MakeSink(SinkOptions{o.sink_url}));
    COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Relay> relay,
                             MakeRelay(o, std::move(source), std::move(sink)));
    return relay->Run();
  };

  const std::set<std::string> first = Commit(20, 4);
  ASSERT_OK(run_once());
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), first), 0);
  {
    std::lock_guard<std::mutex> lock(kept->mu);
    EXPECT_GE(kept->saves, 1);
    ASSERT_TRUE(kept->position.has_value());
    EXPECT_GT(*kept->position, 0u);
  }
  EXPECT_EQ(Query1("SELECT count(*) FROM courier_outbox_cdc_slot WHERE checkpoint_lsn IS NOT NULL"),
            "0")
      << "the position went to the given store, not to the slot table";

  // The store says everything up to now is done: the next relay starts there, so the server
  // skips the transactions committed before it, although the slot is behind them.
  Commit(5, 1);
  auto now = pgoutput::ParseLsn(Query1("SELECT pg_current_wal_lsn()::text"));
  ASSERT_OK(now);
  {
    std::lock_guard<std::mutex> lock(kept->mu);
    kept->position = *now;
  }
  ASSERT_OK(run_once());
  EXPECT_EQ(ReadTopic(*broker_, "order").size(), first.size())
      << "nothing before the store's position is streamed";
  EXPECT_EQ(db_->Count("courier_outbox"), 5) << "so nothing of it was checkpointed either";
}

// A slot needs the transactions open at its creation to end first. The relay says so, stops
// promptly when asked meanwhile, and the waiting row is published once it commits.
TEST_F(CdcTest, SlotCreationWaitsForOpenTransactionsAndStopsOnRequest) {
  auto holder = PgConnect(db_->url);
  ASSERT_OK(holder);
  const std::string id = NewUuidV7();
  ASSERT_OK(PgRun(holder->get(), "BEGIN; " + InsertEventSql(id, "a", 1)));
  {
    BackgroundRelay relay(Options());
    ASSERT_TRUE(WaitUntil([&] {
      return Query1(
                 "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
                 " AND datname = current_database()") == "1";
    }));
    const TimePoint asked = Clock::Real().Now();
    ASSERT_OK(relay.Stop());
    EXPECT_LT(Clock::Real().Now() - asked, std::chrono::seconds(5));
  }
  ASSERT_OK(PgRun(holder->get(), "COMMIT"));
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 1; }));
  ASSERT_OK(relay.Stop());
  const std::vector<KafkaRecord> records = ReadTopic(*broker_, "order");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.event_id, id);
}

// The slot is dropped while events wait for a broker that is down: the relay recreates the
// slot and re-reads the un-acked rows from the table.
TEST_F(CdcTest, DroppedSlotIsRecreatedWithoutLosingUnackedRows) {
  std::set<std::string> ids = Commit(20, 4);
  RelayOptions o = Options();
  o.delivery_timeout = Duration(300);
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 20; }));
  const std::string created = Query1("SELECT consistent_lsn::text FROM courier_outbox_cdc_slot");
  broker_->SetDown(true);
  const std::set<std::string> pending = Commit(60, 4);
  ids.insert(pending.begin(), pending.end());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().retries > 0; }));
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)PgQuery(db_->url,
                      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                      " WHERE database = current_database() AND active");
        (void)PgQuery(db_->url,
                      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                      " WHERE database = current_database() AND NOT active");
        return Query1("SELECT consistent_lsn::text FROM courier_outbox_cdc_slot") != created;
      },
      Duration(30000)))
      << "the relay recreates its slot";
  const std::set<std::string> later = Commit(20, 4);
  ids.insert(later.begin(), later.end());
  broker_->SetDown(false);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_outbox") == 0; }, Duration(60000)));
  ASSERT_TRUE(WaitStreaming());
  ASSERT_OK(relay.Stop());
  ExpectDelivered(ReadTopic(*broker_, "order"), ids);
}

// The server invalidates a slot whose relay stayed away too long (max_slot_wal_keep_size):
// the next relay recreates it and publishes the rows still waiting in the table.
TEST_F(CdcTest, InvalidatedSlotIsRecreatedAndTheTableBackfilled) {
  CdcOptions cdc;
  cdc.enabled = true;
  ASSERT_OK(Migrate(db_->url, TableNames{}, cdc));
  const std::set<std::string> ids = Commit(30, 3);  // in the slot's stream, and in the table
  ASSERT_OK(PgQuery(db_->url, "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'"));
  ASSERT_OK(PgQuery(db_->url, "SELECT pg_reload_conf()"));
  ASSERT_OK(db_->Transaction({"CREATE TABLE noise (id bigserial PRIMARY KEY, pad text)"}));
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK(
        db_->Transaction({"INSERT INTO noise (pad) SELECT repeat(md5(g::text), 32) FROM"
                          " generate_series(1, 20000) g"}));
  }
  const bool lost = WaitUntil([&] {
    (void)PgQuery(db_->url, "CHECKPOINT");
    return Query1(
               "SELECT wal_status FROM pg_replication_slots WHERE database ="
               " current_database()") == "lost";
  });
  ASSERT_OK(PgQuery(db_->url, "ALTER SYSTEM RESET max_slot_wal_keep_size"));
  ASSERT_OK(PgQuery(db_->url, "SELECT pg_reload_conf()"));
  ASSERT_TRUE(lost) << "the server did not invalidate the slot";
  CommandResult status = RunCourier({"status", "--source", db_->url});
  EXPECT_NE(status.out.find("was invalidated"), std::string::npos) << status.out;
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 30; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), ids), 0);
  EXPECT_EQ(Query1("SELECT wal_status FROM pg_replication_slots WHERE database ="
                   " current_database()"),
            "reserved");
}

// The publication is dropped while the relay is away, and rows keep coming: the slot
// predates the publication the relay recreates, so it is recreated as well, and the rows
// waiting in the table are published.
TEST_F(CdcTest, PublicationDroppedUnderTheSlotHeals) {
  std::set<std::string> ids = Commit(10, 2);
  {
    BackgroundRelay relay(Options());
    ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 10; }));
    ASSERT_OK(relay.Stop());
  }
  ASSERT_OK(PgQuery(db_->url, "DROP PUBLICATION courier_outbox"));
  const std::set<std::string> later = Commit(20, 2);
  ids.insert(later.begin(), later.end());
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 20; }));
  const std::set<std::string> streamed = Commit(5, 2);
  ids.insert(streamed.begin(), streamed.end());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 25; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), ids), 0);
}

// The publication is dropped and created again while the relay is away, with rows committed
// in between: the slot cannot decode them (the server ends the stream with undefined_object,
// told apart by its SQLSTATE), so the relay recreates the slot and publishes the rows waiting
// in the table.
TEST_F(CdcTest, PublicationRecreatedUnderTheSlotHeals) {
  std::set<std::string> ids = Commit(10, 2);
  {
    BackgroundRelay relay(Options());
    ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 10; }));
    ASSERT_OK(relay.Stop());
  }
  ASSERT_OK(PgQuery(db_->url, "DROP PUBLICATION courier_outbox"));
  const std::set<std::string> later = Commit(20, 2);
  ids.insert(later.begin(), later.end());
  ASSERT_OK(PgQuery(db_->url,
                    "CREATE PUBLICATION courier_outbox FOR TABLE courier_outbox"
                    " WITH (publish = 'insert')"));
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 20; }));
  const std::set<std::string> streamed = Commit(5, 2);
  ids.insert(streamed.begin(), streamed.end());
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 25; }));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(ExpectDelivered(ReadTopic(*broker_, "order"), ids), 0);
}

// Other tables write hundreds of MB of WAL while the outbox is idle: the relay keeps
// confirming the server's position, so the slot holds back only a bounded amount of WAL.
TEST_F(CdcTest, IdleOutboxDoesNotPinWal) {
  BackgroundRelay relay(Options());
  ASSERT_TRUE(WaitStreaming());
  ASSERT_OK(db_->Transaction({"CREATE TABLE noise (id bigserial PRIMARY KEY, pad text)"}));
  const std::string start = Query1("SELECT pg_current_wal_lsn()::text");
  for (int i = 0; i < 12; ++i) {
    ASSERT_OK(
        db_->Transaction({"INSERT INTO noise (pad) SELECT repeat(md5(g::text), 32) FROM"
                          " generate_series(1, 20000) g"}));
  }
  const int64_t written =
      std::stoll(Query1("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '" + start + "')::bigint"));
  ASSERT_GE(written, 200LL << 20) << "the test writes at least 200 MB of WAL";
  // restart_lsn moves when the server logs running transactions (every checkpoint).
  constexpr int64_t kBound = 64LL << 20;
  int64_t retained = -1;
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)PgQuery(db_->url, "CHECKPOINT");
        retained = std::stoll(
            Query1("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM"
                   " pg_replication_slots WHERE database = current_database()"));
        return retained < kBound;
      },
      Duration(60000)))
      << "slot retains " << retained << " bytes of WAL after " << written << " written";
  EXPECT_EQ(relay.stats().published, 0);
}

// The stream reads ahead only up to its bound while nobody takes its messages (TCP holds the
// server back), and reads on as they are taken.
TEST_F(CdcTest, StreamQueueIsBoundedInBytes) {
  ASSERT_OK(db_->Transaction({"CREATE PUBLICATION bound_pub FOR TABLE courier_outbox"}));
  ASSERT_OK(
      db_->Transaction({"SELECT pg_create_logical_replication_slot('bound_slot', 'pgoutput')"}));
  constexpr int kRows = 2000;  // ~2 MB of inserts, 1 KB payloads
  for (int t = 0; t < 4; ++t) {
    ASSERT_OK(db_->Transaction(
        {"INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload) SELECT"
         " 'order', 'agg-' || (g % 10), 'Bulk', json_build_object('seq', g, 'pad',"
         " repeat(md5(g::text), 30)) FROM generate_series(1, " +
         std::to_string(kRows / 4) + ") g"}));
  }
  constexpr size_t kBound = size_t{64} << 10;
  cdc::ReplicationStream stream(Duration(1000), kBound);
  ASSERT_OK(stream.Start(db_->url, "bound_slot", "bound_pub", 0));
  ASSERT_TRUE(WaitUntil([&] { return stream.queued_bytes() >= kBound; }, Duration(60000)));
  // A message is ~1.1 KB: the reader may pass the bound by the one it read last.
  const TimePoint until = Clock::Real().Now() + Duration(500);
  while (Clock::Real().Now() < until) {
    ASSERT_LT(stream.queued_bytes(), kBound + 4096) << "the stream read past its bound";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  int inserts = 0;
  std::string buf;
  ASSERT_TRUE(WaitUntil(
      [&] {
        while (true) {
          Result<bool> got = stream.Next(&buf);
          EXPECT_OK(got);
          if (!got.ok() || !*got) break;
          EXPECT_LT(stream.queued_bytes(), kBound + 4096);
          auto copy = pgoutput::ParseCopyMessage(buf);
          if (!copy.ok() || copy->kind != pgoutput::CopyMessage::Kind::kXLogData) continue;
          auto m = pgoutput::ParseMessage(copy->data.payload);
          if (m.ok() && m->kind == pgoutput::Message::Kind::kInsert) ++inserts;
        }
        if (inserts < kRows) stream.WaitReadable(Duration(50));
        return inserts >= kRows;
      },
      Duration(60000)))
      << inserts << " inserts of " << kRows << " read";
  stream.Close();
}

// While the relay thread is held between a publish and its checkpoint, the stream reads on:
// the walsender decodes what was committed meanwhile (far more than the sockets' buffers
// hold) instead of waiting for the relay to ask, and it is all published once the relay
// goes on.
TEST_F(CdcTest, StreamIsReadWhileTheRelayIsBusy) {
  class HoldAfterPublish : public FaultPoints {
   public:
    void Reached(std::string_view name) override {
      if (name != "relay-after-publish") return;
      std::unique_lock<std::mutex> lock(mu_);
      if (!armed_) return;
      held_ = true;
      cv_.wait(lock, [&] { return !armed_; });
    }
    void Arm() {
      std::lock_guard<std::mutex> lock(mu_);
      armed_ = true;
    }
    void Release() {
      std::lock_guard<std::mutex> lock(mu_);
      armed_ = false;
      cv_.notify_all();
    }
    bool held() {
      std::lock_guard<std::mutex> lock(mu_);
      return held_;
    }

   private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool armed_ = false;
    bool held_ = false;
  };
  HoldAfterPublish hold;
  const std::string out = db_->dir.File("events.jsonl");
  RelayOptions o = Options();
  o.sink_url = "file://" + out;
  o.fault_points = &hold;
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitStreaming());
  hold.Arm();
  Commit(1, 1);
  ASSERT_TRUE(WaitUntil([&] { return hold.held(); }, Duration(60000)));
  // ~12 MB of events (1 KB payloads) while the relay is held.
  constexpr int kTransactions = 12;
  constexpr int kPerTransaction = 1000;
  for (int t = 0; t < kTransactions; ++t) {
    ASSERT_OK(db_->Transaction(
        {"INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload) SELECT"
         " 'order', 'agg-' || (g % 10), 'Bulk', json_build_object('seq', g, 'pad',"
         " repeat(md5(g::text), 30)) FROM generate_series(1, " +
         std::to_string(kPerTransaction) + ") g"}));
  }
  const std::string written = Query1("SELECT pg_current_wal_insert_lsn()::text");
  // A commit after them (of a table not published), so the walsender has a record to read
  // past `written`.
  ASSERT_OK(db_->Transaction({"CREATE TABLE after_bulk (id int)"}));
  std::string sent;
  EXPECT_TRUE(WaitUntil(
      [&] {
        sent = Query1(
            "SELECT coalesce(max(r.sent_lsn)::text, '0/0') FROM pg_stat_replication r JOIN"
            " pg_replication_slots s ON s.active_pid = r.pid WHERE s.database ="
            " current_database()");
        return Query1("SELECT '" + sent + "'::pg_lsn >= '" + written + "'::pg_lsn") == "t";
      },
      Duration(60000)))
      << "the walsender sent up to " << sent << " of " << written << " while the relay was held";
  auto lines = [&] {
    std::ifstream in(out);
    return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
  };
  EXPECT_EQ(lines(), 1) << "the relay was held all along";
  hold.Release();
  constexpr int kEvents = 1 + kTransactions * kPerTransaction;
  ASSERT_TRUE(WaitUntil([&] { return lines() >= kEvents; }, Duration(120000)));
  ASSERT_OK(relay.Stop());
  EXPECT_EQ(lines(), kEvents);
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
}

// One transaction of 100k events, streamed through a relay process whose peak memory stays
// far below the transaction's size.
TEST_F(CdcTest, HugeTransactionIsStreamedInBoundedMemory) {
  constexpr int kEvents = 100000;
  const std::string out = db_->dir.File("events.jsonl");
  auto relay = SpawnCourier({"relay", "--mode", "cdc", "--source", db_->url, "--sink",
                             "file://" + out, "--poll-interval", "20ms"},
                            db_->dir.File("relay.log"));
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitStreaming());
  // ~1 KB payload each: 100 MB if the relay held the transaction.
  ASSERT_OK(db_->Transaction(
      {"INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload) SELECT"
       " 'order', 'agg-' || (g % 100), 'Bulk', json_build_object('seq', g, 'pad',"
       " repeat(md5(g::text), 30)) FROM generate_series(1, " +
       std::to_string(kEvents) + ") g"}));
  auto lines = [&] {
    std::ifstream in(out);
    return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
  };
  ASSERT_TRUE(WaitUntil([&] { return lines() >= kEvents; }, Duration(300000)))
      << ReadFile(db_->dir.File("relay.log"));
  std::ifstream status("/proc/" + std::to_string(relay->pid()) + "/status");
  int64_t peak_kb = -1;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) peak_kb = std::stoll(line.substr(6));
  }
  ::kill(relay->pid(), SIGTERM);
  ASSERT_EQ(relay->Wait(Duration(30000)), 0);
  EXPECT_GT(peak_kb, 0);
  std::printf("[memory] relay peak RSS %lld kB for one transaction of %d events (~100 MB)\n",
              static_cast<long long>(peak_kb), kEvents);
#if !defined(__SANITIZE_ADDRESS__)
  // (AddressSanitizer's shadow memory and quarantine of freed blocks make RSS meaningless.)
  EXPECT_LT(peak_kb, 64 * 1024) << "peak RSS of the relay, in kB";
#endif
  EXPECT_EQ(lines(), kEvents);
  EXPECT_EQ(db_->Count("courier_outbox"), 0);
}

// An outbox made by hand: columns in another order, bytea payload, jsonb headers. A payload
// large enough to be TOASTed out of line arrives byte for byte.
TEST_F(CdcTest, ToastedByteaPayloadInAnyColumnOrder) {
  ASSERT_OK(db_->Transaction(
      {"CREATE TABLE app_outbox (payload bytea, headers jsonb, created_at timestamptz NOT NULL"
       " DEFAULT now(), aggregate_id text NOT NULL, id bigserial PRIMARY KEY, event_type text"
       " NOT NULL, event_id uuid NOT NULL DEFAULT gen_random_uuid(), aggregate_type text NOT"
       " NULL, published_at timestamptz)"}));
  TableNames tables{"app_outbox", "app_dead_letter"};
  ASSERT_OK(Migrate(db_->url, tables));
  RelayOptions o = Options();
  o.outbox_table = tables.outbox;
  o.dead_letter_table = tables.dead_letter;
  o.sink_url = "file://" + db_->dir.File("events.jsonl");
  BackgroundRelay relay(o);
  ASSERT_TRUE(WaitStreaming());
  std::mt19937 rng(7);
  std::string payload(700 * 1024, '\0');
  for (char& c : payload) c = static_cast<char>(rng());
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : payload) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  ASSERT_OK(db_->Transaction(
      {"INSERT INTO app_outbox (aggregate_type, aggregate_id, event_type, payload, headers)"
       " VALUES ('file', 'f1', 'Uploaded', '\\x" +
       hex + "', '{\"k\": \"v\"}')"}));
  ASSERT_TRUE(WaitUntil([&] { return relay.stats().published == 1; }));
  ASSERT_OK(relay.Stop());
  auto e = EventFromJsonLine(ReadFile(db_->dir.File("events.jsonl")));
  ASSERT_OK(e);
  EXPECT_EQ(e->aggregate_id, "f1");
  EXPECT_EQ(e->event_type, "Uploaded");
  EXPECT_EQ(e->headers, (Headers{{"k", "v"}}));
  EXPECT_TRUE(e->payload == payload) << "payload of " << e->payload.size() << " bytes differs";
  EXPECT_EQ(db_->Count("app_outbox"), 0);
}

// A logical message whose bytes are not UTF-8 (any role may emit one), in a UTF-8 database:
// parked with a reason the dead-letter table can hold, and the stream goes on. The reason
// quoted the raw bytes, the dead letter's insert failed, and the relay stopped there on every
// restart, publishing the events before it again each time.
TEST(CdcUtf8, LogicalMessageOfBytesThatAreNotUtf8IsParkedAndTheStreamGoesOn) {
  const std::string name = "utf8_" + std::to_string(::getpid());
  ASSERT_OK(PgQuery(SharedPostgres().Url("postgres"),
                    "CREATE DATABASE " + name +
                        " ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"));
  TestDb db;
  db.url = SharedPostgres().Url(name);
  ASSERT_OK(Migrate(db.url, TableNames{}));
  const std::string out = db.dir.File("events.jsonl");
  const std::vector<std::string> relay = {"relay",         "--source", db.url, "--sink",
                                          "file://" + out, "--mode",   "cdc",  "--once"};
  ASSERT_EQ(RunCourier(relay).exit_code, 0);  // the slot, before the message
  ASSERT_OK(db.Transaction({"SELECT pg_logical_emit_message(true, 'courier', '\\xff00c3'::bytea)",
                            InsertEventSql(NewUuidV7(), "a", 1)}));
  for (int run = 0; run < 2; ++run) {
    const CommandResult r = RunCourier(relay);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'parked' AND error = 'logical message "
                     "is not a JSON object: \uFFFD\uFFFD\uFFFD'"),
            1)
      << [&] {
           auto rows = PgQuery(db.url, "SELECT error FROM courier_dead_letter");
           return rows.ok() && !rows->empty() ? rows->front() : std::string("no dead letter");
         }();
  const std::string text = ReadFile(out);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
}

// A malformed outbox row read from the write-ahead log is parked as committed, as polling
// parks it: its dead letter kept NULL headers for '[]' and the commit time for 'infinity', so
// `dead-letters retry` of it unfixed published those made-up values. Now the retry is
// refused again and nothing is published.
TEST(CdcDeadLetters, MalformedRowIsParkedAsCommittedAndARetryOfItUnfixedIsRefused) {
  TestDb db = TestDb::Make(true);
  const std::string out = db.dir.File("events.jsonl");
  const std::vector<std::string> relay = {"relay",         "--source", db.url, "--sink",
                                          "file://" + out, "--mode",   "cdc",  "--once"};
  ASSERT_EQ(RunCourier(relay).exit_code, 0);  // the slot, before the rows
  ASSERT_OK(db.Transaction(
      {"INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload,"
       " headers) VALUES (gen_random_uuid(), 'order', 'h', 'Happened', '{}', '[]')",
       "INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload,"
       " created_at) VALUES (gen_random_uuid(), 'order', 't', 'Happened', '{}', 'infinity')"}));
  CommandResult r = RunCourier(relay);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(db.Count("courier_dead_letter WHERE aggregate_id = 'h' AND headers::text = '[]'"), 1);
  EXPECT_EQ(db.Count("courier_dead_letter WHERE aggregate_id = 't' AND created_at = 'infinity'"),
            1);
  const CommandResult retry = RunCourier({"dead-letters", "retry", "--all", "--source", db.url});
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  r = RunCourier(relay);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'parked' AND attempts = 2"), 2) << r.err;
  EXPECT_EQ(ReadFile(out), "") << "published with made-up values";
}

}  // namespace
}  // namespace courier::test
