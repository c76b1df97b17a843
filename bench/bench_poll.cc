// Polling relay throughput, PostgreSQL → dev broker, side by side in one run:
//   courier      `courier relay --once` (the real binary) draining N outbox rows
//   hand-written the obvious relay: SELECT a page, send each row and wait for its ack,
//                DELETE it, next row — what most first versions look like
// Both read the same kind of rows from the same server (fsync on) into the same broker.
// Prints a Markdown table for docs/benchmarks.md. Usage: courier_bench [--events N] [--runs R]
// [--kafka-query transactional=false]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "bench/bench_common.h"
#include "brokers/kafka/kafka_common.h"
#include "core/postgres.h"
#include "schema/migrate.h"
#include "sources/source.h"
#include "support/harness.h"

using namespace courier;
using namespace courier::bench;

namespace {

Result<double> RunCourier(const std::string& url, const std::string& sink) {
  const TimePoint start = Clock::Real().Now();
  test::CommandResult r =
      test::RunCourier({"relay", "--source", url, "--sink", sink, "--once", "--log-level", "warn"},
                       Duration(600000));
  const TimePoint end = Clock::Real().Now();
  if (r.exit_code != 0) return InternalError("courier relay failed: " + r.err);
  return Seconds(start, end);
}

// The obvious hand-written relay.
Result<double> RunHandWritten(const std::string& url, const std::string& bootstrap,
                              const std::string& topic) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf({{"bootstrap.servers", bootstrap},
                                                          {"acks", "all"},
                                                          {"enable.idempotence", "true"},
                                                          {"linger.ms", "0"}}));
  char err[512];
  KafkaHandle producer(rd_kafka_new(RD_KAFKA_PRODUCER, conf.release(), err, sizeof err));
  if (producer == nullptr) return InternalError(err);
  const TimePoint start = Clock::Real().Now();
  while (true) {
    COURIER_ASSIGN_OR_RETURN(PgResult page,
                             PgExec(conn.get(),
                                    "SELECT id, aggregate_id, payload::text FROM courier_outbox "
                                    "ORDER BY id LIMIT 100"));
    const int rows = PQntuples(page.get());
    if (rows == 0) break;
    for (int i = 0; i < rows; ++i) {
      const char* key = PQgetvalue(page.get(), i, 1);
      const char* value = PQgetvalue(page.get(), i, 2);
      if (rd_kafka_producev(producer.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
                            RD_KAFKA_V_KEY(key, std::strlen(key)),
                            RD_KAFKA_V_VALUE(const_cast<char*>(value), std::strlen(value)),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) != 0) {
        return InternalError("produce failed");
      }
      rd_kafka_flush(producer.get(), 10000);  // send(...).get(): wait for this row's ack
      COURIER_RETURN_IF_ERROR(PgExec(conn.get(), "DELETE FROM courier_outbox WHERE id = $1",
                                     {std::string(PQgetvalue(page.get(), i, 0))})
                                  .status());
    }
  }
  return Seconds(start, Clock::Real().Now());
}

}  // namespace

int main(int argc, char** argv) {
  int events = 200000;
  int hand_events = 3000;
  int runs = 3;
  std::string kafka_query;  // e.g. "transactional=false": the idempotent producer alone
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--kafka-query") == 0) kafka_query = std::string("?") + argv[i + 1];
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--hand-events") == 0) hand_events = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  }
  auto pg = test::PostgresServer::Start(/*durable=*/true);
  if (!pg.ok()) {
    std::fprintf(stderr, "setup failed: %s\n", pg.status().message().c_str());
    return 1;
  }
  test::TempDir dir;
  std::vector<double> courier_rates, file_rates, hand_rates;
  for (int run = 0; run < runs; ++run) {
    // The dev broker as users run it, its own process; a fresh one per run, because the mock
    // cluster slows down as the messages it holds in memory pile up.
    const std::string bootstrap_file = dir.File("bootstrap-" + std::to_string(run));
    // Its topics keep every event (the dev broker keeps 5 MiB per partition).
    auto broker = test::SpawnCourier({"dev-broker", "--bootstrap-file", bootstrap_file, "--topic",
                                      "bench-" + std::to_string(run), "--topic",
                                      "bench-hand-" + std::to_string(run), "--partitions",
                                      BenchPartitions(events)});
    if (!broker.ok() || !test::WaitUntil([&] { return !test::ReadFile(bootstrap_file).empty(); })) {
      std::fprintf(stderr, "cannot start courier dev-broker\n");
      return 1;
    }
    std::string bootstrap = test::ReadFile(bootstrap_file);
    bootstrap.pop_back();  // newline
    for (bool to_file : {false, true}) {
      auto url = (*pg)->NewDatabase("bench");
      if (!url.ok() || !Migrate(*url, TableNames{}).ok() || !Fill(*url, events).ok()) return 1;
      const std::string sink =
          to_file ? "file://" + dir.File("bench.jsonl")
                  : "kafka://" + bootstrap + "/bench-" + std::to_string(run) + kafka_query;
      auto t = RunCourier(*url, sink);
      if (!t.ok()) {
        std::fprintf(stderr, "%s\n", t.status().message().c_str());
        return 1;
      }
      (to_file ? file_rates : courier_rates).push_back(events / *t);
    }
    auto hand_url = (*pg)->NewDatabase("bench_hand");
    if (!hand_url.ok() || !Migrate(*hand_url, TableNames{}).ok() ||
        !Fill(*hand_url, hand_events).ok()) {
      return 1;
    }
    auto h = RunHandWritten(*hand_url, bootstrap, "bench-hand-" + std::to_string(run));
    if (!h.ok()) {
      std::fprintf(stderr, "%s\n", h.status().message().c_str());
      return 1;
    }
    hand_rates.push_back(hand_events / *h);
    std::fprintf(stderr,
                 "run %d: courier→broker %.0f, courier→file %.0f, hand-written→broker %.0f "
                 "events/s\n",
                 run + 1, courier_rates.back(), file_rates.back(), hand_rates.back());
  }
  const double c = Median(courier_rates), f = Median(file_rates), h = Median(hand_rates);
  std::printf(
      "| relay (PostgreSQL polling → dev broker, fsync on) | events | events/s (median of %d) | "
      "ratio |\n",
      runs);
  std::printf("|---|---:|---:|---:|\n");
  std::printf("| courier relay --once → dev broker (batch 1000) | %d | %.0f | %.1f× |\n", events, c,
              c / h);
  std::printf("| courier relay --once → JSONL file, fsync per batch | %d | %.0f | %.1f× |\n",
              events, f, f / h);
  std::printf(
      "| hand-written → dev broker: send, wait for ack, DELETE, per row | %d | %.0f | 1.0× |\n",
      hand_events, h);
  std::printf("\nmachine: %s\n", Machine().c_str());
  return 0;
}
