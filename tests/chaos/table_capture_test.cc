// A captured table under concurrent INSERT/UPDATE/DELETE (some rolled back) while the relay,
// fanning out to the Redis cache, the groonga search index and the dev broker, is SIGKILLed at
// random. Afterwards, for every row, the cache value and the search document equal the row's
// to_jsonb (compared as JSON values), deleted rows have no key and no document, and the last
// Kafka event of each key carries the final row. COURIER_CHAOS_SECONDS (default 6) sets how long
// the writers and the kills go on.
#include <hiredis/hiredis.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "support/fixtures.h"

namespace courier::test {
namespace {

Duration ChaosDuration() {
  const char* env = std::getenv("COURIER_CHAOS_SECONDS");
  const int seconds = env != nullptr ? std::atoi(env) : 0;
  return std::chrono::seconds(seconds > 0 ? seconds : 6);
}

// Random transactions on `items` until `stop`: inserts of new ids, updates that touch the
// TOASTed body or leave it, deletes; one in five rolled back. Ids are drawn from the ones this
// writer inserted (w, w + writers, ...), so writers do not wait on each other's rows.
void WriteItems(const std::string& url, int w, int writers, const std::atomic<bool>& stop) {
  std::mt19937 rng(1000 + w);
  auto conn = PgConnect(url);
  ASSERT_OK(conn);
  std::vector<int> ids;
  int next = w + 1;
  while (!stop) {
    std::string sql = "BEGIN;";
    const int op = static_cast<int>(rng() % 10);
    const std::string n = std::to_string(rng() % 100000);
    if (ids.empty() || op < 4) {
      ids.push_back(next);
      sql += "INSERT INTO items (id, name, price, active, doc, at, note, body) VALUES (" +
             std::to_string(next) + ", 'item " + n + "', " + n + ".125, " +
             (rng() % 2 ? "true" : "false") + ", '{\"n\": " + n +
             ", \"tags\": [\"a\", \"b\"]}', now(), " + (rng() % 2 ? "NULL" : "'note " + n + "'") +
             ", (SELECT string_agg(md5(g::text || '" + n +
             "'), '') FROM generate_series(1, 200) g));";
      next += writers;
    } else {
      const int id = ids[rng() % ids.size()];
      if (op < 6) {  // leaves the TOASTed body as it is
        sql += "UPDATE items SET price = price + 1.5, name = 'renamed " + n +
               "', note = NULL WHERE id = " + std::to_string(id) + ";";
      } else if (op < 8) {
        sql += "UPDATE items SET body = md5('" + n +
               "') || body, active = NOT active WHERE id = " + std::to_string(id) + ";";
      } else {
        sql += "DELETE FROM items WHERE id = " + std::to_string(id) + ";";
      }
    }
    sql += rng() % 5 == 0 ? "ROLLBACK;" : "COMMIT;";
    EXPECT_OK(PgRun(conn->get(), sql));
    // A pace the search index keeps up with between kills (it reads before it writes).
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

TEST(TableCaptureKill, CacheSearchIndexAndLogEndEqualToTheTable) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  auto groonga = GroongaServer::Start();
  ASSERT_OK(groonga);
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  TestDb db = TestDb::Make(true);
  ASSERT_OK(db.Transaction(
      {"CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(12,3), "
       "active bool, doc jsonb, at timestamptz, note text, body text)",
       "ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL",  // out of line, uncompressed
       "ALTER TABLE items REPLICA IDENTITY FULL"}));
  const CommandResult migrated =
      RunCourier({"migrate", "--source", db.url, "--mode", "cdc", "--capture", "public.items"});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  const std::vector<std::string> relay_args = {
      "relay",
      "--mode",
      "cdc",
      "--source",
      db.url,
      "--capture",
      "public.items",
      "--sink",
      "redis-cache://127.0.0.1:" + std::to_string((*redis)->port()) + "/cache",
      "--sink",
      (*groonga)->Url("cdc_"),
      "--sink",
      "kafka://" + (*broker)->bootstrap() + "/{aggregate_type}",
      "--batch-size",
      "50",
      "--backoff-initial",
      "20ms"};

  constexpr int kWriters = 3;
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] { WriteItems(db.url, w, kWriters, stop); });
  }
  std::mt19937 rng(4242);
  int kills = 0;
  const TimePoint end = Clock::Real().Now() + ChaosDuration();
  while (Clock::Real().Now() < end) {
    auto relay = SpawnCourier(relay_args, db.dir.File("relay.log"));
    ASSERT_OK(relay);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 700));
    relay->Signal(SIGKILL);
    relay->Wait(Duration(10000));
    ++kills;
  }
  stop = true;
  for (std::thread& t : writers) t.join();
  std::vector<std::string> last_args = relay_args;
  last_args.push_back("--once");
  const CommandResult last = RunCourier(last_args, Duration(180000));
  ASSERT_EQ(last.exit_code, 0) << last.err << ReadFile(db.dir.File("relay.log"));

  // The table as PostgreSQL renders it, and every id ever committed.
  auto rows = PgQuery(db.url, "SELECT id || E'\\t' || to_jsonb(items)::text FROM items");
  ASSERT_OK(rows);
  std::map<std::string, nlohmann::json> table;
  for (const std::string& r : *rows) {
    const size_t tab = r.find('\t');
    table[r.substr(0, tab)] = nlohmann::json::parse(r.substr(tab + 1));
  }
  // The log: the last event per key (each key lives in one partition, in commit order).
  std::map<std::string, const KafkaRecord*> last_event;
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "items");
  for (const KafkaRecord& r : records) {
    const KafkaRecord*& slot = last_event[r.event.aggregate_id];
    if (slot == nullptr || r.offset > slot->offset) slot = &r;
  }
  auto endpoint = ParseRedisUrl((*redis)->Url());
  ASSERT_OK(endpoint);
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  ASSERT_OK(conn);
  int checked = 0, deleted = 0;
  for (const auto& [id, event] : last_event) {
    const std::string key = "cache:items:" + id;
    auto* reply = static_cast<redisReply*>(redisCommand(conn->get(), "GET %s", key.c_str()));
    ASSERT_NE(reply, nullptr);
    const std::optional<std::string> cached =
        reply->type == REDIS_REPLY_STRING
            ? std::optional<std::string>(std::string(reply->str, reply->len))
            : std::nullopt;
    freeReplyObject(reply);
    auto answer = (*groonga)->Command("select", {{"table", "cdc_items"},
                                                 {"filter", "_key == \"" + id + "\""},
                                                 {"output_columns", "courier_source"}});
    ASSERT_OK(answer);
    const nlohmann::json found = nlohmann::json::parse(*answer)["body"]["records"];
    const nlohmann::json payload = nlohmann::json::parse(event->event.payload);
    auto row = table.find(id);
    if (row == table.end()) {
      ++deleted;
      EXPECT_EQ(cached, std::nullopt) << key << " of a deleted row";
      EXPECT_TRUE(found.empty()) << "document of deleted row " << id << ": " << found;
      EXPECT_EQ(payload["op"], "delete") << id;
      continue;
    }
    ++checked;
    ASSERT_TRUE(cached.has_value()) << key;
    EXPECT_EQ(nlohmann::json::parse(*cached), row->second) << key;
    ASSERT_EQ(found.size(), 1u) << id;
    EXPECT_EQ(nlohmann::json::parse(found[0][0].get<std::string>()), row->second) << id;
    EXPECT_EQ(payload["after"], row->second) << id;
  }
  EXPECT_EQ(checked, static_cast<int>(table.size())) << "every row reached the log";
  std::printf("[chaos] table capture kills=%d rows=%d deleted=%d events=%zu\n", kills, checked,
              deleted, records.size());
  EXPECT_GT(kills, 3);
  EXPECT_GT(deleted, 0);
}

}  // namespace
}  // namespace courier::test
