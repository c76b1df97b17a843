// Shared helpers for integration and chaos tests: a dev broker, a fresh database per test,
// event insertion through the plain-SQL contract, reading topics back.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audit/verdict.h"
#include "brokers/amqp/amqp.h"
#include "brokers/dev/dev_broker.h"
#include "brokers/kafka/kafka_reader.h"
#include "brokers/nats/nats.h"
#include "brokers/redis/redis.h"
#include "brokers/registry.h"
#include "brokers/sink.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/uuid.h"
#include "courier/relay.h"
#include "schema/migrate.h"
#include "sources/source.h"
#include "support/harness.h"
#include "support/matchers.h"

namespace courier::test {

// One fresh database (PostgreSQL or SQLite) with the courier tables.
struct TestDb {
  bool postgres = true;
  std::string url;
  TempDir dir;

  TestDb() = default;
  TestDb(TestDb&&) = default;
  TestDb& operator=(TestDb&&) = default;
  // Drops the database's replication slots, which would otherwise keep WAL on the shared
  // server for the rest of the run.
  ~TestDb() {
    if (postgres && !url.empty()) DropReplicationSlots(url);
  }

  static TestDb Make(bool postgres) {
    TestDb db;
    db.postgres = postgres;
    if (postgres) {
      auto url = SharedPostgres().NewDatabase();
      EXPECT_OK(url);
      db.url = url.ok() ? *url : "";
    } else {
      db.url = "sqlite://" + db.dir.File("app.db");
    }
    EXPECT_OK(Migrate(db.url, TableNames{}));
    return db;
  }

  // Runs statements in one transaction (COMMIT, or ROLLBACK when `commit` is false).
  Status Transaction(const std::vector<std::string>& statements, bool commit = true) const {
    std::string sql = postgres ? "BEGIN;" : "BEGIN IMMEDIATE;";
    for (const std::string& s : statements) sql += s + ";";
    sql += commit ? "COMMIT;" : "ROLLBACK;";
    if (postgres) {
      COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
      return PgRun(conn.get(), sql);
    }
    COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(url.substr(9), false));
    return SqliteExec(db.get(), sql);
  }

  int64_t Count(const std::string& table_and_where) const {
    const std::string sql = "SELECT count(*) FROM " + table_and_where;
    if (postgres) {
      auto rows = PgQuery(url, sql);
      return rows.ok() && !rows->empty() ? std::stoll((*rows)[0]) : -1;
    }
    auto db = SqliteOpen(url.substr(9), false);
    if (!db.ok()) return -1;
    auto stmt = SqlitePrepare(db->get(), sql);
    if (!stmt.ok() || sqlite3_step(stmt->get()) != SQLITE_ROW) return -1;
    return sqlite3_column_int64(stmt->get(), 0);
  }
};

// Relay options for tests: quick polls and quick retries.
inline RelayOptions TestRelayOptions(const std::string& source, const std::string& sink) {
  RelayOptions o;
  o.source_url = source;
  o.sink_url = sink;
  o.poll_interval = Duration(20);
  o.backoff_initial = Duration(50);
  o.backoff_max = Duration(500);
  return o;
}

// Runs a relay with `o` until the outbox is empty (--once).
inline Status RunRelayOnce(RelayOptions o) {
  o.once = true;
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Relay> relay, Relay::Create(o));
  return relay->Run();
}

// INSERT through the plain-SQL contract; payload {"seq":N}; event_id chosen by the test.
inline std::string InsertEventSql(const std::string& event_id, const std::string& aggregate_id,
                                  int64_t seq, const std::string& aggregate_type = "order",
                                  const std::string& table = "courier_outbox") {
  return "INSERT INTO " + QuoteIdent(table) +
         " (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ('" + event_id +
         "', '" + aggregate_type + "', '" + aggregate_id +
         "', 'Happened', '{\"seq\":" + std::to_string(seq) + "}')";
}

// Commits `n` events spread over `aggregates` aggregates, 50 per transaction, their payloads'
// seq numbered on from *seq; returns their ids.
inline std::set<std::string> CommitEvents(const TestDb& db, int n, int aggregates, int64_t* seq,
                                          const std::string& type = "order") {
  std::set<std::string> ids;
  std::vector<std::string> statements;
  for (int i = 0; i < n; ++i) {
    const std::string id = NewUuidV7();
    ids.insert(id);
    statements.push_back(
        InsertEventSql(id, "agg-" + std::to_string(i % aggregates), (*seq)++, type));
    if (statements.size() == 50 || i == n - 1) {
      EXPECT_OK(db.Transaction(statements));
      statements.clear();
    }
  }
  return ids;
}

// A fresh PostgreSQL outbox and the next payload seq: what a sink's tests commit into.
struct Outbox {
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;

  // `n` events over `aggregates` aggregates of `type` (see CommitEvents); returns their ids.
  std::set<std::string> Commit(int n, int aggregates, const std::string& type = "order") {
    return CommitEvents(db, n, aggregates, &seq, type);
  }
};

// True if the outbox holds exactly `rows` rows throughout `how_long` (checked every 100 ms):
// while a sink is away, nothing may be deleted without its ack.
inline bool OutboxStaysAt(const TestDb& db, int64_t rows, Duration how_long) {
  const TimePoint until = Clock::Real().Now() + how_long;
  while (Clock::Real().Now() < until) {
    const int64_t now = db.Count("courier_outbox");
    if (now != rows) {
      ADD_FAILURE() << "outbox holds " << now << " rows, expected " << rows
                    << ": nothing is deleted without an ack";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

inline int64_t SeqOf(const Event& e) {
  size_t pos = e.payload.find("\"seq\"");
  if (pos == std::string::npos) return -1;
  pos += 5;
  while (pos < e.payload.size() && (e.payload[pos] == ' ' || e.payload[pos] == ':')) ++pos;
  return std::atoll(e.payload.c_str() + pos);
}

inline std::vector<KafkaRecord> ReadTopic(const DevBroker& broker, const std::string& topic) {
  auto reader = KafkaReader::Open(broker.bootstrap(), {topic}, true);
  EXPECT_OK(reader);
  if (!reader.ok()) return {};
  auto records = (*reader)->ReadToEnd(std::chrono::seconds(60));
  EXPECT_OK(records);
  return records.ok() ? std::move(records).value() : std::vector<KafkaRecord>{};
}

// What a reader saw, as the verdict takes it: an event's position is its payload's "seq".
inline std::vector<DeliveredRecord> Deliveries(const std::vector<KafkaRecord>& records) {
  std::vector<DeliveredRecord> out;
  out.reserve(records.size());
  for (const KafkaRecord& r : records)
    out.push_back({r.event.event_id, r.event.aggregate_id, SeqOf(r.event)});
  return out;
}

// The verdict's first failures, one per line, for an assertion's message.
inline std::string ExamplesOf(const Verdict& v) {
  std::string out;
  for (const std::string& line : v.examples) out += "\n  " + line;
  return out;
}

// Checks the delivery guarantees: every expected event delivered (G1), nothing else (G2),
// and per aggregate, events first seen in increasing seq order (G3). Returns duplicates.
inline int64_t ExpectDelivered(const std::vector<KafkaRecord>& records,
                               const std::set<std::string>& expected) {
  const Verdict v = Judge(Expectation{expected, {}}, Deliveries(records));
  EXPECT_EQ(v.lost, 0) << "committed events never delivered" << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 0) << "ghost or unknown events delivered" << ExamplesOf(v);
  EXPECT_EQ(v.order_violations, 0) << "per-aggregate order broken" << ExamplesOf(v);
  return v.duplicates;
}

// `n` events of aggregate `aggregate`, payloads {"seq":1}..{"seq":n}, made in the test
// rather than by a relay.
inline std::vector<Event> MakeEvents(int n, const std::string& aggregate = "o-1") {
  std::vector<Event> events;
  for (int i = 0; i < n; ++i) {
    Event e;
    e.event_id = NewUuidV7();
    e.aggregate_type = "order";
    e.aggregate_id = aggregate;
    e.event_type = "OrderCreated";
    e.payload = "{\"seq\":" + std::to_string(i + 1) + "}";
    e.created_at_us = 1700000000000000 + i;
    events.push_back(std::move(e));
  }
  return events;
}

// Publishes `events` through a sink of `sink_url`, each acked.
inline void PublishEvents(const std::string& sink_url, const std::vector<Event>& events) {
  auto sink = MakeSink({.url = sink_url});
  ASSERT_OK(sink);
  ASSERT_OK((*sink)->Open());
  const StopSignal never;
  for (const Status& st : (*sink)->Publish(events, never)) ASSERT_OK(st);
}

// A dev broker with one topic "orders" (of partitions() partitions), for the tests of what
// reads Kafka (consume, tail, payloads).
class BrokerWithTopic : public ::testing::Test {
 protected:
  virtual int partitions() const { return 1; }

  void SetUp() override {
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    broker_ = std::move(broker).value();
    ASSERT_OK(broker_->CreateTopic("orders", partitions()));
    topic_url_ = "kafka://" + broker_->bootstrap() + "/orders";
  }

  std::unique_ptr<DevBroker> broker_;
  std::string topic_url_;
};

// A relay running in a thread, stopped (and joined) at scope exit.
class BackgroundRelay {
 public:
  explicit BackgroundRelay(const RelayOptions& o) {
    auto relay = Relay::Create(o);
    EXPECT_OK(relay);
    relay_ = std::move(relay).value();
    thread_ = std::thread([this] { result_ = relay_->Run(); });
  }
  ~BackgroundRelay() { (void)Stop(); }
  Status Stop() {
    if (thread_.joinable()) {
      relay_->RequestStop();
      thread_.join();
    }
    return result_;
  }
  RelayStats stats() const { return relay_->stats(); }

 private:
  std::unique_ptr<Relay> relay_;
  std::thread thread_;
  Status result_;
};

// Every entry of a Redis stream, as records for ExpectDelivered.
inline std::vector<KafkaRecord> ReadRedis(const RedisServer& redis, const std::string& stream) {
  auto endpoint = ParseRedisUrl(redis.Url(stream));
  EXPECT_OK(endpoint);
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  EXPECT_OK(conn);
  if (!conn.ok()) return {};
  std::vector<KafkaRecord> out;
  std::string after = "0";
  while (true) {
    auto entries = ReadRedisStream(conn->get(), stream, after, Duration(1));
    EXPECT_OK(entries);
    if (!entries.ok() || entries->empty()) return out;
    for (RedisEntry& e : *entries) {
      after = e.id;
      KafkaRecord r;
      r.topic = stream;
      r.event = std::move(e.event);
      out.push_back(std::move(r));
    }
  }
}

// Every request the webhook server accepted, as records for ExpectDelivered.
inline std::vector<KafkaRecord> ReadWebhook(const WebhookServer& server) {
  std::vector<KafkaRecord> out;
  std::stringstream lines(ReadFile(server.log()));
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    const nlohmann::json& h = j["headers"];
    KafkaRecord r;
    r.topic = j["path"];
    r.event.event_id = h.value("idempotency-key", "");
    r.event.event_type = h.value("ce-type", "");
    r.event.aggregate_id = h.value("ce-subject", "");
    r.event.aggregate_type = h.value("ce-source", "").substr(8);  // "courier/"
    r.event.payload = j["body"];
    if (h.contains("x-trace")) r.event.headers = {{"x-trace", h["x-trace"]}};
    out.push_back(std::move(r));
  }
  return out;
}

// Every event a reader without a group (brokers/reader.h) yields from `url`'s oldest message
// until none arrives for a second, as records of `topic` for ExpectDelivered.
inline std::vector<KafkaRecord> ReadAll(const std::string& url, const std::string& topic) {
  auto reader = MakeReader(ReaderOptions{.url = url, .from_beginning = true}, "test");
  EXPECT_OK(reader);
  if (!reader.ok()) return {};
  std::vector<KafkaRecord> out;
  while (true) {
    auto next = (*reader)->Next(Duration(1000));
    EXPECT_OK(next);
    if (!next.ok() || !next->has_value()) return out;
    KafkaRecord r;
    r.topic = topic;
    r.event = std::move((*next)->event);
    out.push_back(std::move(r));
  }
}

// Every message of a JetStream subject, oldest first.
inline std::vector<KafkaRecord> ReadNats(const NatsServer& server, const std::string& subject) {
  return ReadAll(server.Url(subject), subject);
}

// Every message in a RabbitMQ queue, oldest first. The messages stay in the queue.
inline std::vector<KafkaRecord> ReadAmqp(const RabbitMqServer& server, const std::string& queue) {
  return ReadAll(server.Url("", "queue=" + queue), queue);
}

}  // namespace courier::test
