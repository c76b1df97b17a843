// G9: outboxes sharing one dead-letter table never touch each other's dead letters: a parked
// event of one outbox holds back only its own outbox's events, and `courier dead-letters`
// lists, retries and drops only the dead letters of the outbox named by --table.
#include "stores/dead_letters.h"

#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

enum class SourceKind { kPostgresPoll, kPostgresCdc, kSqlite };

// Two outboxes, a_outbox and b_outbox, in one database, sharing courier_dead_letter; each
// relayed to its own topic by a sink that refuses events over 20 kB.
class SharedDeadLetterTest : public ::testing::TestWithParam<SourceKind> {
 protected:
  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    db_ = std::make_unique<TestDb>(TestDb::Make(GetParam() != SourceKind::kSqlite));
    for (const char* outbox : {"a_outbox", "b_outbox"}) {
      TableNames tables;
      tables.outbox = outbox;
      ASSERT_OK(Migrate(db_->url, tables));
    }
  }

  RelayOptions Options(const std::string& outbox, const std::string& topic) const {
    RelayOptions o = TestRelayOptions(
        db_->url, "kafka://" + broker_->bootstrap() + "/" + topic + "?message.max.bytes=20000");
    o.outbox_table = outbox;
    if (GetParam() == SourceKind::kPostgresCdc) o.mode = RelayOptions::Mode::kCdc;
    o.once = true;
    return o;
  }

  static Status RunOnce(const RelayOptions& o) {
    auto relay = Relay::Create(o);
    if (!relay.ok()) return relay.status();
    return (*relay)->Run();
  }

  // Commits one event of ('order', aggregate) to `outbox`; `big` makes it 50 kB. Returns its id.
  std::string Insert(const std::string& outbox, const std::string& aggregate, bool big = false) {
    const std::string id = NewUuidV7();
    const int64_t seq = next_seq_++;
    const std::string payload = "{\"seq\":" + std::to_string(seq) +
                                (big ? ",\"blob\":\"" + std::string(50000, 'x') + "\"" : "") + "}";
    EXPECT_OK(db_->Transaction(
        {"INSERT INTO " + outbox +
         " (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ('" + id +
         "', 'order', '" + aggregate + "', 'Happened', '" + payload + "')"}));
    return id;
  }

  // The event ids of `aggregate` on `topic`, in the order they arrived (aggregates are keys:
  // each is in order in its partition).
  std::vector<std::string> Topic(const std::string& topic, const std::string& aggregate) const {
    std::vector<std::string> ids;
    for (const KafkaRecord& r : ReadTopic(*broker_, topic)) {
      if (r.event.aggregate_id == aggregate) ids.push_back(r.event.event_id);
    }
    return ids;
  }
  size_t TopicSize(const std::string& topic) const { return ReadTopic(*broker_, topic).size(); }

  int64_t DeadLetters(const std::string& where) const {
    return db_->Count("courier_dead_letter WHERE " + where);
  }

  std::unique_ptr<DevBroker> broker_;
  std::unique_ptr<TestDb> db_;
  int64_t next_seq_ = 1;
};

TEST_P(SharedDeadLetterTest, DeadLettersHoldRetryAndListOnlyTheirOwnOutbox) {
  // The same aggregate, order/agg-0, in both outboxes; a's first event is refused.
  const std::string a1 = Insert("a_outbox", "agg-0", /*big=*/true);
  const std::string a2 = Insert("a_outbox", "agg-0");
  const std::string b1 = Insert("b_outbox", "agg-0");
  const std::string b2 = Insert("b_outbox", "agg-0");
  const std::string b_big = Insert("b_outbox", "agg-1", /*big=*/true);
  const std::string b3 = Insert("b_outbox", "agg-1");

  ASSERT_OK(RunOnce(Options("a_outbox", "a")));
  EXPECT_EQ(DeadLetters("outbox = 'a_outbox' AND status = 'parked' AND event_id = '" + a1 + "'"),
            1);
  EXPECT_EQ(DeadLetters("outbox = 'a_outbox' AND status = 'held' AND event_id = '" + a2 + "'"), 1);

  // a's parked agg-0 does not hold back b's agg-0.
  ASSERT_OK(RunOnce(Options("b_outbox", "b")));
  EXPECT_EQ(Topic("b", "agg-0"), (std::vector<std::string>{b1, b2}))
      << "b's agg-0 flows while a's agg-0 is parked";
  EXPECT_EQ(TopicSize("b"), 2u);
  EXPECT_EQ(DeadLetters("outbox = 'b_outbox' AND status = 'parked' AND event_id = '" + b_big + "'"),
            1);
  EXPECT_EQ(DeadLetters("outbox = 'b_outbox' AND status = 'held' AND event_id = '" + b3 + "'"), 1);
  EXPECT_EQ(DeadLetters("outbox = 'b_outbox' AND aggregate_id = 'agg-0'"), 0);

  // list shows only the outbox's own, and says which outbox.
  CommandResult list =
      RunCourier({"dead-letters", "list", "--source", db_->url, "--table", "b_outbox"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("dead letters of outbox b_outbox (table courier_dead_letter)"),
            std::string::npos)
      << list.out;
  EXPECT_NE(list.out.find(b_big), std::string::npos) << list.out;
  EXPECT_NE(list.out.find(b3), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find(a1), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find(a2), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("2 shown (1 held, 1 parked)"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("retry ID... (or drop ID... to give up on them) --table b_outbox"),
            std::string::npos)
      << list.out;
  CommandResult list_default = RunCourier({"dead-letters", "list", "--source", db_->url});
  EXPECT_NE(list_default.out.find("no dead letters of outbox courier_outbox in "
                                  "courier_dead_letter"),
            std::string::npos)
      << list_default.out;

  // Both causes fixed; retry --all on a republishes only a's, through a's relay and sink.
  ASSERT_OK(
      db_->Transaction({"UPDATE courier_dead_letter SET payload = '{\"seq\":0}' WHERE"
                        " status = 'parked'"}));
  CommandResult retry =
      RunCourier({"dead-letters", "retry", "--all", "--source", db_->url, "--table", "a_outbox"});
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  EXPECT_NE(retry.out.find("queued 1 dead letter(s) of outbox a_outbox for retry"),
            std::string::npos)
      << retry.out;
  ASSERT_OK(RunOnce(Options("a_outbox", "a")));
  EXPECT_EQ(Topic("a", "agg-0"), (std::vector<std::string>{a1, a2}));
  EXPECT_EQ(TopicSize("a"), 2u) << "nothing of b's went out through a's sink";
  EXPECT_EQ(DeadLetters("outbox = 'a_outbox'"), 0);
  EXPECT_EQ(DeadLetters("status = 'parked' AND attempts = 1 AND event_id = '" + b_big + "'"), 1)
      << "b's parked event was neither queued nor published by a's relay";
  EXPECT_EQ(DeadLetters("status = 'held' AND event_id = '" + b3 + "'"), 1);

  // drop --all on a touches nothing of b's.
  CommandResult drop =
      RunCourier({"dead-letters", "drop", "--all", "--source", db_->url, "--table", "a_outbox"});
  ASSERT_EQ(drop.exit_code, 0) << drop.err;
  EXPECT_NE(drop.out.find("dropped 0 dead letter(s) of outbox a_outbox"), std::string::npos)
      << drop.out;
  EXPECT_EQ(DeadLetters("outbox = 'b_outbox'"), 2);

  // b's own retry sends b's, through b's relay.
  ASSERT_EQ(
      RunCourier({"dead-letters", "retry", "--all", "--source", db_->url, "--table", "b_outbox"})
          .exit_code,
      0);
  ASSERT_OK(RunOnce(Options("b_outbox", "b")));
  EXPECT_EQ(Topic("b", "agg-0"), (std::vector<std::string>{b1, b2}));
  EXPECT_EQ(Topic("b", "agg-1"), (std::vector<std::string>{b_big, b3}));
  EXPECT_EQ(TopicSize("b"), 4u);
  EXPECT_EQ(TopicSize("a"), 2u);
  EXPECT_EQ(DeadLetters("1 = 1"), 0);
}

// Dead letters of versions without the outbox column are attributed to the first outbox
// migrated after the upgrade; until then a relay and `courier dead-letters` ask to migrate.
void OlderDeadLettersGoToTheFirstOutboxMigrated(bool postgres) {
  TestDb db = TestDb::Make(postgres);
  ASSERT_OK(db.Transaction(
      {"DROP INDEX courier_dead_letter_outbox_aggregate",
       "ALTER TABLE courier_dead_letter DROP COLUMN outbox",
       "INSERT INTO courier_dead_letter (outbox_id, event_id, aggregate_type, aggregate_id,"
       " event_type, payload, created_at, error, sink) VALUES (7, '" +
           NewUuidV7() +
           "', 'order', 'agg-0', 'Happened', '{}', '2026-01-01T00:00:00Z', 'too large',"
           " 'kafka://x/t')"}));
  TableNames a;
  a.outbox = "a_outbox";
  TableNames b;
  b.outbox = "b_outbox";
  auto before = DeadLetterStore::Open(db.url, a);
  EXPECT_EQ(before.status().code(), StatusCode::kNotFound);
  EXPECT_NE(before.status().message().find("predates per-outbox dead letters; upgrade it with: "
                                           "courier migrate"),
            std::string::npos)
      << before.status().message();

  ASSERT_OK(Migrate(db.url, a));
  ASSERT_OK(Migrate(db.url, b));
  ASSERT_OK(Migrate(db.url, a));
  EXPECT_EQ(db.Count("courier_dead_letter WHERE outbox = 'a_outbox'"), 1);
  auto store_a = DeadLetterStore::Open(db.url, a);
  ASSERT_OK(store_a);
  auto rows_a = (*store_a)->List(10);
  ASSERT_OK(rows_a);
  EXPECT_EQ(rows_a->size(), 1u);
  auto store_b = DeadLetterStore::Open(db.url, b);
  ASSERT_OK(store_b);
  auto rows_b = (*store_b)->List(10);
  ASSERT_OK(rows_b);
  EXPECT_TRUE(rows_b->empty());
}

TEST(SharedDeadLetter, MigrateAttributesOlderDeadLettersToTheFirstOutboxPostgres) {
  OlderDeadLettersGoToTheFirstOutboxMigrated(true);
}

TEST(SharedDeadLetter, MigrateAttributesOlderDeadLettersToTheFirstOutboxSqlite) {
  OlderDeadLettersGoToTheFirstOutboxMigrated(false);
}

INSTANTIATE_TEST_SUITE_P(Sources, SharedDeadLetterTest,
                         ::testing::Values(SourceKind::kPostgresPoll, SourceKind::kPostgresCdc,
                                           SourceKind::kSqlite),
                         [](const auto& info) {
                           switch (info.param) {
                             case SourceKind::kPostgresPoll:
                               return std::string("PostgresPoll");
                             case SourceKind::kPostgresCdc:
                               return std::string("PostgresCdc");
                             case SourceKind::kSqlite:
                               return std::string("Sqlite");
                           }
                           return std::string();
                         });

}  // namespace
}  // namespace courier::test
