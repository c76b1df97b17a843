// Events per second into each sink, from the same outbox, side by side in one run:
// `courier relay --once` (polling PostgreSQL, fsync on) draining N rows into Kafka (dev
// broker), Redis Streams, Redis cache sync, NATS JetStream, RabbitMQ, an HTTP webhook receiver and
// a JSONL file. Prints Markdown for docs/benchmarks.md. Usage: courier_bench_sinks [--events N]
//   [--http-events N]
#include <cstdio>
#include <cstring>

#include "bench/bench_common.h"
#include "schema/migrate.h"
#include "sources/source.h"
#include "support/harness.h"

using namespace courier;
using namespace courier::bench;

namespace {

Result<double> Drain(test::PostgresServer& pg, const std::string& sink, int events) {
  COURIER_ASSIGN_OR_RETURN(std::string url, pg.NewDatabase("bench_sink"));
  COURIER_RETURN_IF_ERROR(Migrate(url, TableNames{}));
  COURIER_RETURN_IF_ERROR(Fill(url, events));
  const TimePoint start = Clock::Real().Now();
  test::CommandResult r =
      test::RunCourier({"relay", "--source", url, "--sink", sink, "--once", "--log-level", "warn"},
                       Duration(1800000));
  if (r.exit_code != 0) return InternalError("relay into " + sink + " failed: " + r.err);
  return events / Seconds(start, Clock::Real().Now());
}

int Fail(const Status& st) {
  std::fprintf(stderr, "benchmark failed: %s\n", st.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int events = 200000;
  int http_events = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--http-events") == 0) http_events = std::atoi(argv[i + 1]);
  }
  auto pg = test::PostgresServer::Start(/*durable=*/true);
  if (!pg.ok()) return Fail(pg.status());
  test::TempDir dir;
  auto redis = test::RedisServer::Start();
  if (!redis.ok()) return Fail(redis.status());
  auto nats = test::NatsServer::Start();
  if (!nats.ok()) return Fail(nats.status());
  if (Status st = (*nats)->AddStream("ORDERS", {"order"}); !st.ok()) return Fail(st);
  auto rabbit = test::RabbitMqServer::Start();
  if (!rabbit.ok()) return Fail(rabbit.status());
  if (Status st = (*rabbit)->DeclareExchange("events"); !st.ok()) return Fail(st);
  if (Status st = (*rabbit)->DeclareQueue("orders", "events", "order"); !st.ok()) return Fail(st);
  auto webhook = test::WebhookServer::Start();
  if (!webhook.ok()) return Fail(webhook.status());
  const std::string bootstrap_file = dir.File("bootstrap");
  // Its topic keeps every event (the dev broker keeps 5 MiB per partition).
  auto broker = test::SpawnCourier({"dev-broker", "--bootstrap-file", bootstrap_file, "--topic",
                                    "order", "--partitions", BenchPartitions(events)});
  if (!broker.ok() || !test::WaitUntil([&] { return !test::ReadFile(bootstrap_file).empty(); })) {
    return Fail(InternalError("cannot start courier dev-broker"));
  }
  std::string bootstrap = test::ReadFile(bootstrap_file);
  bootstrap.pop_back();

  struct Row {
    std::string name;
    std::string sink;
    int events;
    double rate = 0;
  };
  std::vector<Row> rows = {
      {"Kafka (dev broker), acks=all, idempotent", "kafka://" + bootstrap + "/order", events},
      {"Redis Streams, XADD pipelined, appendfsync always", (*redis)->Url("order"), events},
      {"NATS JetStream, file storage, async PubAcks", (*nats)->Url("order"), events},
      {"Redis cache sync (Lua version check per key)",
       "redis-cache://127.0.0.1:" + std::to_string((*redis)->port()) + "/cache", events},
      {"RabbitMQ, durable queue, persistent messages, publisher confirms", (*rabbit)->Url("events"),
       events},
      {"JSONL file, fsync per batch", "file://" + dir.File("events.jsonl"), events},
      {"HTTP webhook (Python receiver), one POST per event", (*webhook)->Url("hooks/order"),
       http_events},
  };
  for (Row& row : rows) {
    auto rate = Drain(**pg, row.sink, row.events);
    if (!rate.ok()) return Fail(rate.status());
    row.rate = *rate;
    std::fprintf(stderr, "%s: %.0f events/s\n", row.name.c_str(), row.rate);
  }
  std::printf(
      "| sink (`courier relay --once`, PostgreSQL polling, fsync on) | events | events/s |\n");
  std::printf("|---|---:|---:|\n");
  for (const Row& row : rows) {
    std::printf("| %s | %d | %.0f |\n", row.name.c_str(), row.events, row.rate);
  }
  std::printf("\nmachine: %s\n", Machine().c_str());
  return 0;
}
