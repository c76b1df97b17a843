// `courier demo`: the dual-write problem under real crashes, outbox versus naive.
//
// Two copies of one "orders" service run as child processes on their own SQLite files. Each
// transaction creates or updates an order and emits OrderCreated/OrderUpdated; about one in
// ten is rolled back on purpose (payment declined).
//  - outbox: the event row is written in the same transaction; the relay (another child
//    process) publishes it to the dev broker.
//  - naive: the service writes the order, publishes to Kafka directly (fire and forget, as the
//    usual code inside a transactional method does), then commits or rolls back.
// Both services and the relay are SIGKILLed at random moments and restarted. Afterwards the
// topics are read back and compared with what the databases say was committed.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>

#include "audit/verdict.h"
#include "brokers/dev/dev_broker.h"
#include "brokers/kafka/kafka_reader.h"
#include "cli/commands.h"
#include "cli/config.h"
#include "core/log.h"
#include "core/sqlite.h"
#include "core/subprocess.h"
#include "core/uuid.h"
#include "courier/outbox.h"
#include "relay/status_report.h"
#include "schema/migrate.h"
#include "sources/source.h"

namespace courier::cli {
namespace {

constexpr char kOutboxTopic[] = "orders";
constexpr char kNaiveTopic[] = "orders-naive";
constexpr int64_t kDemoBytesPerOrder = 2048;

Status CreateAppTables(sqlite3* db) {
  return SqliteExec(db,
                    "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, version INTEGER "
                    "NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS order_log (event_id TEXT PRIMARY KEY, order_id "
                    "TEXT NOT NULL, version INTEGER NOT NULL);");
}

// What the order service committed (its order_log) against what the topic holds, judged by
// the one verdict the tests use too. An event's position in its order is its version.
Result<Verdict> Compare(const std::string& db_path, const std::vector<KafkaRecord>& records) {
  COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(db_path, false));
  COURIER_ASSIGN_OR_RETURN(SqliteStmt stmt,
                           SqlitePrepare(db.get(), "SELECT event_id FROM order_log"));
  Expectation expected;
  while (sqlite3_step(stmt.get()) == SQLITE_ROW) {
    expected.committed.insert(reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0)));
  }
  std::vector<DeliveredRecord> deliveries;
  deliveries.reserve(records.size());
  for (const KafkaRecord& r : records) {
    const Event& e = r.event;
    const size_t pos = e.payload.find("\"version\":");
    const int64_t version =
        pos == std::string::npos ? -1 : std::atoll(e.payload.c_str() + pos + 10);
    deliveries.push_back({e.event_id, e.aggregate_id, version});
  }
  return Judge(expected, deliveries);
}

struct Range {
  Duration lo, hi;
};

Result<Range> ParseRange(const std::string& text) {
  const size_t dots = text.find("..");
  if (dots == std::string::npos) {
    COURIER_ASSIGN_OR_RETURN(Duration d, ParseDuration(text));
    return Range{d, d};
  }
  COURIER_ASSIGN_OR_RETURN(Duration lo, ParseDuration(text.substr(0, dots)));
  COURIER_ASSIGN_OR_RETURN(Duration hi, ParseDuration(text.substr(dots + 2)));
  if (hi < lo || lo.count() <= 0) {
    return InvalidArgumentError("--kill-every wants LOW..HIGH, e.g. 0.3s..1.5s");
  }
  return Range{lo, hi};
}

class Demo {
 public:
  Demo(const DemoOptions& o, const StopSignal& stop) : options_(o), stop_(stop) {}

  Status Run() {
    COURIER_ASSIGN_OR_RETURN(const Duration duration, ParseDuration(options_.duration));
    COURIER_ASSIGN_OR_RETURN(kill_every_, ParseRange(options_.kill_every));
    if (options_.orders < 1) return InvalidArgumentError("--orders must be at least 1");
    seed_ = options_.seed != 0 ? options_.seed : std::random_device{}();
    rng_.seed(seed_);
    COURIER_RETURN_IF_ERROR(PrepareWorkdir());
    COURIER_ASSIGN_OR_RETURN(broker_, DevBroker::Start(1));
    // The dev broker keeps 5 MiB per partition: enough partitions that every event sent
    // (~250 bytes; the copies republished after the relay's kills included) is still there
    // for the count at the end.
    const int partitions = DevBrokerPartitionsFor(options_.orders, kDemoBytesPerOrder);
    COURIER_RETURN_IF_ERROR(broker_->CreateTopic(kOutboxTopic, partitions));
    COURIER_RETURN_IF_ERROR(broker_->CreateTopic(kNaiveTopic, partitions));
    outbox_db_ = workdir_ + "/outbox.db";
    naive_db_ = workdir_ + "/naive.db";
    COURIER_RETURN_IF_ERROR(Migrate("sqlite://" + outbox_db_, TableNames{}));
    for (const std::string& path : {outbox_db_, naive_db_}) {
      COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(path, true));
      COURIER_RETURN_IF_ERROR(CreateAppTables(db.get()));
    }
    rate_ = std::max<int>(
        1, static_cast<int>(options_.orders * 1000LL / std::max<int64_t>(1, duration.count())));
    std::printf(
        "courier demo: %d order transactions per strategy over ~%s, ~10%% rolled back "
        "on purpose;\nthe relay and both services are SIGKILLed every %s and restarted "
        "(seed %u, files in %s)\n\n",
        options_.orders, options_.duration.c_str(), options_.kill_every.c_str(), seed_,
        workdir_.c_str());
    std::fflush(stdout);

    COURIER_RETURN_IF_ERROR(StartRelay());
    COURIER_RETURN_IF_ERROR(StartApp("outbox", &outbox_app_));
    COURIER_RETURN_IF_ERROR(StartApp("naive", &naive_app_));
    COURIER_RETURN_IF_ERROR(Chaos());
    COURIER_RETURN_IF_ERROR(Drain());
    return Report();
  }

  void KeepFiles() { options_.keep = true; }

  ~Demo() {
    if (!options_.keep && !workdir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(workdir_, ec);
    }
  }

  bool outbox_clean() const { return outbox_clean_; }

 private:
  Status PrepareWorkdir() {
    if (!options_.workdir.empty()) {
      workdir_ = options_.workdir;
      options_.keep = true;
      std::error_code ec;
      std::filesystem::create_directories(workdir_, ec);
      if (ec) return InvalidArgumentError("cannot create " + workdir_ + ": " + ec.message());
      for (const char* f : {"outbox.db", "outbox.db-wal", "outbox.db-shm", "naive.db",
                            "naive.db-wal", "naive.db-shm"}) {
        std::filesystem::remove(workdir_ + "/" + f, ec);
      }
      return Status::Ok();
    }
    char tmpl[] = "/tmp/courier-demo-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return InternalError("mkdtemp failed");
    workdir_ = tmpl;
    return Status::Ok();
  }

  Status StartRelay() {
    std::error_code ec;
    const auto size = std::filesystem::file_size(workdir_ + "/relay.log", ec);
    relay_log_start_ = ec ? 0 : static_cast<size_t>(size);
    COURIER_ASSIGN_OR_RETURN(
        relay_, Subprocess::Spawn({SelfExecutable(), "relay", "--source", "sqlite://" + outbox_db_,
                                   "--sink", "kafka://" + broker_->bootstrap() + "/" + kOutboxTopic,
                                   "--poll-interval", "20ms"},
                                  "", workdir_ + "/relay.log"));
    return Status::Ok();
  }

  Status StartApp(const std::string& strategy, std::optional<Subprocess>* slot) {
    COURIER_ASSIGN_OR_RETURN(
        Subprocess p,
        Subprocess::Spawn(
            {SelfExecutable(), "demo-app", "--strategy", strategy, "--db",
             strategy == "outbox" ? outbox_db_ : naive_db_, "--bootstrap", broker_->bootstrap(),
             "--topic", kNaiveTopic, "--orders", std::to_string(options_.orders), "--rate",
             std::to_string(rate_), "--seed", std::to_string(rng_())},
            "", workdir_ + "/" + strategy + "-app.log"));
    *slot = std::move(p);
    return Status::Ok();
  }

  // Restarts `app` if it died; true when it finished its work (exit 0).
  Result<bool> CheckApp(const std::string& strategy, std::optional<Subprocess>* app) {
    auto code = (*app)->Wait(Duration(0));
    if (!code) return false;
    if (*code == 0) return true;
    if (*code != 128 + SIGKILL) {
      return InternalError("the " + strategy + " service failed (exit " + std::to_string(*code) +
                           "); see " + workdir_ + "/" + strategy + "-app.log");
    }
    COURIER_RETURN_IF_ERROR(StartApp(strategy, app));
    return false;
  }

  Status Chaos() {
    std::uniform_int_distribution<int64_t> gap(kill_every_.lo.count(), kill_every_.hi.count());
    TimePoint next_kill = Clock::Real().Now() + Duration(gap(rng_));
    bool outbox_done = false, naive_done = false;
    while (!(outbox_done && naive_done)) {
      if (stop_.requested()) return CancelledError("interrupted");
      if (!outbox_done) {
        COURIER_ASSIGN_OR_RETURN(outbox_done, CheckApp("outbox", &outbox_app_));
      }
      if (!naive_done) {
        COURIER_ASSIGN_OR_RETURN(naive_done, CheckApp("naive", &naive_app_));
      }
      if (auto code = relay_->Wait(Duration(0)); code && *code != 128 + SIGKILL) {
        return InternalError("the relay exited (" + std::to_string(*code) + "); see " + workdir_ +
                             "/relay.log");
      }
      if (Clock::Real().Now() >= next_kill) {
        relay_->Signal(SIGKILL);
        relay_->Wait(Duration(5000));
        ++relay_kills_;
        COURIER_RETURN_IF_ERROR(StartRelay());
        // The services crash at the same moments, each at whatever point it has reached.
        if (std::uniform_int_distribution<int>(0, 1)(rng_) == 1) {
          for (auto* app : {&outbox_app_, &naive_app_}) {
            if ((*app)->Running()) {
              (*app)->Signal(SIGKILL);
              (*app)->Wait(Duration(5000));
            }
          }
          ++app_kills_;
        }
        next_kill = Clock::Real().Now() + Duration(gap(rng_));
      }
      usleep(10000);
    }
    return Status::Ok();
  }

  Status Drain() {
    const TimePoint deadline = Clock::Real().Now() + std::chrono::seconds(60);
    while (true) {
      COURIER_ASSIGN_OR_RETURN(OutboxStatus s,
                               ReadOutboxStatus("sqlite://" + outbox_db_, TableNames{}));
      if (s.pending == 0) break;
      if (Clock::Real().Now() >= deadline) {
        return InternalError("the relay did not drain the outbox within 60 s; see " + workdir_ +
                             "/relay.log");
      }
      usleep(50000);
    }
    // A relay killed and restarted just now may not have set up its signal handling yet: the
    // graceful stop is for a running relay.
    auto started = [&] {
      std::ifstream log(workdir_ + "/relay.log");
      log.seekg(static_cast<std::streamoff>(relay_log_start_));
      const std::string tail((std::istreambuf_iterator<char>(log)),
                             std::istreambuf_iterator<char>());
      return tail.find("relay starting") != std::string::npos;
    };
    const TimePoint start_deadline = Clock::Real().Now() + std::chrono::seconds(30);
    bool running = started();
    while (!running && Clock::Real().Now() < start_deadline) {
      usleep(20000);
      running = started();
    }
    if (!running) {
      return InternalError("the relay did not start within 30 s; see " + workdir_ + "/relay.log");
    }
    relay_->Signal(SIGTERM);
    auto code = relay_->Wait(std::chrono::seconds(20));
    if (!code || *code != 0) {
      return InternalError("the relay did not stop cleanly on SIGTERM; see " + workdir_ +
                           "/relay.log");
    }
    return Status::Ok();
  }

  Status Report() {
    Verdict verdicts[2];
    const char* topics[2] = {kOutboxTopic, kNaiveTopic};
    const std::string dbs[2] = {outbox_db_, naive_db_};
    for (int i = 0; i < 2; ++i) {
      COURIER_ASSIGN_OR_RETURN(auto reader,
                               KafkaReader::Open(broker_->bootstrap(), {topics[i]}, true));
      COURIER_ASSIGN_OR_RETURN(auto records, reader->ReadToEnd(std::chrono::seconds(60)));
      COURIER_ASSIGN_OR_RETURN(verdicts[i], Compare(dbs[i], records));
    }
    auto row = [&](const char* name, int64_t a, int64_t b) {
      std::printf("  %-28s %14lld %18lld\n", name, static_cast<long long>(a),
                  static_cast<long long>(b));
    };
    std::printf("  %-28s %14s %18s\n", "", "outbox+relay", "naive");
    row("transactions committed", verdicts[0].committed, verdicts[1].committed);
    row("events delivered", verdicts[0].delivered, verdicts[1].delivered);
    row("lost (committed, never sent)", verdicts[0].lost, verdicts[1].lost);
    row("ghosts (sent, rolled back)", verdicts[0].ghosts, verdicts[1].ghosts);
    row("duplicates (same event_id)", verdicts[0].duplicates, verdicts[1].duplicates);
    row("per-order order violations", verdicts[0].order_violations, verdicts[1].order_violations);
    std::printf("\n  relay SIGKILLs: %d   service SIGKILLs: %d\n", relay_kills_, app_kills_);
    outbox_clean_ = verdicts[0].Clean();
    if (outbox_clean_) {
      std::printf(
          "\n  outbox: nothing lost, no ghosts, order kept per order. Duplicates carry the same "
          "event_id;\n  an idempotent consumer drops them.\n");
    } else {
      std::printf("\n  OUTBOX GUARANTEE BROKEN: see %s\n", workdir_.c_str());
      for (const std::string& line : verdicts[0].examples) std::printf("    %s\n", line.c_str());
      options_.keep = true;
    }
    return Status::Ok();
  }

  DemoOptions options_;
  const StopSignal& stop_;
  Range kill_every_{};
  unsigned seed_ = 0;
  std::mt19937 rng_;
  std::string workdir_;
  size_t relay_log_start_ = 0;  // where the running relay's log lines begin
  std::unique_ptr<DevBroker> broker_;
  std::string outbox_db_, naive_db_;
  int rate_ = 1;
  std::optional<Subprocess> relay_, outbox_app_, naive_app_;
  int relay_kills_ = 0;
  int app_kills_ = 0;
  bool outbox_clean_ = false;
};

// ---- the orders service ----

class NaivePublisher {
 public:
  Status Open(const std::string& bootstrap) {
    COURIER_ASSIGN_OR_RETURN(
        KafkaConf conf,
        MakeKafkaConf({{"bootstrap.servers", bootstrap}, {"acks", "all"}, {"linger.ms", "20"}}));
    char err[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
    if (rk == nullptr) return InternalError(err);
    conf.release();
    producer_.reset(rk);
    return Status::Ok();
  }
  // Fire and forget, as `producer.send(event)` in application code usually is.
  void Send(const std::string& topic, const Event& e) {
    KafkaHeaders headers = MakeEventHeaders(e);
    if (rd_kafka_producev(producer_.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
                          RD_KAFKA_V_KEY(e.aggregate_id.data(), e.aggregate_id.size()),
                          RD_KAFKA_V_VALUE(const_cast<char*>(e.payload.data()), e.payload.size()),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_HEADERS(headers.get()),
                          RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      headers.release();
    }
    rd_kafka_poll(producer_.get(), 0);
  }
  void Flush() { rd_kafka_flush(producer_.get(), 10000); }

 private:
  KafkaHandle producer_;
};

Status OrdersService(const DemoAppOptions& o) {
  const bool outbox = o.strategy == "outbox";
  if (!outbox && o.strategy != "naive") return InvalidArgumentError("unknown strategy");
  COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(o.db, false));
  COURIER_RETURN_IF_ERROR(CreateAppTables(db.get()));
  NaivePublisher publisher;
  if (!outbox) COURIER_RETURN_IF_ERROR(publisher.Open(o.bootstrap));
  OutboxWriter writer;
  std::mt19937 rng(o.seed);
  const Duration gap(1000 / std::max(1, o.rate));
  auto count = [&]() -> int64_t {
    auto stmt = SqlitePrepare(db.get(), "SELECT count(*) FROM order_log");
    if (!stmt.ok() || sqlite3_step(stmt->get()) != SQLITE_ROW) return -1;
    return sqlite3_column_int64(stmt->get(), 0);
  };
  StopSignal never;
  for (int64_t done = count(); done < o.orders; done = count()) {
    if (done < 0) return InternalError("cannot read order_log");
    Clock::Real().SleepFor(gap, never);
    COURIER_RETURN_IF_ERROR(SqliteExec(db.get(), "BEGIN IMMEDIATE"));
    // Pick: a new order, or the next version of an existing one.
    std::string order_id;
    int64_t version = 1;
    if (std::uniform_int_distribution<int>(0, 2)(rng) > 0) {
      auto pick =
          SqlitePrepare(db.get(), "SELECT id, version FROM orders ORDER BY random() LIMIT 1");
      if (pick.ok() && sqlite3_step(pick->get()) == SQLITE_ROW) {
        order_id = reinterpret_cast<const char*>(sqlite3_column_text(pick->get(), 0));
        version = sqlite3_column_int64(pick->get(), 1) + 1;
      }
    }
    if (order_id.empty()) order_id = "order-" + NewUuidV7().substr(24);
    Event e;
    e.event_id = NewUuidV7();
    e.aggregate_type = "order";
    e.aggregate_id = order_id;
    e.event_type = version == 1 ? "OrderCreated" : "OrderUpdated";
    e.payload = "{\"order_id\":\"" + order_id + "\",\"version\":" + std::to_string(version) + "}";
    const std::string sql = "INSERT INTO orders(id, version) VALUES ('" + order_id + "', " +
                            std::to_string(version) +
                            ") ON CONFLICT(id) DO UPDATE SET version = excluded.version;"
                            "INSERT INTO order_log(event_id, order_id, version) VALUES ('" +
                            e.event_id + "', '" + order_id + "', " + std::to_string(version) + ");";
    Status st = SqliteExec(db.get(), sql);
    if (st.ok()) {
      if (outbox) {
        st = writer
                 .Append(
                     db.get(),
                     OutboxEvent{
                         e.aggregate_type, e.aggregate_id, e.event_type, e.payload, {}, e.event_id})
                 .status();
      } else {
        publisher.Send(o.topic, e);
      }
    }
    const bool declined = std::uniform_int_distribution<int>(0, 9)(rng) == 0;
    if (!st.ok() || declined) {
      COURIER_RETURN_IF_ERROR(SqliteExec(db.get(), "ROLLBACK"));
      if (!st.ok()) return st;
      continue;
    }
    COURIER_RETURN_IF_ERROR(SqliteExec(db.get(), "COMMIT"));
  }
  if (!outbox) publisher.Flush();
  return Status::Ok();
}

}  // namespace

CLI::App* AddDemoCommand(CLI::App& app, DemoOptions* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "The dual-write problem, live: an orders service commits orders with their events while\n"
      "the relay is SIGKILLed at random; beside it the naive way (write the DB, publish\n"
      "directly) under the same crashes. Prints lost, ghost and duplicate events of each.\n"
      "Exits non-zero if the outbox side loses or ghosts anything.");
  cmd->add_option("--orders", f->orders, "Order transactions per strategy")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--duration", f->duration, "Spread the orders over this long")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--kill-every", f->kill_every,
                  "SIGKILL interval range for the relay and the apps")
      ->type_name("LOW..HIGH")
      ->capture_default_str();
  cmd->add_option("--workdir", f->workdir, "Keep the databases and logs here")->type_name("DIR");
  cmd->add_option("--seed", f->seed, "Random seed (0: random)")->type_name("N");
  AddCommonFlags(cmd, common);
  return cmd;
}

CLI::App* AddDemoAppCommand(CLI::App& app, DemoAppOptions* f) {
  CLI::App* cmd = app.add_subcommand(
      "demo-app",
      "The demo's orders service: commits orders (tables orders, order_log) with their\n"
      "OrderCreated/OrderUpdated events until order_log holds --orders rows, ~10% rolled back.\n"
      "--strategy outbox writes the events to the outbox of --db (run migrate first); naive\n"
      "sends them to --bootstrap/--topic directly. Used by examples/inventory.");
  cmd->add_option("--strategy", f->strategy, "outbox or naive")->type_name("NAME")->required();
  cmd->add_option("--db", f->db, "SQLite file of the service")->type_name("PATH")->required();
  cmd->add_option("--bootstrap", f->bootstrap, "naive: Kafka bootstrap")->type_name("HOST:PORT");
  cmd->add_option("--topic", f->topic, "naive: topic")->type_name("TOPIC");
  cmd->add_option("--orders", f->orders, "Stop once order_log holds this many")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--rate", f->rate, "Transactions per second")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "Random seed")->type_name("N");
  return cmd;
}

int RunDemo(const DemoOptions& options, const StopSignal& stop) {
  Demo demo(options, stop);
  Status st = demo.Run();
  if (!st.ok()) {
    demo.KeepFiles();  // the message points at its logs
    std::fprintf(stderr, "courier: error: demo: %s\n", st.message().c_str());
    return st.code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  return demo.outbox_clean() ? 0 : 1;
}

int RunDemoApp(const DemoAppOptions& options) {
  Status st = OrdersService(options);
  if (!st.ok()) {
    std::fprintf(stderr, "courier demo-app: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace courier::cli
