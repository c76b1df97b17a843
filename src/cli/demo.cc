// `courier demo`: the dual-write problem under real crashes, outbox versus naive: a short
// `courier lab` run (lab/lab.h) of two strategies on the embedded default (SQLite files and
// the built-in dev broker).
//  - naive: the orders service commits the order, then publishes its event and waits for the
//    ack.
//  - outbox-poll: the event row is written in the order's transaction; the relay (another
//    child process) publishes it.
// Both get the same commands and the same faults: SIGKILLs between and inside the two writes,
// a broker outage, commits that fail, SIGKILLs of the relay. Afterwards the topics are read
// back and compared with what the databases say was committed.
//
// `courier demo-app` is the orders service examples/inventory runs: it commits orders with
// their events (into the outbox, or straight to Kafka) at a given rate.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <random>

#include "brokers/kafka/kafka_common.h"
#include "cli/commands.h"
#include "cli/config.h"
#include "core/sqlite.h"
#include "core/uuid.h"
#include "courier/outbox.h"
#include "lab/lab.h"

namespace courier::cli {
namespace {

Status CreateAppTables(sqlite3* db) {
  return SqliteExec(db,
                    "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, version INTEGER "
                    "NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS order_log (event_id TEXT PRIMARY KEY, order_id "
                    "TEXT NOT NULL, version INTEGER NOT NULL);");
}

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
      "it and the relay are SIGKILLed; beside it the naive way (commit, then publish directly)\n"
      "under the same crashes, broker outage and failed commits (a short `courier lab` run).\n"
      "Prints lost, ghost and duplicate events of each.\n"
      "Exits non-zero if the outbox side loses or ghosts anything.");
  cmd->add_option("--orders", f->orders, "Order commands per strategy (at least 20)")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--workdir", f->workdir,
                  "Keep the databases and logs here, in naive/ and outbox-poll/ (refused if "
                  "either exists and is not empty)")
      ->type_name("DIR");
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
  lab::LabOptions o;
  o.strategies = {"naive", "outbox-poll"};
  Status st = lab::ParseFaults("all", &o.faults);
  o.commands = options.orders;
  o.workdir = options.workdir;
  o.seed = options.seed;
  o.verbose = false;
  if (st.ok()) st = lab::CheckUrls(o);
  if (!st.ok()) {
    std::fprintf(stderr, "courier: error: demo: %s\n",
                 st.message() == "--commands must be at least 20" ? "--orders must be at least 20"
                                                                  : st.message().c_str());
    return kExitUsage;
  }
  std::printf(
      "courier demo: %d order commands to each of two orders services on SQLite files, the\n"
      "naive one (commit, then publish to the dev broker) and the outbox one (the event row in\n"
      "the order's transaction; a relay publishes it), under the same faults: SIGKILLs between\n"
      "and inside the two writes, a broker outage, failed commits, relay SIGKILLs\n\n",
      o.commands);
  std::fflush(stdout);
  auto report = lab::RunLab(o, stop);
  if (!report.ok()) {
    std::fprintf(stderr, "courier: error: demo: %s\n", report.status().message().c_str());
    return report.status().code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  std::printf("%s", lab::FormatTable(*report).c_str());
  const lab::StrategyResult* outbox = nullptr;
  for (const lab::StrategyResult& r : report->results) {
    if (r.strategy == "outbox-poll") outbox = &r;
  }
  if (outbox != nullptr && outbox->ran()) {
    std::printf("\n  relay SIGKILLs: %lld   service SIGKILLs: %lld   (seed %u)\n",
                static_cast<long long>(outbox->side_kills),
                static_cast<long long>(outbox->service_kills), report->seed);
  }
  if (report->guarantees_hold) {
    std::printf(
        "\n  outbox: nothing lost, no ghosts, order kept per order. Duplicates carry the same "
        "event_id;\n  an idempotent consumer drops them.\n");
    return 0;
  }
  std::printf("\n  OUTBOX GUARANTEE BROKEN: see %s\n", report->workdir.c_str());
  return kExitFailure;
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
