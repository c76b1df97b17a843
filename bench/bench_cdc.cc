// CDC throughput and latency, side by side in one run, same PostgreSQL server (fsync on):
//   (a) pg_recvlogical streaming the outbox's inserts (pgoutput) to /dev/null: the ceiling
//   (b) courier relay --mode cdc → JSONL file sink (fsync per batch)
//   (c) courier relay --mode cdc → dev broker
//   (d) courier relay (polling) → dev broker
// Each reads the same N outbox rows (100 per transaction) from its own database; for the
// streaming ones the slot exists before the rows are written, so they come from the WAL.
// Then commit→ack latency at a steady offered load (default 5,000 events/s, transactions of
// 10 events), CDC and polling, into the JSONL file sink, read back as it grows.
// Prints Markdown for docs/benchmarks.md. Usage: courier_bench_cdc [--events N] [--rate R]
//   [--seconds S]
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "bench/bench_common.h"
#include "core/encoding.h"
#include "core/postgres.h"
#include "schema/migrate.h"
#include "sources/pgoutput.h"
#include "sources/source.h"
#include "support/harness.h"

using namespace courier;
using namespace courier::bench;

namespace {

// Commit→ack latency: a writer commits `rate` events/s (10 per transaction) stamped with
// clock_timestamp() at INSERT; a reader follows the relay's JSONL file and notes when each
// line appears. Returns the latencies in milliseconds.
Result<std::vector<double>> Latency(const std::string& url, const std::string& mode,
                                    const test::TempDir& dir, int rate, int seconds) {
  const std::string out = dir.File("latency-" + mode + ".jsonl");
  COURIER_ASSIGN_OR_RETURN(Subprocess relay,
                           test::SpawnCourier({"relay", "--mode", mode, "--source", url, "--sink",
                                               "file://" + out, "--log-level", "warn"}));
  // The relay is ready once its sink file exists (opened at start) and, for CDC, its slot
  // streams.
  test::WaitUntil([&] {
    auto active = test::PgQuery(url, "SELECT count(*) FROM pg_replication_slots WHERE active");
    return std::ifstream(out).good() &&
           (mode != "cdc" || (active.ok() && !active->empty() && (*active)[0] == "1"));
  });
  const int total = rate * seconds;
  std::vector<double> latencies;
  std::atomic<bool> failed{false};
  std::thread writer([&] {
    if (!WriteSteadily(url, rate, total).ok()) failed = true;
  });
  std::ifstream in;
  std::string partial;
  const TimePoint deadline = Clock::Real().Now() + std::chrono::seconds(seconds + 120);
  while (static_cast<int>(latencies.size()) < total && Clock::Real().Now() < deadline) {
    if (!in.is_open()) in.open(out);
    std::string line;
    if (in.is_open() && std::getline(in, line)) {
      if (in.eof()) {  // a line still being written
        partial += line;
        in.clear();
        continue;
      }
      line = partial + line;
      partial.clear();
      const int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      auto e = EventFromJsonLine(line);
      if (!e.ok()) continue;
      // The payload is as committed: json_build_object writes {"id" : 1, "t" : 2}.
      size_t t = e->payload.find("\"t\"");
      if (t == std::string::npos) continue;
      t = e->payload.find_first_not_of(" :", t + 3);
      if (t == std::string::npos) continue;
      latencies.push_back(static_cast<double>(now - std::atoll(e->payload.c_str() + t)) / 1000.0);
      continue;
    }
    in.clear();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  writer.join();
  relay.Signal(SIGTERM);
  relay.Wait(Duration(30000));
  if (failed || static_cast<int>(latencies.size()) < total) {
    return InternalError("latency run for " + mode + " saw " + std::to_string(latencies.size()) +
                         " of " + std::to_string(total) + " events");
  }
  return latencies;
}

int Fail(const Status& st) {
  std::fprintf(stderr, "benchmark failed: %s\n", st.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int events = 500000;
  int rate = 5000;
  int seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--rate") == 0) rate = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atoi(argv[i + 1]);
  }
  auto pg = test::PostgresServer::Start(/*durable=*/true);
  if (!pg.ok()) return Fail(pg.status());
  test::TempDir dir;

  auto recv = TimeOutboxRecvlogical(**pg, events);
  if (!recv.ok()) return Fail(recv.status());
  const double a = recv->seconds;
  std::fprintf(stderr, "(a) pg_recvlogical: %.0f events/s\n", events / a);

  auto cdc_run = [&](const std::string& name, const std::string& sink) -> Result<double> {
    COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, name, true));
    COURIER_RETURN_IF_ERROR(Fill(url, events));
    return TimeCourier({"relay", "--mode", "cdc", "--source", url, "--sink", sink, "--once",
                        "--log-level", "warn"});
  };
  auto b = cdc_run("bench_cdc_file", "file://" + dir.File("cdc.jsonl"));
  if (!b.ok()) return Fail(b.status());
  std::fprintf(stderr, "(b) courier cdc → file: %.0f events/s\n", events / *b);

  auto broker_c = StartDevBroker(dir, "bootstrap-c", events);
  if (!broker_c.ok()) return Fail(broker_c.status());
  auto c = cdc_run("bench_cdc_kafka", "kafka://" + *broker_c + "/bench");
  if (!c.ok()) return Fail(c.status());
  std::fprintf(stderr, "(c) courier cdc → dev broker: %.0f events/s\n", events / *c);

  auto broker_d = StartDevBroker(dir, "bootstrap-d", events);
  if (!broker_d.ok()) return Fail(broker_d.status());
  auto poll_url = NewOutbox(**pg, "bench_poll", false);
  if (!poll_url.ok()) return Fail(poll_url.status());
  if (Status st = Fill(*poll_url, events); !st.ok()) return Fail(st);
  auto d = TimeCourier({"relay", "--source", *poll_url, "--sink", "kafka://" + *broker_d + "/bench",
                        "--once", "--log-level", "warn"});
  if (!d.ok()) return Fail(d.status());
  std::fprintf(stderr, "(d) courier poll → dev broker: %.0f events/s\n", events / *d);

  std::vector<std::pair<std::string, std::vector<double>>> latency;
  for (const std::string mode : {"cdc", "poll"}) {
    auto url = NewOutbox(**pg, "bench_latency_" + mode, mode == "cdc");
    if (!url.ok()) return Fail(url.status());
    auto l = Latency(*url, mode, dir, rate, seconds);
    if (!l.ok()) return Fail(l.status());
    latency.emplace_back(mode, std::move(l).value());
  }

  const double ceiling = events / a;
  std::printf("| %d outbox rows, 100 per transaction | events/s | ratio to (a) |\n", events);
  std::printf("|---|---:|---:|\n");
  std::printf("| (a) pg_recvlogical (pgoutput) → /dev/null: the ceiling | %.0f | 1.00 |\n",
              ceiling);
  std::printf("| (b) courier relay --mode cdc → JSONL file, fsync per batch | %.0f | %.2f |\n",
              events / *b, (events / *b) / ceiling);
  std::printf("| (c) courier relay --mode cdc → dev broker | %.0f | %.2f |\n", events / *c,
              (events / *c) / ceiling);
  std::printf("| (d) courier relay (polling) → dev broker | %.0f | %.2f |\n", events / *d,
              (events / *d) / ceiling);
  std::printf(
      "\n| commit→ack latency at %d events/s (10 per transaction), JSONL sink | p50 ms |"
      " p99 ms | max ms |\n",
      rate);
  std::printf("|---|---:|---:|---:|\n");
  for (const auto& [mode, v] : latency) {
    std::printf("| courier relay --mode %s | %.1f | %.1f | %.1f |\n", mode.c_str(),
                Percentile(v, 0.5), Percentile(v, 0.99), Percentile(v, 1.0));
  }
  std::printf("\nmachine: %s\n", Machine().c_str());
  return 0;
}
