// Helpers shared by the benchmarks: filling an outbox, medians, the machine's description.
#pragma once

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "brokers/dev/dev_broker.h"
#include "core/clock.h"
#include "core/postgres.h"
#include "support/harness.h"

namespace courier::bench {

inline double Seconds(TimePoint a, TimePoint b) {
  return std::chrono::duration<double>(b - a).count();
}

inline Status Fill(const std::string& url, int events) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  // 100 events per transaction, 64 aggregates, ~120-byte JSON payloads.
  for (int base = 0; base < events; base += 100) {
    COURIER_RETURN_IF_ERROR(
        PgExec(conn.get(),
               "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload) "
               "SELECT 'order', 'order-' || (g % 64), 'OrderCreated', json_build_object('id', g, "
               "'customer', 'c-' || (g % 1000), 'total', g * 1.5, 'currency', 'EUR', 'lines', 3)"
               " FROM generate_series($1::int, $2::int) g",
               {std::to_string(base + 1), std::to_string(std::min(events, base + 100))})
            .status());
  }
  return PgRun(conn.get(), "VACUUM ANALYZE courier_outbox");
}

// The partitions a dev broker topic needs to keep `events` of Fill's events (~250 bytes as
// Kafka records; 512 leaves room) instead of dropping the oldest.
inline std::string BenchPartitions(int events) {
  return std::to_string(DevBrokerPartitionsFor(events, 512));
}

// A dev broker whose topic "bench" keeps all `events` (it keeps 5 MiB per partition).
inline Result<std::string> StartDevBroker(const test::TempDir& dir, const std::string& name,
                                          int events) {
  const std::string file = dir.File(name);
  COURIER_ASSIGN_OR_RETURN(Subprocess broker,
                           test::SpawnCourier({"dev-broker", "--bootstrap-file", file, "--topic",
                                               "bench", "--partitions", BenchPartitions(events)}));
  if (!test::WaitUntil([&] { return !test::ReadFile(file).empty(); })) {
    return InternalError("cannot start courier dev-broker");
  }
  static std::vector<Subprocess> brokers;  // live until the benchmark exits
  brokers.push_back(std::move(broker));
  std::string bootstrap = test::ReadFile(file);
  bootstrap.pop_back();
  return bootstrap;
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
