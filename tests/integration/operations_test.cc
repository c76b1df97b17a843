// What an operator runs against: /metrics, /healthz, /readyz and `courier status` with its
// lease and throughput; relays sharded by aggregate; a relay fenced when its session is cut.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <sstream>

#include "core/encoding.h"
#include "core/postgres.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

struct Got {
  int status = 0;
  std::string body;
};

// A plain HTTP/1.0 GET on 127.0.0.1.
Got HttpGet(int port, const std::string& path) {
  Got got;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return got;
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) response.append(buf, n);
  ::close(fd);
  if (response.size() > 12) got.status = std::atoi(response.c_str() + 9);
  const size_t body = response.find("\r\n\r\n");
  if (body != std::string::npos) got.body = response.substr(body + 4);
  return got;
}

std::vector<Event> ReadJsonl(const std::string& path) {
  std::vector<Event> out;
  std::stringstream lines(ReadFile(path));
  for (std::string line; std::getline(lines, line);) {
    auto e = EventFromJsonLine(line);
    EXPECT_OK(e);
    if (e.ok()) out.push_back(*e);
  }
  return out;
}

// The shared test server trusts local connections, so a password in the URL is accepted and
// ignored: enough to check that it is never printed.
std::string WithPassword(const std::string& url) {
  const std::string scheme = "postgres://postgres@";
  EXPECT_EQ(url.rfind(scheme, 0), 0u) << url;
  return "postgres://postgres:hunter2-secret@" + url.substr(scheme.size());
}

TEST(Operations, MetricsHealthReadinessAndStatusShowProgress) {
  TestDb db = TestDb::Make(true);
  const std::string source = WithPassword(db.url);
  std::set<std::string> ids;
  int64_t seq = 1;
  ids = CommitEvents(db, 60, 3, &seq);
  const int port = FreePort();
  const std::string log = db.dir.File("relay.log");
  auto relay =
      SpawnCourier({"relay", "--source", source, "--sink", "file://" + db.dir.File("out.jsonl"),
                    "--metrics-port", std::to_string(port), "--lease", "2s"},
                   log);
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; })) << ReadFile(log);
  ASSERT_TRUE(WaitUntil([&] { return HttpGet(port, "/readyz").status == 200; }));
  EXPECT_EQ(HttpGet(port, "/readyz").body, "active\n");
  EXPECT_EQ(HttpGet(port, "/healthz").status, 200);
  EXPECT_EQ(HttpGet(port, "/nope").status, 404);
  const Got metrics = HttpGet(port, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  const std::string& m = metrics.body;
  EXPECT_NE(m.find("courier_events_published_total{outbox=\"courier_outbox\"} 60\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("courier_outbox_backlog_events{outbox=\"courier_outbox\"} 0\n"),
            std::string::npos);
  EXPECT_NE(m.find("courier_commit_to_ack_seconds_count{outbox=\"courier_outbox\"} 60\n"),
            std::string::npos);
  EXPECT_NE(
      m.find("courier_commit_to_ack_seconds_bucket{outbox=\"courier_outbox\",le=\"+Inf\"} 60"),
      std::string::npos);
  EXPECT_NE(m.find("courier_relay_state{outbox=\"courier_outbox\",state=\"active\"} 1"),
            std::string::npos);
  EXPECT_NE(m.find("courier_outbox_status_up{outbox=\"courier_outbox\"} 1"), std::string::npos);
  EXPECT_NE(ReadFile(log).find("address=127.0.0.1:" + std::to_string(port)), std::string::npos)
      << "bound to loopback by default";

  // The lease carries the count and the rate; renewed every half second with a 2 s lease.
  ASSERT_TRUE(WaitUntil([&] {
    CommandResult st = RunCourier({"status", "--source", source, "--json"});
    return st.out.find("\"published\":60") != std::string::npos;
  }));
  CommandResult st = RunCourier({"status", "--source", source});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("held by"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("events/s over the last minute (60 since it took over)"), std::string::npos)
      << st.out;
  for (const std::string& text : {st.out, st.err, m, ReadFile(log)}) {
    EXPECT_EQ(text.find("hunter2-secret"), std::string::npos) << "secret printed: " << text;
  }

  // A second relay stands by, and says so.
  const int port2 = FreePort();
  auto standby =
      SpawnCourier({"relay", "--source", source, "--sink", "file://" + db.dir.File("out2.jsonl"),
                    "--metrics-port", std::to_string(port2), "--lease", "2s"},
                   db.dir.File("standby.log"));
  ASSERT_OK(standby);
  ASSERT_TRUE(WaitUntil([&] { return HttpGet(port2, "/readyz").body == "standby\n"; }));
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(30000)).value_or(-1), 0);
  ASSERT_TRUE(
      WaitUntil([&] { return HttpGet(port2, "/readyz").body == "active\n"; }, Duration(5000)))
      << "a cleanly stopped relay hands its lease over at once";
  standby->Signal(SIGTERM);
  EXPECT_EQ(standby->Wait(Duration(30000)).value_or(-1), 0);

  CommandResult taken = RunCourier({"relay", "--source", db.url, "--sink", "file:///dev/null",
                                    "--metrics-port", std::to_string(port2), "--once"});
  EXPECT_EQ(taken.exit_code, 0) << "the port is free again: " << taken.err;
}

// /readyz follows the sink's acks: a broker that is away fails nothing (no delivery timeout:
// the events wait for it), yet the relay is not ready while they wait, and says why; ready
// again once the broker acks, and the backlog drains.
TEST(Operations, ReadinessIsUnreadyWhileTheSinkDoesNotAck) {
  TestDb db = TestDb::Make(true);
  auto broker = DevBroker::Start();
  ASSERT_OK(broker);
  int64_t seq = 1;
  std::set<std::string> ids = CommitEvents(db, 20, 3, &seq);
  const int port = FreePort();
  const std::string log = db.dir.File("relay.log");
  auto relay = SpawnCourier(
      {"relay", "--source", db.url, "--sink", "kafka://" + (*broker)->bootstrap() + "/orders",
       "--metrics-port", std::to_string(port), "--ready-ack-timeout", "2s"},
      log);
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; })) << ReadFile(log);
  ASSERT_TRUE(WaitUntil([&] { return HttpGet(port, "/readyz").status == 200; }));
  EXPECT_EQ(HttpGet(port, "/readyz").body, "active\n");

  (*broker)->SetDown(true);
  const std::set<std::string> more = CommitEvents(db, 10, 3, &seq);
  ids.insert(more.begin(), more.end());
  Got down;
  ASSERT_TRUE(WaitUntil([&] {
    down = HttpGet(port, "/readyz");
    return down.status == 503;
  })) << down.body;
  EXPECT_EQ(down.body.rfind("not acking: 10 events sent to kafka://", 0), 0u) << down.body;
  EXPECT_NE(down.body.find(" s ago are not acked yet"), std::string::npos) << down.body;
  EXPECT_EQ(db.Count("courier_outbox"), 10) << "nothing is deleted without an ack";
  EXPECT_NE(HttpGet(port, "/metrics")
                .body.find("courier_sink_unacked_events{outbox=\"courier_outbox\"} 10\n"),
            std::string::npos);

  (*broker)->SetDown(false);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; })) << ReadFile(log);
  ASSERT_TRUE(WaitUntil([&] { return HttpGet(port, "/readyz").status == 200; }));
  EXPECT_EQ(HttpGet(port, "/readyz").body, "active\n");
  EXPECT_NE(HttpGet(port, "/metrics")
                .body.find("courier_sink_unacked_events{outbox=\"courier_outbox\"} 0\n"),
            std::string::npos);
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(30000)).value_or(-1), 0);
  ExpectDelivered(ReadTopic(**broker, "orders"), ids);
}

// What `ps` shows of a running relay, its log, /metrics, /readyz, `courier status` and the
// dead-letter table's sink column hold none of the URLs' secrets: the PostgreSQL password (as
// written and decoded) and every secret-carrying librdkafka property.
TEST(Operations, SecretsNeverShowInCmdlineLogsMetricsStatusOrDeadLetters) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  TestDb db = TestDb::Make(true);
  ASSERT_OK(db.Transaction(
      {InsertEventSql(NewUuidV7(), "a", 1),
       "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload, headers)"
       " VALUES ('order', 'b', 'Odd', '{\"seq\":2}', '[1]')"}));
  const std::string rest = db.url.substr(std::string("postgres://postgres@").size());
  const std::string source = "postgres://postgres:pg%2Fsecret-1@" + rest;
  const std::string sink = "kafka://" + (*broker)->bootstrap() +
                           "/order?sasl.password=kafka-secret-2&ssl.key.password=keypass-secret-3"
                           "&sasl.oauthbearer.config=principal%3Doauth-secret-4"
                           "&ssl.key.pem=pem-secret-5&acks=all";
  const std::vector<std::string> secrets = {"pg/secret-1",      "pg%2Fsecret-1",  "kafka-secret-2",
                                            "keypass-secret-3", "oauth-secret-4", "pem-secret-5"};
  auto expect_hidden = [&](const std::string& what, const std::string& text) {
    for (const std::string& secret : secrets) {
      EXPECT_EQ(text.find(secret), std::string::npos) << secret << " in " << what << ": " << text;
    }
  };
  const int port = FreePort();
  const std::string log = db.dir.File("relay.log");
  auto relay = SpawnCourier(
      {"relay", "--source", source, "--sink", sink, "--metrics-port", std::to_string(port)}, log);
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] {
    return db.Count("courier_outbox") == 0 && db.Count("courier_dead_letter") == 1;
  })) << ReadFile(log);

  // The arguments were overwritten in place once parsed.
  const std::string cmdline = ReadFile("/proc/" + std::to_string(relay->pid()) + "/cmdline");
  expect_hidden("cmdline", cmdline);
  EXPECT_NE(cmdline.find("postgres://postgres:xxxxxxxxxxxxx@127.0.0.1"), std::string::npos)
      << cmdline;
  EXPECT_NE(cmdline.find("sasl.password=xxxxxxxxxxxxxx&"), std::string::npos) << cmdline;
  EXPECT_NE(cmdline.find("&acks=all"), std::string::npos) << cmdline;

  const std::string started = ReadFile(log);
  EXPECT_NE(started.find("sasl.oauthbearer.config=***&ssl.key.pem=***"), std::string::npos)
      << started;
  expect_hidden("the log", started);
  expect_hidden("/metrics", HttpGet(port, "/metrics").body);
  expect_hidden("/readyz", HttpGet(port, "/readyz").body);
  expect_hidden("/status.json", HttpGet(port, "/status.json").body);
  auto sink_column = PgQuery(db.url, "SELECT sink FROM courier_dead_letter");
  ASSERT_OK(sink_column);
  ASSERT_EQ(sink_column->size(), 1u);
  EXPECT_NE(sink_column->front().find("sasl.password=***"), std::string::npos)
      << sink_column->front();
  expect_hidden("the dead letter's sink", sink_column->front());
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"status", "--source", source},
        std::vector<std::string>{"status", "--source", source, "--json"},
        std::vector<std::string>{"dead-letters", "list", "--source", source}}) {
    CommandResult r = RunCourier(command);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    expect_hidden(command[0], r.out + r.err);
  }
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(30000)).value_or(-1), 0);
  expect_hidden("the log", ReadFile(log));
}

// A CDC relay's slot shows in /metrics and `courier status`: its lag is what the server wrote
// since the relay last confirmed, so it grows while the relay is away.
TEST(Operations, CdcSlotLagIsInMetricsAndStatus) {
  TestDb db = TestDb::Make(true);
  ASSERT_EQ(RunCourier({"migrate", "--source", db.url, "--mode", "cdc"}).exit_code, 0);
  int64_t seq = 1;
  const std::set<std::string> ids = CommitEvents(db, 30, 3, &seq);
  const int port = FreePort();
  const std::string log = db.dir.File("relay.log");
  auto relay =
      SpawnCourier({"relay", "--mode", "cdc", "--source", db.url, "--sink",
                    "file://" + db.dir.File("out.jsonl"), "--metrics-port", std::to_string(port)},
                   log);
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] {
    return HttpGet(port, "/metrics")
               .body.find("courier_events_published_total{outbox=\"courier_outbox\"} 30\n") !=
           std::string::npos;
  })) << ReadFile(log);
  const std::string m = HttpGet(port, "/metrics").body;
  EXPECT_NE(m.find("courier_cdc_slot_lag_bytes{outbox=\"courier_outbox\",slot=\"courier_"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("courier_cdc_slot_retained_bytes{outbox=\"courier_outbox\",slot=\"courier_"),
            std::string::npos)
      << m;
  relay->Signal(SIGTERM);
  ASSERT_EQ(relay->Wait(Duration(30000)).value_or(-1), 0) << ReadFile(log);

  // Away: the slot stays, and what is written now is lag.
  auto lag = [&] {
    CommandResult st = RunCourier({"status", "--source", db.url, "--json"});
    EXPECT_EQ(st.exit_code, 0) << st.err;
    const size_t at = st.out.find("\"lag_bytes\":");
    EXPECT_NE(at, std::string::npos) << st.out;
    return at == std::string::npos ? -1 : std::atoll(st.out.c_str() + at + 12);
  };
  const long long before = lag();
  CommitEvents(db, 200, 3, &seq);
  EXPECT_GT(lag(), before + 200 * 50) << "200 events of WAL not yet confirmed";
  CommandResult human = RunCourier({"status", "--source", db.url});
  EXPECT_NE(human.out.find("cdc slot           courier_"), std::string::npos) << human.out;
  EXPECT_EQ(ExpectDelivered(
                [&] {
                  std::vector<KafkaRecord> all;
                  for (const Event& e : ReadJsonl(db.dir.File("out.jsonl"))) {
                    all.push_back(KafkaRecord{.event = e});
                  }
                  return all;
                }(),
                ids),
            0);
}

TEST(Operations, ShardsSplitAggregatesAndKeepTheirOrder) {
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;
  std::set<std::string> ids = CommitEvents(db, 400, 20, &seq);
  std::vector<Subprocess> relays;
  for (int k = 0; k < 2; ++k) {
    auto r = SpawnCourier({"relay", "--source", db.url, "--sink",
                           "file://" + db.dir.File("shard" + std::to_string(k) + ".jsonl"),
                           "--shard", std::to_string(k) + "/2", "--lease", "2s"},
                          db.dir.File("shard" + std::to_string(k) + ".log"));
    ASSERT_OK(r);
    relays.push_back(std::move(r).value());
  }
  const std::set<std::string> more = CommitEvents(db, 200, 20, &seq);
  ids.insert(more.begin(), more.end());
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }))
      << ReadFile(db.dir.File("shard0.log")) << ReadFile(db.dir.File("shard1.log"));
  CommandResult st = RunCourier({"status", "--source", db.url});
  EXPECT_NE(st.out.find("courier relay courier_outbox shard 0/2"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("courier relay courier_outbox shard 1/2"), std::string::npos) << st.out;
  for (Subprocess& r : relays) {
    r.Signal(SIGTERM);
    EXPECT_EQ(r.Wait(Duration(30000)).value_or(-1), 0);
  }
  std::map<std::string, int> shard_of;
  std::vector<KafkaRecord> all;
  for (int k = 0; k < 2; ++k) {
    const std::vector<Event> events =
        ReadJsonl(db.dir.File("shard" + std::to_string(k) + ".jsonl"));
    EXPECT_GT(events.size(), 0u) << "shard " << k << " got work";
    for (const Event& e : events) {
      auto [it, inserted] = shard_of.emplace(e.aggregate_id, k);
      EXPECT_EQ(it->second, k) << e.aggregate_id << " published by two shards";
      all.push_back(KafkaRecord{.event = e});
    }
  }
  EXPECT_EQ(ExpectDelivered(all, ids), 0);

  CommandResult bad = RunCourier(
      {"relay", "--source", db.url, "--sink", "file:///dev/null", "--shard", "2/2", "--once"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--shard must be K/N with 0 <= K < N"), std::string::npos) << bad.err;
  CommandResult cdc = RunCourier({"relay", "--source", db.url, "--sink", "file:///dev/null",
                                  "--shard", "0/2", "--mode", "cdc", "--once"});
  EXPECT_EQ(cdc.exit_code, 2);
  EXPECT_NE(cdc.err.find("--shard needs a polled PostgreSQL outbox"), std::string::npos) << cdc.err;
}

// The active relay's database session is cut (a DBA, a failover, a network cut): it stops
// publishing and stands by; the standby takes over within a few seconds, and only after the
// first one stopped. Events committed around it all arrive, in order.
TEST(Operations, CutSessionFencesTheRelayAndTheStandbyTakesOver) {
  TestDb db = TestDb::Make(true);
  int64_t seq = 1;
  std::set<std::string> ids = CommitEvents(db, 50, 5, &seq);
  const std::string out = db.dir.File("out.jsonl");
  auto first =
      SpawnCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--lease", "2s"},
                   db.dir.File("first.log"));
  ASSERT_OK(first);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));
  auto second =
      SpawnCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--lease", "2s"},
                   db.dir.File("second.log"));
  ASSERT_OK(second);
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(db.dir.File("second.log")).find("standing by") != std::string::npos;
  }));
  auto conn = PgConnect(db.url);
  ASSERT_OK(conn);
  ASSERT_OK(PgExec(conn->get(),
                   "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                   " AND granted AND database = (SELECT oid FROM pg_database WHERE datname ="
                   " current_database())"));
  const std::set<std::string> during = CommitEvents(db, 50, 5, &seq);
  ids.insert(during.begin(), during.end());
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadFile(db.dir.File("second.log")).find("took over") != std::string::npos; },
      Duration(15000)))
      << ReadFile(db.dir.File("second.log"));
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));
  const std::string first_log = ReadFile(db.dir.File("first.log"));
  const std::string second_log = ReadFile(db.dir.File("second.log"));
  const size_t lost = first_log.find("lost the outbox lease; stopped publishing");
  ASSERT_NE(lost, std::string::npos) << first_log;
  const size_t took = second_log.find("took over the outbox");
  // Lines start with an ISO timestamp to the millisecond: compare them.
  const std::string lost_at = first_log.substr(first_log.rfind('\n', lost) + 1, 24);
  const std::string took_at = second_log.substr(second_log.rfind('\n', took) + 1, 24);
  EXPECT_LT(lost_at, took_at) << "the fenced relay stopped before the standby started";
  EXPECT_TRUE(WaitUntil([&] {
    return ReadFile(db.dir.File("first.log")).find("standing by", lost) != std::string::npos;
  })) << "the fenced relay stands by instead of exiting";
  for (Subprocess* r : {&*first, &*second}) {
    r->Signal(SIGTERM);
    EXPECT_EQ(r->Wait(Duration(30000)).value_or(-1), 0);
  }
  std::vector<KafkaRecord> records;
  for (const Event& e : ReadJsonl(out)) records.push_back(KafkaRecord{.event = e});
  ExpectDelivered(records, ids);
}

// G8 against a zombie: the active relay is frozen (SIGSTOP) holding a batch it fetched, past
// its lease; the standby takes over, publishes that batch and newer events of the same
// aggregates; then the frozen relay resumes (SIGCONT). Nothing of it may arrive: every event
// exactly once, and each aggregate's last delivered event is its newest.
TEST(Operations, FrozenRelayPublishesNothingOnceResumedPastItsLease) {
  TestDb db = TestDb::Make(true);
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("order", 1));  // one partition: arrival order is total
  const std::vector<std::string> args = {"relay",
                                         "--source",
                                         db.url,
                                         "--sink",
                                         "kafka://" + (*broker)->bootstrap() + "/order",
                                         "--lease",
                                         "2s",
                                         "--poll-interval",
                                         "10ms"};
  const std::string zombie_log = db.dir.File("zombie.log");
  const std::string standby_log = db.dir.File("standby.log");
  auto zombie = SpawnCourier(args, zombie_log);
  ASSERT_OK(zombie);
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadFile(zombie_log).find("holding the outbox lease") != std::string::npos; }));
  auto standby = SpawnCourier(args, standby_log);
  ASSERT_OK(standby);
  ASSERT_TRUE(
      WaitUntil([&] { return ReadFile(standby_log).find("standing by") != std::string::npos; }));

  // The zombie's next poll waits behind this lock and reads the old events once it is freed:
  // it holds a fetched batch while frozen.
  auto locker = PgConnect(db.url);
  ASSERT_OK(locker);
  ASSERT_OK(PgRun(locker->get(), "BEGIN; LOCK TABLE courier_outbox IN ACCESS EXCLUSIVE MODE"));
  std::set<std::string> old_ids, new_ids;
  std::string inserts;
  for (int i = 0; i < 20; ++i) {
    const std::string id = NewUuidV7();
    old_ids.insert(id);
    inserts += InsertEventSql(id, "agg-" + std::to_string(i % 5), i + 1) + ";";
  }
  ASSERT_OK(PgRun(locker->get(), inserts));
  ASSERT_TRUE(WaitUntil([&] {
    auto waiting = PgQuery(db.url,
                           "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND datname = current_database() AND query LIKE '%courier_outbox%'");
    return waiting.ok() && !waiting->empty() && waiting->front() == "1";
  })) << "the active relay polls the outbox";
  zombie->Signal(SIGSTOP);
  ASSERT_OK(PgRun(locker->get(), "COMMIT"));

  ASSERT_TRUE(WaitUntil(
      [&] { return ReadFile(standby_log).find("took over the outbox") != std::string::npos; },
      Duration(20000)))
      << ReadFile(standby_log);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));
  std::vector<std::string> newer;
  for (int i = 0; i < 20; ++i) {
    const std::string id = NewUuidV7();
    new_ids.insert(id);
    newer.push_back(InsertEventSql(id, "agg-" + std::to_string(i % 5), 21 + i));
  }
  ASSERT_OK(db.Transaction(newer));
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));

  zombie->Signal(SIGCONT);
  // It notices, drops its batch and stands by: by then anything it would send has gone.
  ASSERT_TRUE(WaitUntil([&] {
    const std::string log = ReadFile(zombie_log);
    const size_t lost = log.find("lost the outbox lease");
    return lost != std::string::npos && log.find("standing by", lost) != std::string::npos;
  })) << ReadFile(zombie_log);
  const std::string log = ReadFile(zombie_log);
  EXPECT_NE(log.find("not published: this relay is fenced"), std::string::npos)
      << "the zombie held a fetched batch when it resumed:\n"
      << log;

  const std::vector<KafkaRecord> records = ReadTopic(**broker, "order");
  std::map<std::string, int> copies;
  std::map<std::string, int64_t> last_seq;
  bool newer_seen = false;
  for (const KafkaRecord& r : records) {
    ++copies[r.event.event_id];
    const int64_t seq = SeqOf(r.event);
    if (seq > 20) newer_seen = true;
    EXPECT_FALSE(newer_seen && seq <= 20)
        << "an old copy (seq " << seq << ") arrived after the standby's newer events";
    last_seq[r.event.aggregate_id] = seq;
  }
  EXPECT_EQ(records.size(), 40u) << "each event exactly once: nothing of the zombie";
  for (const std::string& id : old_ids) EXPECT_EQ(copies[id], 1) << id;
  for (const std::string& id : new_ids) EXPECT_EQ(copies[id], 1) << id;
  for (int a = 0; a < 5; ++a) {
    EXPECT_EQ(last_seq["agg-" + std::to_string(a)], 36 + a) << "agg-" << a << " ends stale";
  }
  for (Subprocess* r : {&*zombie, &*standby}) {
    r->Signal(SIGTERM);
    EXPECT_EQ(r->Wait(Duration(30000)).value_or(-1), 0);
  }
}

}  // namespace
}  // namespace courier::test
