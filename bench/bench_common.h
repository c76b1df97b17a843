// Helpers shared by the benchmarks: filling an outbox, a steady load, dev brokers, timing a
// process (and its peak RSS), the pg_recvlogical ceiling, medians, the machine's description.
#pragma once

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "brokers/dev/dev_broker.h"
#include "core/clock.h"
#include "core/postgres.h"
#include "core/subprocess.h"
#include "schema/migrate.h"
#include "sources/source.h"
#include "support/harness.h"

namespace courier::bench {

inline double Seconds(TimePoint a, TimePoint b) {
  return std::chrono::duration<double>(b - a).count();
}

// An outbox table and how the benchmark's rows go into it: `insert` is the start of an
// INSERT … SELECT whose rows follow it, with the columns aggregate_type, aggregate_id,
// event_type and payload (json). Every contender reads the same rows, in its own table.
struct OutboxTable {
  std::string name;
  std::string insert;
};

inline OutboxTable CourierOutbox() {
  return {"courier_outbox",
          "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload)"
          " SELECT aggregate_type, aggregate_id, event_type, payload FROM"};
}

// Rows numbered $1..$2 for `table`, spread over `aggregates` aggregates, the payload a json
// `payload_sql` (of g, the row's number; every payload has "id": g, which is what the
// benchmarks' readers count).
inline std::string BenchRowsSql(const OutboxTable& table, const std::string& payload_sql,
                                int aggregates = 64) {
  return table.insert + " (SELECT 'order' AS aggregate_type, 'order-' || (g % " +
         std::to_string(aggregates) +
         ") AS aggregate_id,"
         " 'OrderCreated' AS event_type, " +
         payload_sql + " AS payload FROM generate_series($1::int, $2::int) g) r";
}

inline Status Fill(const std::string& url, int events, const OutboxTable& table = CourierOutbox(),
                   int aggregates = 64) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  // 100 events per transaction, ~120-byte JSON payloads.
  const std::string sql =
      BenchRowsSql(table,
                   "json_build_object('id', g, 'customer', 'c-' || (g % 1000), 'total', g * 1.5,"
                   " 'currency', 'EUR', 'lines', 3)",
                   aggregates);
  for (int base = 0; base < events; base += 100) {
    COURIER_RETURN_IF_ERROR(
        PgExec(conn.get(), sql,
               {std::to_string(base + 1), std::to_string(std::min(events, base + 100))})
            .status());
  }
  return PgRun(conn.get(), "VACUUM ANALYZE " + table.name);
}

// A steady offered load for the latency runs: `rate` events/s, 10 per transaction, `total`
// in all, each payload {"id": n, "t": microseconds since the epoch at its INSERT}.
inline Status WriteSteadily(const std::string& url, int rate, int total,
                            const OutboxTable& table = CourierOutbox()) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  const std::string sql = BenchRowsSql(
      table,
      "json_build_object('id', g, 't', (extract(epoch FROM clock_timestamp()) * 1000000)::int8)");
  const auto period = std::chrono::microseconds(10 * 1000000 / rate);
  auto next = std::chrono::steady_clock::now();
  for (int sent = 0; sent < total; sent += 10) {
    std::this_thread::sleep_until(next);
    next += period;
    COURIER_RETURN_IF_ERROR(
        PgExec(conn.get(), sql, {std::to_string(sent + 1), std::to_string(sent + 10)}).status());
  }
  return Status::Ok();
}

inline double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// The partitions a dev broker topic needs to keep `events` of Fill's events (~250 bytes as
// Kafka records; 512 leaves room) instead of dropping the oldest, were they spread evenly.
// They are not: an aggregate's events all go to one partition, so a topic keeps them only if
// each partition's share of the aggregates stays under its 5 MiB (more room per event, or
// more aggregates, as courier_bench_compare does at a million events).
inline std::string BenchPartitions(int events, int bytes_per_event = 512) {
  return std::to_string(DevBrokerPartitionsFor(events, bytes_per_event));
}

// A running `courier dev-broker` and its bootstrap address.
struct DevBrokerProcess {
  Subprocess process;
  std::string bootstrap;
};

// A dev broker whose topic "bench" has room for `events` (BenchPartitions); it stops when
// the result is dropped.
inline Result<DevBrokerProcess> SpawnDevBroker(const test::TempDir& dir, const std::string& name,
                                               int events, int bytes_per_event = 512) {
  const std::string file = dir.File(name);
  COURIER_ASSIGN_OR_RETURN(
      Subprocess broker,
      test::SpawnCourier({"dev-broker", "--bootstrap-file", file, "--topic", "bench",
                          "--partitions", BenchPartitions(events, bytes_per_event)}));
  if (!test::WaitUntil([&] { return !test::ReadFile(file).empty(); })) {
    return InternalError("cannot start courier dev-broker");
  }
  std::string bootstrap = test::ReadFile(file);
  bootstrap.pop_back();
  return DevBrokerProcess{std::move(broker), std::move(bootstrap)};
}

// The same, live until the benchmark exits; its bootstrap address.
inline Result<std::string> StartDevBroker(const test::TempDir& dir, const std::string& name,
                                          int events) {
  COURIER_ASSIGN_OR_RETURN(DevBrokerProcess broker, SpawnDevBroker(dir, name, events));
  static std::vector<Subprocess> brokers;
  brokers.push_back(std::move(broker.process));
  return broker.bootstrap;
}

// The first column of the first row of `sql`.
inline Result<std::string> Query1(const std::string& url, const std::string& sql) {
  COURIER_ASSIGN_OR_RETURN(std::vector<std::string> rows, test::PgQuery(url, sql));
  if (rows.empty()) return InternalError("no rows: " + sql);
  return rows[0];
}

// Runs courier with `args` to the end: its wall time, or why it failed.
inline Result<double> TimeCourier(const std::vector<std::string>& args) {
  const TimePoint start = Clock::Real().Now();
  test::CommandResult r = test::RunCourier(args, Duration(1200000));
  if (r.exit_code != 0) return InternalError("courier failed: " + r.err);
  return Seconds(start, Clock::Real().Now());
}

// The peak resident set (VmHWM) of a running process, in KiB; 0 once it is gone.
inline long PeakRssKb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

// A process run to its end: its wall time from `start`, and its peak RSS, sampled every
// ~20 ms while it runs (the last few milliseconds of its life are not seen).
struct Timed {
  double seconds = 0;
  long peak_rss_kb = 0;
};

inline Result<Timed> WaitTimed(Subprocess& p, TimePoint start, Duration timeout,
                               const std::string& name) {
  Timed t;
  const TimePoint deadline = Clock::Real().Now() + timeout;
  std::optional<int> code;
  while (!(code = p.Wait(Duration(20))) && Clock::Real().Now() < deadline) {
    t.peak_rss_kb = std::max(t.peak_rss_kb, PeakRssKb(p.pid()));
  }
  t.seconds = Seconds(start, Clock::Real().Now());
  if (!code) return InternalError(name + " did not finish in time");
  if (*code != 0) return InternalError(name + " exited with " + std::to_string(*code));
  return t;
}

// A fresh database with courier's schema (and its CDC objects when `cdc`).
inline Result<std::string> NewOutbox(test::PostgresServer& pg, const std::string& name, bool cdc) {
  COURIER_ASSIGN_OR_RETURN(std::string url, pg.NewDatabase(name));
  CdcOptions options;
  options.enabled = cdc;
  COURIER_RETURN_IF_ERROR(Migrate(url, TableNames{}, options));
  return url;
}

// The ceiling: the server's own logical decoding of `events` Fill rows (pgoutput, the slot
// made before the rows are written), streamed by PostgreSQL's client to /dev/null.
inline Result<Timed> TimeOutboxRecvlogical(test::PostgresServer& pg, int events,
                                           int aggregates = 64) {
  COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(pg, "bench_recv", false));
  COURIER_RETURN_IF_ERROR(test::PgQuery(url,
                                        "CREATE PUBLICATION bench FOR TABLE courier_outbox WITH"
                                        " (publish = 'insert')")
                              .status());
  COURIER_RETURN_IF_ERROR(
      test::PgQuery(url, "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
          .status());
  COURIER_RETURN_IF_ERROR(Fill(url, events, CourierOutbox(), aggregates));
  COURIER_ASSIGN_OR_RETURN(std::string end, Query1(url, "SELECT pg_current_wal_flush_lsn()::text"));
  const TimePoint start = Clock::Real().Now();
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p,
      Subprocess::Spawn({"/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", url, "--slot",
                         "bench_recv", "--start", "--no-loop", "-o", "proto_version=1", "-o",
                         "publication_names=bench", "-E", end, "-f", "/dev/null"}));
  COURIER_ASSIGN_OR_RETURN(Timed t, WaitTimed(p, start, Duration(1200000), "pg_recvlogical"));
  (void)test::PgQuery(url, "SELECT pg_drop_replication_slot('bench_recv')");
  return t;
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

inline std::string Machine() {
  std::ifstream cpu("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpu, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return model + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " cores, " + u.sysname +
         " " + u.release;
}

}  // namespace courier::bench
