// Crash safety by test: the relay binary is SIGKILLed at random moments, mid-batch, while
// writers commit (some roll back, some hold their transaction open so that ids commit out of
// order). Afterwards every committed event must have been delivered, none of the rolled-back
// ones, in order per aggregate.
#include <signal.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include <hiredis/hiredis.h>

#include "chaos/writers.h"
#include "core/encoding.h"
#include "core/postgres.h"
#include "core/uuid.h"
#include "support/fixtures.h"
#include "support/projection.h"

namespace courier::test {
namespace {

// Runs one writer per entry of `results` while relays started with `relay_args` are SIGKILLed
// after 0.1-0.8 s each, again and again for `how_long`. Returns the number of kills.
int WriteWhileKillingRelays(const TestDb& db, const std::vector<std::string>& relay_args,
                            Duration how_long, unsigned seed, std::vector<Writer>& results) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (size_t w = 0; w < results.size(); ++w) {
    threads.emplace_back([&, w] { WriteLoop(db, static_cast<int>(w), stop, results[w]); });
  }
  std::mt19937 rng(seed);
  int kills = 0;
  const TimePoint end = Clock::Real().Now() + how_long;
  while (Clock::Real().Now() < end) {
    auto relay = SpawnCourier(relay_args, db.dir.File("relay.log"));
    EXPECT_OK(relay);
    if (!relay.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 700));
    relay->Signal(SIGKILL);
    relay->Wait(Duration(10000));
    ++kills;
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  return kills;
}

enum class SourceKind { kPostgresPoll, kPostgresCdc, kSqlite };
enum class SinkKind { kKafka, kRedis, kHttp, kNats, kAmqp };

const char* SinkName(SinkKind kind) {
  switch (kind) {
    case SinkKind::kRedis:
      return "redis";
    case SinkKind::kHttp:
      return "http";
    case SinkKind::kNats:
      return "nats";
    case SinkKind::kAmqp:
      return "amqp";
    case SinkKind::kKafka:
      break;
  }
  return "kafka";
}

struct KillSetup {
  SourceKind source;
  SinkKind sink;
};

class KillTest : public ::testing::TestWithParam<KillSetup> {};

TEST_P(KillTest, SigkillMidBatchLosesNothingAndKeepsOrder) {
  const KillSetup setup = GetParam();
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("order", 4));
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<WebhookServer> webhook;
  std::unique_ptr<NatsServer> nats;
  std::unique_ptr<RabbitMqServer> rabbit;
  std::string sink = "kafka://" + (*broker)->bootstrap() + "/order";
  if (setup.sink == SinkKind::kRedis) {
    auto started = RedisServer::Start();
    ASSERT_OK(started);
    redis = std::move(started).value();
    sink = redis->Url("order");
  } else if (setup.sink == SinkKind::kHttp) {
    auto started = WebhookServer::Start();
    ASSERT_OK(started);
    webhook = std::move(started).value();
    sink = webhook->Url("hooks/order");
  } else if (setup.sink == SinkKind::kNats) {
    auto started = NatsServer::Start();
    ASSERT_OK(started);
    nats = std::move(started).value();
    ASSERT_OK(nats->AddStream("ORDERS", {"order"}));
    sink = nats->Url("order");
  } else if (setup.sink == SinkKind::kAmqp) {
    auto started = RabbitMqServer::Start();
    ASSERT_OK(started);
    rabbit = std::move(started).value();
    ASSERT_OK(rabbit->DeclareExchange("events"));
    ASSERT_OK(rabbit->DeclareQueue("orders", "events", "order"));
    sink = rabbit->Url("events");
  }
  auto read_sink = [&] {
    if (redis) return ReadRedis(*redis, "order");
    if (webhook) return ReadWebhook(*webhook);
    if (nats) return ReadNats(*nats, "order");
    if (rabbit) return ReadAmqp(*rabbit, "orders");
    return ReadTopic(**broker, "order");
  };
  TestDb db = TestDb::Make(setup.source != SourceKind::kSqlite);
  const std::string mode = setup.source == SourceKind::kPostgresCdc ? "cdc" : "poll";
  // A webhook gets one request at a time per aggregate: smaller batches there, so that relays
  // live long enough between kills to checkpoint some of them.
  const std::string batch = setup.sink == SinkKind::kHttp ? "10" : "50";
  const std::vector<std::string> relay_args = {
      "relay", "--mode",       mode,  "--source",        db.url, "--sink",
      sink,    "--batch-size", batch, "--poll-interval", "10ms", "--backoff-initial",
      "20ms"};

  std::vector<Writer> results(db.postgres ? 3 : 1);
  const int kills =
      WriteWhileKillingRelays(db, relay_args, std::chrono::seconds(12), 12345, results);
  const std::string relay_log = ReadFile(db.dir.File("relay.log"));
  size_t standbys = 0;
  for (size_t p = 0; (p = relay_log.find("standing by", p)) != std::string::npos; ++p) ++standbys;
  const size_t published_by_killed_relays = read_sink().size();

  // A last relay drains what is left.
  CommandResult last = RunCourier(
      {"relay", "--mode", mode, "--source", db.url, "--sink", sink, "--once"}, Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  EXPECT_EQ(db.Count("courier_dead_letter"), 0) << "nothing is refused in this test";

  std::set<std::string> committed;
  int64_t rolled_back = 0;
  for (const Writer& w : results) {
    committed.insert(w.committed.begin(), w.committed.end());
    rolled_back += w.rolled_back;
  }
  const std::vector<KafkaRecord> records = read_sink();
  const int64_t duplicates = ExpectDelivered(records, committed);
  std::printf(
      "[chaos] source=%s mode=%s sink=%s kills=%d committed=%zu rolled_back_tx=%lld "
      "delivered=%zu duplicates=%lld lost=0 ghosts=0\n",
      db.postgres ? "postgres" : "sqlite", mode.c_str(), SinkName(setup.sink), kills,
      committed.size(), static_cast<long long>(rolled_back), records.size(),
      static_cast<long long>(duplicates));
  std::printf("[chaos] published before the final drain=%zu, relay start-ups that stood by=%zu\n",
              published_by_killed_relays, standbys);
  EXPECT_GT(kills, 5);
  // The killed relays did the work (the kills landed mid-stream, not only at start-up).
  // (The webhook receiver, one Python process answering each POST in turn, is far slower
  // than the writers: there a floor of 200 events still proves the kills hit a running relay.)
  // (Under AddressSanitizer every relay starts and runs several times slower: a tenth.)
#if defined(__SANITIZE_ADDRESS__)
  const size_t share = 10;
#else
  const size_t share = 4;
#endif
  EXPECT_GT(published_by_killed_relays,
            setup.sink == SinkKind::kHttp ? size_t{200} : committed.size() / share);
  EXPECT_GT(committed.size(), 100u);
  EXPECT_GT(rolled_back, 0);
}

INSTANTIATE_TEST_SUITE_P(Sources, KillTest,
                         ::testing::Values(KillSetup{SourceKind::kPostgresPoll, SinkKind::kKafka},
                                           KillSetup{SourceKind::kPostgresCdc, SinkKind::kKafka},
                                           KillSetup{SourceKind::kSqlite, SinkKind::kKafka},
                                           KillSetup{SourceKind::kPostgresPoll, SinkKind::kRedis},
                                           KillSetup{SourceKind::kPostgresPoll, SinkKind::kHttp},
                                           KillSetup{SourceKind::kPostgresPoll, SinkKind::kNats},
                                           KillSetup{SourceKind::kPostgresPoll, SinkKind::kAmqp}),
                         [](const auto& info) {
                           std::string name;
                           switch (info.param.source) {
                             case SourceKind::kPostgresPoll:
                               name = "Postgres";
                               break;
                             case SourceKind::kPostgresCdc:
                               name = "PostgresCdc";
                               break;
                             case SourceKind::kSqlite:
                               name = "Sqlite";
                               break;
                           }
                           if (info.param.sink == SinkKind::kKafka) return name;
                           std::string sink = SinkName(info.param.sink);
                           sink[0] = static_cast<char>(std::toupper(sink[0]));
                           return name + "To" + sink;
                         });

// The relay's courier_events_published_total on its /metrics (0 when it does not answer).
int64_t PublishedTotal(int port) {
  const Got got = HttpGet(port, "/metrics");
  const std::string name = "courier_events_published_total";
  for (size_t at = got.body.find(name); at != std::string::npos; at = got.body.find(name, at + 1)) {
    if (at > 0 && got.body[at - 1] != '\n') continue;
    const size_t eol = got.body.find('\n', at);
    const std::string line = got.body.substr(at, eol - at);
    return ParseInt64(line.substr(line.rfind(' ') + 1)).value_or(0);
  }
  return 0;
}

// Pipelined checkpoints (--checkpoints-in-flight): while writers commit (out of id order,
// some rolling back), each relay is killed the moment one transaction is about to delete the
// rows of several batches the sink acked. To have them queue up, the test holds a row lock on
// the oldest pending rows, so that the first batch's DELETE waits while the next batches are
// fetched, published and queued; once three batches are acked it lets go. Every committed
// event is delivered, in order per aggregate, and the batches in flight go out again.
class PipelinedKillTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PipelinedKillTest, KilledWithSeveralBatchesInFlightLosesNothingAndKeepsOrder) {
  const std::string mode = GetParam();
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("order", 4));
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/order";
  TestDb db = TestDb::Make(true);
  const std::string log = db.dir.File("relay.log");
  // CDC: the slot exists before the test holds its lock (creating a slot waits for every
  // open transaction).
  if (mode == "cdc") {
    CommandResult prepared = RunCourier({"migrate", "--source", db.url, "--mode", "cdc"});
    ASSERT_EQ(prepared.exit_code, 0) << prepared.err;
  }
  // Set before any thread starts (libpq reads the environment): the relays inherit it.
  ::setenv("COURIER_FAILPOINTS", "relay-checkpoint-coalesced", 1);
  std::atomic<bool> stop{false};
  std::vector<Writer> results(3);
  std::vector<std::thread> threads;
  for (size_t w = 0; w < results.size(); ++w) {
    threads.emplace_back([&, w] { WriteLoop(db, static_cast<int>(w), stop, results[w]); });
  }
  constexpr int kRounds = 4;
  int kills = 0;
  // A relay that publishes nothing for a long while after the previous one's kill (seen in
  // both modes, ~60 s, not yet explained: a liveness problem, not a loss) is stopped and its
  // round done again, at most kRounds times: what this test asserts is what a kill with
  // several batches in flight does to the events.
  int stalled = 0;
  while (kills < kRounds && stalled < kRounds) {
    ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") >= 500; }, Duration(60000)));
    auto lock = PgConnect(db.url);
    ASSERT_OK(lock);
    ASSERT_OK(PgRun(lock->get(), "BEGIN"));
    auto locked =
        PgExec(lock->get(), "SELECT id FROM courier_outbox ORDER BY id LIMIT 200 FOR KEY SHARE");
    ASSERT_OK(locked);
    const int port = FreePort();
    auto relay = SpawnCourier({"relay", "--mode", mode, "--source", db.url, "--sink", sink,
                               "--batch-size", "20", "--checkpoints-in-flight", "4",
                               "--metrics-port", std::to_string(port), "--poll-interval", "10ms"},
                              log);
    ASSERT_OK(relay);
    if (!WaitUntil([&] { return PublishedTotal(port) >= 60; }, Duration(20000))) {
      ++stalled;
      std::printf(
          "[chaos] pipelined mode=%s: a relay acked fewer than 60 events in 20 s; its "
          "round again\n",
          mode.c_str());
      relay->Signal(SIGKILL);
      relay->Wait(Duration(10000));
      ASSERT_OK(PgRun(lock->get(), "COMMIT"));
      continue;
    }
    ASSERT_OK(PgRun(lock->get(), "COMMIT"));
    const std::optional<int> code = relay->Wait(Duration(60000));
    EXPECT_EQ(code, 128 + SIGKILL) << "no checkpoint of several batches: " << ReadFile(log);
    if (code == 128 + SIGKILL) ++kills;
    if (!code) {
      relay->Signal(SIGKILL);
      relay->Wait(Duration(10000));
    }
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  ::unsetenv("COURIER_FAILPOINTS");

  CommandResult last =
      RunCourier({"relay", "--source", db.url, "--sink", sink, "--once"}, Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  std::set<std::string> committed;
  for (const Writer& w : results) committed.insert(w.committed.begin(), w.committed.end());
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "order");
  const int64_t duplicates = ExpectDelivered(records, committed);
  std::printf(
      "[chaos] pipelined mode=%s: kills=%d stalled=%d committed=%zu delivered=%zu "
      "duplicates=%lld\n",
      mode.c_str(), kills, stalled, committed.size(), records.size(),
      static_cast<long long>(duplicates));
  EXPECT_EQ(kills, kRounds);
  // Each kill left at least the two batches queued behind the first acked and not deleted.
  EXPECT_GE(duplicates, int64_t{40} * kills);
}

INSTANTIATE_TEST_SUITE_P(Modes, PipelinedKillTest, ::testing::Values("poll", "cdc"),
                         [](const auto& info) { return info.param == "cdc" ? "Cdc" : "Poll"; });

// The cache sink under the same kills, in both modes: afterwards every aggregate's key holds
// the payload of its newest committed event, although killed relays leave batches half
// applied and their successors apply them again, older events after newer ones.
class CacheKillTest : public ::testing::TestWithParam<SourceKind> {};

TEST_P(CacheKillTest, SigkillNeverLeavesTheCacheStale) {
  const std::string mode = GetParam() == SourceKind::kPostgresCdc ? "cdc" : "poll";
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  const std::string sink = "redis-cache://127.0.0.1:" + std::to_string((*redis)->port()) + "/cache";
  TestDb db = TestDb::Make(true);
  // Retain mode keeps the rows, to tell each aggregate's newest committed payload afterwards.
  const std::vector<std::string> relay_args = {"relay",
                                               "--mode",
                                               mode,
                                               "--source",
                                               db.url,
                                               "--sink",
                                               sink,
                                               "--retain",
                                               "--batch-size",
                                               "50",
                                               "--poll-interval",
                                               "10ms",
                                               "--backoff-initial",
                                               "20ms"};
  std::vector<Writer> results(3);
  const int kills =
      WriteWhileKillingRelays(db, relay_args, std::chrono::seconds(10), 4242, results);
  std::vector<std::string> last_args = relay_args;
  last_args.push_back("--once");
  CommandResult last = RunCourier(last_args, Duration(120000));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(db.Count("courier_outbox WHERE published_at IS NULL"), 0);

  auto newest = PgQuery(db.url,
                        "SELECT DISTINCT ON (aggregate_id) aggregate_id || E'\\t' || payload::text"
                        " FROM courier_outbox ORDER BY aggregate_id, id DESC");
  ASSERT_OK(newest);
  auto endpoint = ParseRedisUrl((*redis)->Url());
  ASSERT_OK(endpoint);
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  ASSERT_OK(conn);
  int stale = 0;
  for (const std::string& row : *newest) {
    const size_t tab = row.find('\t');
    const std::string key = "cache:order:" + row.substr(0, tab);
    auto* reply = static_cast<redisReply*>(redisCommand(conn->get(), "GET %s", key.c_str()));
    ASSERT_NE(reply, nullptr);
    const std::string value =
        reply->type == REDIS_REPLY_STRING ? std::string(reply->str, reply->len) : "(none)";
    freeReplyObject(reply);
    if (value != row.substr(tab + 1)) {
      ++stale;
      ADD_FAILURE() << key << " holds " << value << ", the newest event has "
                    << row.substr(tab + 1);
    }
  }
  std::printf("[chaos] cache mode=%s kills=%d aggregates=%zu stale=%d\n", mode.c_str(), kills,
              newest->size(), stale);
  EXPECT_GT(kills, 5);
  EXPECT_GT(newest->size(), 10u);
}

INSTANTIATE_TEST_SUITE_P(Modes, CacheKillTest,
                         ::testing::Values(SourceKind::kPostgresPoll, SourceKind::kPostgresCdc),
                         [](const auto& info) {
                           return info.param == SourceKind::kPostgresCdc ? "Cdc" : "Poll";
                         });

}  // namespace
}  // namespace courier::test
