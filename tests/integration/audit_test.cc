// `courier audit` against real databases and sinks: a JSONL file with lines removed and a
// foreign one added, Kafka topics and Redis streams after relay runs (outbox and event store),
// planted duplicates and order violations, a Redis cache of captured tables with keys tampered
// with, --repair, --every's /metrics, and bad input.
#include <signal.h>

#include <hiredis/hiredis.h>

#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "courier/event_store.h"
#include "support/fixtures.h"
#include "support/projection.h"  // HttpGet

namespace courier::test {
namespace {

using Json = nlohmann::json;

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream in(ReadFile(path));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& l : lines) text += l + "\n";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}

std::string EventIdOf(const std::string& line) {
  return Json::parse(line)["event_id"].get<std::string>();
}

std::set<std::string> SetOf(const Json& list) {
  std::set<std::string> out;
  for (const Json& id : list) out.insert(id.get<std::string>());
  return out;
}

// `courier audit ARGS --json`: its exit code and the object it printed.
struct Audited {
  int exit_code = -1;
  Json result;
  std::string err;
};

Audited Audit(std::vector<std::string> args) {
  args.insert(args.begin(), "audit");
  args.push_back("--json");
  const CommandResult run = RunCourier(args, Duration(120000));
  Audited a{run.exit_code, Json(), run.err};
  if (!run.out.empty()) a.result = Json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  return a;
}

// The keys the issue names, each a list.
void ExpectLists(const Json& j) {
  for (const char* key : {"lost", "ghosts", "stale", "duplicates", "order_violations"}) {
    ASSERT_TRUE(j.contains(key) && j[key].is_array()) << key << " in " << j.dump();
  }
}

// A foreign event: well formed, never in the outbox (a naive publisher's, a replayed file).
std::string ForeignLine(std::string* id) {
  Event e = MakeEvents(1, "agg-1").front();
  e.created_at_us = UnixMicrosNow();
  *id = e.event_id;
  return EventToJsonLine(e);
}

TEST(AuditFile, ReportsExactlyTheRemovedLinesAsLostAndTheForeignOneAsAGhost) {
  Outbox outbox;
  outbox.Commit(30, 3);
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  CommandResult relay =
      RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;

  Audited clean = Audit({"--source", outbox.db.url, "--sink", sink});
  ASSERT_EQ(clean.exit_code, 0) << clean.err << clean.result.dump();
  ExpectLists(clean.result);
  EXPECT_EQ(clean.result["published"], 30);
  EXPECT_EQ(clean.result["delivered"], 30);

  // Lines 6 and 18 (of aggregates agg-2 and agg-2, events with later ones after them) go;
  // a line the outbox never had comes.
  std::vector<std::string> lines = Lines(dir.File("events.jsonl"));
  ASSERT_EQ(lines.size(), 30u);
  const std::vector<std::string> original = lines;
  const std::set<std::string> removed = {EventIdOf(lines[5]), EventIdOf(lines[17])};
  lines.erase(lines.begin() + 17);
  lines.erase(lines.begin() + 5);
  std::string foreign;
  lines.insert(lines.begin() + 10, ForeignLine(&foreign));
  WriteLines(dir.File("events.jsonl"), lines);

  Audited tampered = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(tampered.exit_code, 1) << tampered.err;
  ExpectLists(tampered.result);
  EXPECT_EQ(SetOf(tampered.result["lost"]), removed);
  EXPECT_EQ(SetOf(tampered.result["ghosts"]), std::set<std::string>{foreign});
  EXPECT_EQ(tampered.result["duplicates"], Json::array());
  EXPECT_EQ(tampered.result["order_violations"], Json::array());
  EXPECT_EQ(tampered.result["stale"], Json::array());

  // The repair appends the two lost events, each once, with its original envelope; the ghost
  // stays (a file is a log: nothing is deleted), and each repaired event now comes after newer
  // events of its aggregate: that is what the second audit reports, and nothing else.
  Audited repaired = Audit({"--source", outbox.db.url, "--sink", sink, "--repair"});
  EXPECT_EQ(repaired.exit_code, 1) << repaired.err;
  ExpectLists(repaired.result);
  EXPECT_EQ(SetOf(repaired.result["repaired"]), removed);
  EXPECT_EQ(SetOf(repaired.result["before_repair"]["lost"]), removed);
  EXPECT_EQ(repaired.result["lost"], Json::array());
  EXPECT_EQ(SetOf(repaired.result["ghosts"]), std::set<std::string>{foreign});
  EXPECT_EQ(repaired.result["duplicates"], Json::array());
  EXPECT_EQ(SetOf(repaired.result["order_violations"]), removed);
  const std::vector<std::string> after = Lines(dir.File("events.jsonl"));
  ASSERT_EQ(after.size(), 31u);
  std::set<std::string> appended = {EventIdOf(after[29]), EventIdOf(after[30])};
  EXPECT_EQ(appended, removed);
  // The original lines, byte for byte: same event_id, envelope, payload and created_at.
  for (const std::string& line : {after[29], after[30]}) {
    EXPECT_NE(std::find(original.begin(), original.end(), line), original.end()) << line;
  }
}

// Lines that are no event (blank, without an event_id, an empty one) are each a ghost named by
// its line; blank lines at the end of the file (an editor's last newline) are nothing.
TEST(AuditFile, LinesWithoutAnEventIdAreGhostsAtTheirLineAndATrailingBlankLineIsNothing) {
  Outbox outbox;
  outbox.Commit(10, 2);
  TempDir dir;
  const std::string path = dir.File("events.jsonl");
  const std::string sink = "file://" + path;
  CommandResult relay =
      RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  const std::vector<std::string> lines = Lines(path);
  ASSERT_EQ(lines.size(), 10u);

  std::vector<std::string> trailing = lines;
  trailing.push_back("");
  WriteLines(path, trailing);
  Audited clean = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(clean.exit_code, 0) << clean.err << clean.result.dump();
  EXPECT_EQ(clean.result["read"], 10);

  std::vector<std::string> odd = lines;
  odd.insert(odd.begin() + 5, R"({"aggregate_type":"order"})");
  odd.insert(odd.begin() + 4, R"({"event_id":""})");
  odd.insert(odd.begin() + 3, "");
  odd.push_back("");
  WriteLines(path, odd);
  Audited a = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(a.exit_code, 1) << a.err << a.result.dump();
  EXPECT_EQ(a.result["ghosts"], Json::array({path + ":4", path + ":6", path + ":8"}))
      << a.result.dump();
  EXPECT_EQ(a.result["duplicates"], Json::array());
  EXPECT_EQ(a.result["lost"], Json::array());
  EXPECT_EQ(a.result["read"], 13);
}

// A backup restored without its last lines: the lost events are each aggregate's newest, so
// the repair puts the file back in order and the second audit reports nothing (SQLite outbox).
TEST(AuditFile, RepairingALostTailLeavesNothingToReport) {
  TestDb db = TestDb::Make(false);
  int64_t seq = 1;
  CommitEvents(db, 12, 12, &seq);
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  CommandResult relay =
      RunCourier({"relay", "--source", db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  std::vector<std::string> lines = Lines(dir.File("events.jsonl"));
  ASSERT_EQ(lines.size(), 12u);
  const std::vector<std::string> kept(lines.begin(), lines.begin() + 8);
  std::set<std::string> cut;
  for (size_t i = 8; i < lines.size(); ++i) cut.insert(EventIdOf(lines[i]));
  WriteLines(dir.File("events.jsonl"), kept);

  Audited before = Audit({"--source", db.url, "--sink", sink});
  EXPECT_EQ(before.exit_code, 1) << before.err;
  EXPECT_EQ(SetOf(before.result["lost"]), cut);

  Audited repaired = Audit({"--source", db.url, "--sink", sink, "--repair"});
  EXPECT_EQ(repaired.exit_code, 0) << repaired.err << repaired.result.dump();
  for (const char* key : {"lost", "ghosts", "stale", "duplicates", "order_violations"}) {
    EXPECT_EQ(repaired.result[key], Json::array()) << key;
  }
  EXPECT_EQ(Lines(dir.File("events.jsonl")), lines) << "the same lines, in the same order";

  // The text form says the same, and a plain audit afterwards is clean.
  CommandResult text = RunCourier({"audit", "--source", db.url, "--sink", sink});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("lost (published, not in the sink)          0"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("\nclean\n"), std::string::npos) << text.out;
}

// Rows deleted after --retention took the record of their publication with them: their
// messages are older than the window (the oldest row, or --since) and are not judged.
TEST(AuditFile, MessagesOlderThanTheWindowAreNotGhosts) {
  Outbox outbox;
  outbox.Commit(10, 2);
  outbox.Commit(20, 2);
  ASSERT_OK(outbox.db.Transaction(
      {"UPDATE courier_outbox SET created_at = created_at - interval '1 hour' WHERE id <= 10"}));
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  CommandResult relay =
      RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  auto since = PgQuery(outbox.db.url, "SELECT (now() - interval '30 minutes')::text");
  ASSERT_OK(since);

  Audited windowed = Audit({"--source", outbox.db.url, "--sink", sink, "--since", (*since)[0]});
  EXPECT_EQ(windowed.exit_code, 0) << windowed.err << windowed.result.dump();
  EXPECT_EQ(windowed.result["published"], 20);
  EXPECT_EQ(windowed.result["before_window"], 10);

  // The cleaner's work: the hour-old rows are gone, their lines stay.
  ASSERT_OK(outbox.db.Transaction({"DELETE FROM courier_outbox WHERE id <= 10"}));
  Audited cleaned = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(cleaned.exit_code, 0) << cleaned.err << cleaned.result.dump();
  EXPECT_EQ(cleaned.result["published"], 20);
  EXPECT_EQ(cleaned.result["read"], 30);
  EXPECT_EQ(cleaned.result["before_window"], 10);
  EXPECT_EQ(cleaned.result["ghosts"], Json::array());
}

// A relay publishing while the audit runs: `write` keeps committing events and the relay
// (`relay_args`, running until the end) keeps publishing them to the file `sink`, so events
// committed after an audit read the truth are in the sink when it reads the file. They are no
// ghosts: the audit looks them up in the table and counts them in after_truth. Audits run until
// some of them saw such events (at least three runs).
void AuditWhileRelaying(const std::vector<std::string>& audit_args,
                        const std::vector<std::string>& relay_args,
                        const std::function<void()>& write, const std::string& sink_path,
                        const std::string& log) {
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop.load()) {
      write();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  // The writer stops however the test ends (an ASSERT returns early).
  struct Join {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Join() {
      stop = true;
      t.join();
    }
  } join{stop, writer};
  auto relay = SpawnCourier(relay_args, log);
  ASSERT_OK(relay);
  // The first audit needs something published.
  ASSERT_TRUE(WaitUntil([&] { return !ReadFile(sink_path).empty(); }, Duration(60000)))
      << ReadFile(log);
  int64_t late = 0;
  int runs = 0;
  const TimePoint deadline = Clock::Real().Now() + Duration(120000);
  while ((runs < 3 || late == 0) && Clock::Real().Now() < deadline) {
    Audited a = Audit(audit_args);
    ++runs;
    ASSERT_EQ(a.exit_code, 0) << a.err << a.result.dump();
    EXPECT_EQ(a.result["ghosts"], Json::array()) << a.result.dump();
    EXPECT_EQ(a.result["lost"], Json::array()) << a.result.dump();
    late += a.result["after_truth"].get<int64_t>();
  }
  relay->Signal(SIGTERM);
  EXPECT_TRUE(relay->Wait(Duration(30000)).has_value());
  EXPECT_GT(late, 0) << runs << " audits ran while the relay published: none read an event "
                     << "committed after its truth; " << ReadFile(log);
}

TEST(AuditWhileRelaying, EventsCommittedAfterTheTruthWasReadAreNoGhosts) {
  Outbox outbox;
  outbox.Commit(200, 10);
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  AuditWhileRelaying(
      {"--source", outbox.db.url, "--sink", sink},
      {"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--poll-interval", "10ms"},
      [&] { outbox.Commit(5, 10); }, dir.File("events.jsonl"), dir.File("relay.log"));
}

TEST(AuditWhileRelaying, EventStoreEventsAppendedAfterTheTruthWasReadAreNoGhosts) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  ASSERT_OK(Migrate(*url, EventStoreTables()));
  auto conn = PgConnect(*url);
  ASSERT_OK(conn);
  EventStore store;
  int n = 0;
  auto append = [&] {
    ASSERT_OK(PgRun(conn->get(), "BEGIN"));
    ASSERT_OK(store.Append(conn->get(), "account", "acct-" + std::to_string(n++ % 7), kAny,
                           {NewEvent{.event_type = "FundsDeposited", .payload = "{}"}}));
    ASSERT_OK(PgRun(conn->get(), "COMMIT"));
  };
  for (int i = 0; i < 50; ++i) append();
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  AuditWhileRelaying(
      {"--event-store", "--source", *url, "--sink", sink},
      {"relay", "--event-store", "--source", *url, "--sink", sink, "--poll-interval", "10ms"},
      append, dir.File("events.jsonl"), dir.File("relay.log"));
}

TEST(AuditKafka, AfterARelayRunEveryTopicHoldsEveryEventOnce) {
  Outbox outbox;
  outbox.Commit(40, 5, "order");
  outbox.Commit(20, 4, "payment");
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  CommandResult relay =
      RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  // One not published yet: neither lost nor a ghost.
  ASSERT_OK(outbox.db.Transaction({InsertEventSql(NewUuidV7(), "agg-0", 999)}));

  Audited a = Audit({"--source", outbox.db.url, "--sink", sink});
  ASSERT_EQ(a.exit_code, 0) << a.err << a.result.dump();
  ExpectLists(a.result);
  for (const char* key : {"lost", "ghosts", "stale", "duplicates", "order_violations"}) {
    EXPECT_EQ(a.result[key], Json::array()) << key;
  }
  EXPECT_EQ(a.result["published"], 60);
  EXPECT_EQ(a.result["pending"], 1);
  EXPECT_EQ(a.result["read"], 60);
  EXPECT_EQ(a.result["read_from"].size(), 2u) << a.result.dump();
}

TEST(AuditKafka, FindsPlantedDuplicatesAndOrderViolations) {
  Outbox outbox;
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("order", 1));
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  // Four events of one order, published by hand: the third before the second, and the fourth
  // twice; then stamped published as a relay would.
  std::vector<Event> events = MakeEvents(4, "o-7");
  for (Event& e : events) e.created_at_us = 0;  // the broker's time: after the rows'
  std::vector<std::string> inserts;
  for (const Event& e : events) inserts.push_back(InsertEventSql(e.event_id, "o-7", SeqOf(e)));
  ASSERT_OK(outbox.db.Transaction(inserts));
  ASSERT_OK(outbox.db.Transaction({"UPDATE courier_outbox SET published_at = now()"}));
  PublishEvents("kafka://" + (*broker)->bootstrap() + "/order",
                {events[0], events[2], events[1], events[3], events[3]});

  Audited a = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(a.exit_code, 1) << a.err;
  ExpectLists(a.result);
  EXPECT_EQ(a.result["lost"], Json::array());
  EXPECT_EQ(a.result["ghosts"], Json::array());
  EXPECT_EQ(a.result["duplicates"], Json::array({events[3].event_id}));
  EXPECT_EQ(a.result["order_violations"], Json::array({events[1].event_id}));

  // Duplicates alone do not fail the audit: delivery is at least once.
  Outbox other;
  std::vector<Event> twice = MakeEvents(1, "o-8");
  twice[0].created_at_us = 0;
  ASSERT_OK(other.db.Transaction({InsertEventSql(twice[0].event_id, "o-8", 1),
                                  "UPDATE courier_outbox SET published_at = now()"}));
  PublishEvents("kafka://" + (*broker)->bootstrap() + "/other", {twice[0], twice[0]});
  Audited dup =
      Audit({"--source", other.db.url, "--sink", "kafka://" + (*broker)->bootstrap() + "/other"});
  EXPECT_EQ(dup.exit_code, 0) << dup.err << dup.result.dump();
  EXPECT_EQ(dup.result["duplicates"], Json::array({twice[0].event_id}));
}

// One aggregate's events routed to a topic per event type: Kafka orders each topic, not one
// against another, and the audit reads the topics one after the other; order is judged per
// topic and aggregate, so reading et_Paid after et_Shipped is no violation.
TEST(AuditKafka, OrderIsJudgedPerTopicWhenATemplateSpreadsAnAggregate) {
  Outbox outbox;
  const std::vector<std::string> types = {"Created", "Paid", "Shipped"};
  std::vector<std::string> inserts;
  for (int i = 0; i < 12; ++i) {
    inserts.push_back(
        "INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload)"
        " VALUES ('" +
        NewUuidV7() + "', 'order', 'o-" + std::to_string(i % 2) + "', '" + types[i % 3] +
        "', '{}')");
  }
  ASSERT_OK(outbox.db.Transaction(inserts));
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/et_{event_type}";
  CommandResult relay =
      RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;

  Audited a = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(a.exit_code, 0) << a.err << a.result.dump();
  EXPECT_EQ(a.result["read_from"].size(), 3u) << a.result.dump();
  EXPECT_EQ(a.result["delivered"], 12);
  EXPECT_EQ(a.result["order_violations"], Json::array()) << a.result.dump();
}

// Redis Streams: every stream the template routes to is read until it stays quiet; an entry
// deleted with XDEL is reported lost, by its event id.
TEST(AuditRedis, ReadsEveryStreamOfTheTemplateAndFindsADeletedEntry) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  Outbox outbox;
  outbox.Commit(20, 4, "order");
  outbox.Commit(10, 2, "payment");
  const std::string sink = (*redis)->Url("{aggregate_type}");
  CommandResult relay =
      RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;

  Audited a = Audit({"--source", outbox.db.url, "--sink", sink});
  ASSERT_EQ(a.exit_code, 0) << a.err << a.result.dump();
  EXPECT_EQ(a.result["published"], 30);
  EXPECT_EQ(a.result["read"], 30);
  EXPECT_EQ(a.result["read_from"].size(), 2u) << a.result.dump();

  auto endpoint = ParseRedisUrl((*redis)->Url("order"));
  ASSERT_OK(endpoint);
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  ASSERT_OK(conn);
  auto entries = ReadRedisStream(conn->get(), "order", "0", Duration(1));
  ASSERT_OK(entries);
  ASSERT_GE(entries->size(), 4u);
  const RedisEntry& victim = (*entries)[3];
  redisReply* reply =
      static_cast<redisReply*>(redisCommand(conn->get(), "XDEL order %s", victim.id.c_str()));
  ASSERT_NE(reply, nullptr);
  EXPECT_EQ(reply->integer, 1);
  freeReplyObject(reply);

  Audited b = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(b.exit_code, 1) << b.err;
  EXPECT_EQ(b.result["lost"], Json::array({victim.event.event_id}));
  EXPECT_EQ(b.result["ghosts"], Json::array());
  EXPECT_EQ(b.result["read"], 29);
}

// Runs one redis command; the reply's integer, or its text ("" for nil).
std::string Redis(redisContext* conn, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(conn, static_cast<int>(argv.size()), argv.data(), lens.data()));
  EXPECT_NE(reply, nullptr);
  if (reply == nullptr) return "";
  std::string out = reply->type == REDIS_REPLY_STRING    ? std::string(reply->str, reply->len)
                    : reply->type == REDIS_REPLY_INTEGER ? std::to_string(reply->integer)
                                                         : "";
  freeReplyObject(reply);
  return out;
}

// The Redis cache of captured tables: the truth is the tables. Keys tampered with (a value
// changed, one deleted, one for a row that does not exist) are found as stale, lost and ghost,
// and --repair leaves the cache equal to the rows.
TEST(AuditCache, TamperedKeysAreFoundAndRepaired) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  const TestDb db = TestDb::Make(true);
  ASSERT_OK(
      db.Transaction({"CREATE TABLE products (id int PRIMARY KEY, name text, price numeric(30, 4),"
                      " updated timestamptz)",
                      "CREATE TABLE stock (sku text, site text, n int, PRIMARY KEY (sku, site))"}));
  const CommandResult migrated =
      RunCourier({"migrate", "--source", db.url, "--capture", "products, stock"});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  ASSERT_OK(
      db.Transaction({"INSERT INTO products SELECT i, 'p' || i, i * 1.5, '2026-11-26 22:18:23.5+00'"
                      " FROM generate_series(1, 20) i",
                      "INSERT INTO stock VALUES ('a', 'eu', 1), ('a', 'us', 2), ('b', 'eu', 3)"}));
  ASSERT_OK(db.Transaction(
      {"UPDATE products SET name = 'renamed' WHERE id = 3", "DELETE FROM products WHERE id = 4"}));
  const std::string sink = "redis-cache://127.0.0.1:" + std::to_string((*redis)->port()) + "/c";
  const CommandResult relay = RunCourier({"relay", "--source", db.url, "--mode", "cdc", "--capture",
                                          "products, stock", "--sink", sink, "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;

  Audited clean = Audit({"--source", db.url, "--sink", sink, "--capture", "products, stock"});
  ASSERT_EQ(clean.exit_code, 0) << clean.err << clean.result.dump();
  EXPECT_EQ(clean.result["published"], 22);
  EXPECT_EQ(clean.result["read"], 22);

  auto endpoint = ParseRedisUrl((*redis)->Url());
  ASSERT_OK(endpoint);
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  ASSERT_OK(conn);
  EXPECT_EQ(Redis(conn->get(), {"SET", "c:products:5", R"({"id":5,"name":"tampered"})"}), "");
  EXPECT_EQ(Redis(conn->get(), {"DEL", "c:stock:[\"a\",\"us\"]"}), "1");
  EXPECT_EQ(Redis(conn->get(), {"SET", "c:products:99", R"({"id":99})"}), "");

  Audited tampered = Audit({"--source", db.url, "--sink", sink, "--capture", "products, stock"});
  EXPECT_EQ(tampered.exit_code, 1) << tampered.err;
  EXPECT_EQ(tampered.result["stale"], Json::array({"c:products:5"}));
  EXPECT_EQ(tampered.result["lost"], Json::array({"c:stock:[\"a\",\"us\"]"}));
  EXPECT_EQ(tampered.result["ghosts"], Json::array({"c:products:99"}));

  Audited repaired =
      Audit({"--source", db.url, "--sink", sink, "--capture", "products, stock", "--repair"});
  EXPECT_EQ(repaired.exit_code, 0) << repaired.err << repaired.result.dump();
  for (const char* key : {"lost", "ghosts", "stale", "duplicates", "order_violations"}) {
    EXPECT_EQ(repaired.result[key], Json::array()) << key;
  }
  EXPECT_EQ(Redis(conn->get(), {"EXISTS", "c:products:99"}), "0");
  auto row = PgQuery(db.url, "SELECT to_jsonb(p)::text FROM products p WHERE id = 5");
  ASSERT_OK(row);
  EXPECT_EQ(Json::parse(Redis(conn->get(), {"GET", "c:products:5"})), Json::parse((*row)[0]));

  const CommandResult nocapture = RunCourier({"audit", "--source", db.url, "--sink", sink});
  EXPECT_EQ(nocapture.exit_code, 2);
  EXPECT_EQ(nocapture.err,
            "courier: error: a redis-cache sink is audited against the tables it mirrors: "
            "--capture 'public.products' (as given to the relay)\n");
}

TEST(AuditEventStore, AfterRelayEventStoreTheTopicHoldsEveryEventInVersionOrder) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  ASSERT_OK(Migrate(*url, EventStoreTables()));
  auto conn = PgConnect(*url);
  ASSERT_OK(conn);
  EventStore store;
  for (int i = 0; i < 24; ++i) {
    ASSERT_OK(PgRun(conn->get(), "BEGIN"));
    ASSERT_OK(store.Append(conn->get(), "account", "acct-" + std::to_string(i % 4), kAny,
                           {NewEvent{.event_type = "FundsDeposited", .payload = "{}"}}));
    ASSERT_OK(PgRun(conn->get(), "COMMIT"));
  }
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}";
  CommandResult relay =
      RunCourier({"relay", "--event-store", "--source", *url, "--sink", sink, "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;

  Audited a = Audit({"--event-store", "--source", *url, "--sink", sink});
  ASSERT_EQ(a.exit_code, 0) << a.err << a.result.dump();
  EXPECT_EQ(a.result["published"], 24);
  EXPECT_EQ(a.result["delivered"], 24);
  EXPECT_EQ(a.result["read_from"], Json::array({"kafka://" + (*broker)->bootstrap() + "/account"}));

  // Stamped but never sent (a relay whose sink was swapped): lost, and --repair sends it with
  // the envelope the relay gives an event store's event (headers version and position).
  ASSERT_OK(PgRun(conn->get(), "BEGIN"));
  auto extra = store.Append(conn->get(), "account", "acct-9", kAny,
                            {NewEvent{.event_type = "Opened", .payload = "{\"n\": 1}"}});
  ASSERT_OK(extra);
  ASSERT_OK(PgRun(conn->get(), "COMMIT"));
  ASSERT_OK(PgRun(conn->get(), "UPDATE courier_events SET published_at = now()"));
  Audited lost = Audit({"--event-store", "--source", *url, "--sink", sink, "--repair"});
  EXPECT_EQ(lost.exit_code, 0) << lost.err << lost.result.dump();
  EXPECT_EQ(lost.result["before_repair"]["lost"], Json::array({extra->events[0].event_id}));
  EXPECT_EQ(lost.result["lost"], Json::array());
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "account");
  ASSERT_EQ(records.size(), 25u);
  auto repaired = std::find_if(records.begin(), records.end(), [&](const KafkaRecord& r) {
    return r.event.event_id == extra->events[0].event_id;
  });
  ASSERT_NE(repaired, records.end());
  const Event& e = repaired->event;
  EXPECT_EQ(e.aggregate_id, "acct-9");
  EXPECT_EQ(e.payload, "{\"n\": 1}");
  auto header = [&e](const std::string& key) {
    for (const auto& [k, v] : e.headers) {
      if (k == key) return v;
    }
    return std::string();
  };
  EXPECT_EQ(header("version"), "1");
  EXPECT_EQ(header("position"), std::to_string(extra->events[0].position));
}

// Nothing published in the window is a result, not an error: 0 published and clean, with a
// note when the table has no published row at all (a relay without --retain deletes them).
TEST(AuditFile, AnEmptyWindowIsACleanResult) {
  Outbox outbox;
  outbox.Commit(3, 1);
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  WriteLines(dir.File("events.jsonl"), {});
  const std::string note = "no row of courier_outbox in " + outbox.db.url +
                           " has been published (published_at): a relay without --retain "
                           "deletes each row once published, leaving no record to compare "
                           "with; audit an outbox the relay keeps (courier relay --retain) or "
                           "an event store (--event-store)";
  // Only pending rows.
  Audited pending = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(pending.exit_code, 0) << pending.err << pending.result.dump();
  EXPECT_EQ(pending.result["published"], 0);
  EXPECT_EQ(pending.result["pending"], 3);
  EXPECT_EQ(pending.result["notes"], Json::array({note}));

  // Not retained: the relay deleted what it published; its messages are older than the
  // window (the table holds no row to start it).
  CommandResult relay = RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  Audited deleted = Audit({"--source", outbox.db.url, "--sink", sink});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err << deleted.result.dump();
  EXPECT_EQ(deleted.result["published"], 0);
  EXPECT_EQ(deleted.result["read"], 3);
  EXPECT_EQ(deleted.result["before_window"], 3);
  EXPECT_EQ(deleted.result["notes"], Json::array({note}));

  // Retained, and --since after everything: an empty window, no note.
  outbox.Commit(4, 1);
  relay = RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  auto later = PgQuery(outbox.db.url, "SELECT (now() + interval '1 minute')::text");
  ASSERT_OK(later);
  Audited empty = Audit({"--source", outbox.db.url, "--sink", sink, "--since", (*later)[0]});
  EXPECT_EQ(empty.exit_code, 0) << empty.err << empty.result.dump();
  EXPECT_EQ(empty.result["published"], 0);
  EXPECT_EQ(empty.result["before_window"], 7);
  EXPECT_EQ(empty.result["notes"], Json::array());
}

// Bad input: one line on stderr, exit 2.
void ExpectOneLine(const CommandResult& r, const std::string& message) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "courier: error: " + message + "\n");
  EXPECT_EQ(r.out, "");
}

TEST(AuditBadInput, SaysWhatIsWrongInOneLineAndExits2) {
  Outbox outbox;
  outbox.Commit(3, 1);
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  CommandResult relay = RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  ExpectOneLine(
      RunCourier({"audit", "--source", outbox.db.url, "--sink", sink, "--table", "orders_outbox"}),
      "table \"orders_outbox\" does not exist in " + outbox.db.url +
          "; create it with: courier migrate --source " + outbox.db.url);
  ExpectOneLine(
      RunCourier({"audit", "--source", outbox.db.url, "--sink", "kafak://h:1/t"}),
      "audit reads kafka://, redis://, nats:// and file:// sinks back (and redis-cache:// "
      "against --capture), not the unknown "
      "scheme 'kafak' (docs/audit.md)");
  ExpectOneLine(
      RunCourier({"audit", "--source", outbox.db.url, "--sink", "http://127.0.0.1:1/hook"}),
      "audit reads kafka://, redis://, nats:// and file:// sinks back (and redis-cache:// "
      "against --capture), not 'http://' "
      "(docs/audit.md)");
  // A file sink that cannot be read is not an empty one (everything would be "lost").
  ExpectOneLine(RunCourier({"audit", "--source", outbox.db.url, "--sink", "file://" + dir.path()}),
                "cannot read " + dir.path() +
                    ": it is a directory; name the sink's file (file:///absolute/path.jsonl)");
  ExpectOneLine(
      RunCourier({"audit", "--source", outbox.db.url, "--sink", "file://relative.jsonl"}),
      "file sink URL file://relative.jsonl names a host; write file:///absolute/path.jsonl");
  // Not there (yet, or for a moment): the audit could not run (exit 1, like a server away).
  const CommandResult missing =
      RunCourier({"audit", "--source", outbox.db.url, "--sink", "file://" + dir.File("no.jsonl")});
  EXPECT_EQ(missing.exit_code, 1) << missing.err;
  EXPECT_EQ(missing.err, "courier: error: the file sink " + dir.File("no.jsonl") +
                             " does not exist: nothing to read (the relay creates it when it "
                             "starts)\n");
  // A table of another kind: which flag or table is wrong, not a column the database misses.
  auto store = SharedPostgres().NewDatabase();
  ASSERT_OK(store);
  ASSERT_OK(Migrate(*store, EventStoreTables()));
  ExpectOneLine(
      RunCourier({"audit", "--source", *store, "--sink", sink, "--table", "courier_events"}),
      "table \"courier_events\" is an event store: audit it with --event-store");
  ExpectOneLine(RunCourier({"audit", "--event-store", "--source", outbox.db.url, "--sink", sink,
                            "--table", "public.courier_outbox"}),
                "table \"public\".\"courier_outbox\" is an outbox: audit it without "
                "--event-store");
  ASSERT_OK(outbox.db.Transaction({"CREATE TABLE orders (id int PRIMARY KEY, total int)"}));
  ExpectOneLine(
      RunCourier({"audit", "--source", outbox.db.url, "--sink", sink, "--table", "orders"}),
      "table \"orders\" is not an outbox (it has no column event_id, aggregate_type, "
      "aggregate_id, event_type, published_at, created_at); --table names the outbox the relay "
      "publishes");
  const CommandResult source = RunCourier({"audit", "--source", "mysql://h/db", "--sink", sink});
  EXPECT_EQ(source.exit_code, 2) << source.err;
  EXPECT_EQ(std::count(source.err.begin(), source.err.end(), '\n'), 1) << source.err;
  ExpectOneLine(
      RunCourier({"audit", "--source", outbox.db.url, "--sink", sink, "--since", "yesterday-ish"}),
      "--since 'yesterday-ish' is no time PostgreSQL reads (e.g. '2026-11-27 04:00:00+00')");
}

// --every: audits again and again, the last result in /metrics.
TEST(AuditEvery, ServesTheLastResultInMetrics) {
  Outbox outbox;
  outbox.Commit(5, 1);
  TempDir dir;
  const std::string sink = "file://" + dir.File("events.jsonl");
  CommandResult relay =
      RunCourier({"relay", "--source", outbox.db.url, "--sink", sink, "--retain", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  std::vector<std::string> lines = Lines(dir.File("events.jsonl"));
  lines.pop_back();
  WriteLines(dir.File("events.jsonl"), lines);
  const int port = FreePort();
  auto audit = SpawnCourier({"audit", "--source", outbox.db.url, "--sink", sink, "--every", "200ms",
                             "--metrics-port", std::to_string(port)},
                            dir.File("audit.log"));
  ASSERT_OK(audit);
  std::string metrics;
  ASSERT_TRUE(WaitUntil([&] {
    metrics = HttpGet(port, "/metrics").body;
    const size_t at = metrics.find("\ncourier_audit_runs_total ");
    return at != std::string::npos && std::atoi(metrics.c_str() + at + 26) >= 2;
  })) << metrics
      << ReadFile(dir.File("audit.log"));
  EXPECT_NE(metrics.find("\ncourier_audit_lost 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ncourier_audit_ghosts 0\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ncourier_audit_stale 0\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ncourier_audit_duplicates 0\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ncourier_audit_last_run_timestamp_seconds "), std::string::npos);

  // The file gone for a while (rotated, restored): failed runs, counted; the loop goes on.
  auto counter = [&](const std::string& name) {
    const size_t at = metrics.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::atoi(metrics.c_str() + at + name.size() + 2);
  };
  ASSERT_EQ(::rename(dir.File("events.jsonl").c_str(), dir.File("away.jsonl").c_str()), 0);
  ASSERT_TRUE(WaitUntil([&] {
    metrics = HttpGet(port, "/metrics").body;
    return counter("courier_audit_failures_total") >= 1;
  })) << metrics
      << ReadFile(dir.File("audit.log"));
  ASSERT_EQ(::rename(dir.File("away.jsonl").c_str(), dir.File("events.jsonl").c_str()), 0);
  const int runs = counter("courier_audit_runs_total");
  ASSERT_TRUE(WaitUntil([&] {
    metrics = HttpGet(port, "/metrics").body;
    return counter("courier_audit_runs_total") > runs;
  })) << metrics
      << ReadFile(dir.File("audit.log"));
  audit->Signal(SIGTERM);
  auto code = audit->Wait(Duration(10000));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace courier::test
