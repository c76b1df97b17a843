// Helpers shared by the benchmarks: filling an outbox, a steady load, dev brokers, timing a
// process (and its peak RSS), the pg_recvlogical ceiling, medians, the machine's description.
#pragma once

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
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

// A process's CPU time from /proc/<pid>/stat, in seconds: its own (utime + stime) and that of
// the children it has reaped (cutime + cstime); its parent; its start (clock ticks since boot),
// which tells a pid reused by another process. None once the process is gone.
struct ProcCpu {
  pid_t ppid = 0;
  unsigned long long start_ticks = 0;
  double seconds = 0;
  double reaped_children_seconds = 0;
};

inline std::optional<ProcCpu> ReadProcCpu(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // Field 2, the command, is in parentheses and may itself hold spaces and parentheses: the
  // fields are counted from the last ')'. f[0] is field 3 (state), so field n is f[n - 3]:
  // ppid 4, utime 14, stime 15, cutime 16, cstime 17, starttime 22.
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(paren + 1));
  const std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
  if (f.size() < 20) return std::nullopt;
  auto ticks = [&](size_t field) { return std::strtod(f[field - 3].c_str(), nullptr); };
  const double per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  ProcCpu c;
  c.ppid = std::atoi(f[1].c_str());
  c.start_ticks = std::strtoull(f[19].c_str(), nullptr, 10);
  c.seconds = (ticks(14) + ticks(15)) / per_second;
  c.reaped_children_seconds = (ticks(16) + ticks(17)) / per_second;
  return c;
}

// The CPU seconds the PostgreSQL server of `data_dir` has used so far: its postmaster's (the
// first line of postmaster.pid), its live children's (every backend, walsender and background
// process is one) and its reaped children's (an exited child's time moves to the postmaster's
// cutime + cstime once reaped). A child reaped while /proc is read would be counted twice or
// not at all, all of its time (a contender's walsender exits just as its run ends): the
// reading is taken again until the reaped time did not change meanwhile. Each process's
// time is in clock ticks (10 ms), rounded down.
inline Result<double> ServerCpuSeconds(const std::string& data_dir) {
  std::ifstream pid_file(data_dir + "/postmaster.pid");
  std::string line;
  if (!std::getline(pid_file, line)) return InternalError("cannot read postmaster.pid");
  const pid_t postmaster = std::atoi(line.c_str());
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::optional<ProcCpu> before = ReadProcCpu(postmaster);
    if (!before) return InternalError("no postmaster of pid " + line);
    double children = 0;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      const std::optional<ProcCpu> c = ReadProcCpu(std::atoi(name.c_str()));
      if (c && c->ppid == postmaster) children += c->seconds;
    }
    if (ec) return InternalError("cannot list /proc: " + ec.message());
    const std::optional<ProcCpu> after = ReadProcCpu(postmaster);
    if (!after) return InternalError("no postmaster of pid " + line);
    if (after->reaped_children_seconds == before->reaped_children_seconds) {
      return after->seconds + after->reaped_children_seconds + children;
    }
  }
  return InternalError("the server's processes kept exiting while their CPU was read");
}

// A process run to its end: its wall time from `start`, and its peak RSS, sampled every
// ~20 ms while it runs (the last few milliseconds of its life are not seen). With a PgCost,
// what it cost PostgreSQL over the same window: its walsenders' CPU seconds (none when it had
// no walsender: a polling relay) and the whole server's.
struct Timed {
  double seconds = 0;
  long peak_rss_kb = 0;
  std::optional<double> walsender_cpu_s;
  std::optional<double> server_cpu_s;
};

// What a contender costs PostgreSQL from Start to Finish, sampled by its run loop (~20 ms):
// - the CPU of the walsenders serving its database's replication connections. They are
//   found in pg_stat_activity, asked on the probe's own connection (one backend, not one per
//   query): at every Sample until the first is found, for at most a second (a short run's
//   walsender can live less than 250 ms), then every ~250 ms (a query costs the server too),
//   and at Finish. Their /proc entries are read at every Sample; a walsender's last sample is
//   what counts, as its entry goes when it exits (its last milliseconds are not seen);
// - the whole server's CPU, ServerCpuSeconds at Start and at Finish: the walsenders, the
//   backends the contender and the probe use, and the background processes (WAL writer,
//   checkpointer, autovacuum) whatever they do meanwhile.
class PgCost {
 public:
  // `url`: the contender's database (as a superuser, who may read the data directory).
  static Result<PgCost> Start(const std::string& url) {
    PgCost cost;
    COURIER_ASSIGN_OR_RETURN(cost.conn_, PgConnect(url));
    COURIER_ASSIGN_OR_RETURN(PgResult dir, PgExec(cost.conn_.get(), "SHOW data_directory"));
    if (PQntuples(dir.get()) != 1) return InternalError("SHOW data_directory: no row");
    cost.data_dir_ = PQgetvalue(dir.get(), 0, 0);
    cost.start_ = cost.next_query_ = Clock::Real().Now();
    COURIER_ASSIGN_OR_RETURN(cost.server_start_, ServerCpuSeconds(cost.data_dir_));
    return cost;
  }

  // Its first failure is Finish's.
  void Sample() {
    const TimePoint now = Clock::Real().Now();
    if (now >= next_query_) {
      FindWalsenders();
      const bool searching = walsenders_.empty() && now < start_ + std::chrono::seconds(1);
      next_query_ = searching ? now : now + std::chrono::milliseconds(250);
    }
    for (auto& [pid, last] : walsenders_) {
      const std::optional<ProcCpu> c = ReadProcCpu(pid);
      if (c && (!last || c->start_ticks == last->start_ticks)) last = *c;  // not a reused pid
    }
  }

  // Ends the window: the walsenders' (none if none was seen) and the server's CPU seconds.
  Status Finish(Timed& t) {
    FindWalsenders();
    Sample();
    COURIER_RETURN_IF_ERROR(error_);
    COURIER_ASSIGN_OR_RETURN(double server_end, ServerCpuSeconds(data_dir_));
    t.server_cpu_s = server_end - server_start_;
    for (const auto& [pid, last] : walsenders_) {
      if (last) t.walsender_cpu_s = t.walsender_cpu_s.value_or(0) + last->seconds;
    }
    return Status::Ok();
  }

 private:
  PgCost() = default;

  void FindWalsenders() {
    if (!error_.ok()) return;
    auto pids = PgExec(conn_.get(),
                       "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender'"
                       " AND datname = current_database()");
    if (!pids.ok()) {
      error_ = pids.status();
      return;
    }
    for (int i = 0; i < PQntuples(pids->get()); ++i) {
      walsenders_.try_emplace(std::atoi(PQgetvalue(pids->get(), i, 0)));
    }
  }

  PgConn conn_;
  std::string data_dir_;
  double server_start_ = 0;
  TimePoint start_, next_query_;
  std::map<pid_t, std::optional<ProcCpu>> walsenders_;  // each one's last sample
  Status error_;
};

// Waits for `p` to end; with `cost`, the window ends when it has.
inline Result<Timed> WaitTimed(Subprocess& p, TimePoint start, Duration timeout,
                               const std::string& name, PgCost* cost = nullptr) {
  Timed t;
  const TimePoint deadline = Clock::Real().Now() + timeout;
  std::optional<int> code;
  while (!(code = p.Wait(Duration(20))) && Clock::Real().Now() < deadline) {
    t.peak_rss_kb = std::max(t.peak_rss_kb, PeakRssKb(p.pid()));
    if (cost != nullptr) cost->Sample();
  }
  t.seconds = Seconds(start, Clock::Real().Now());
  if (!code) return InternalError(name + " did not finish in time");
  if (*code != 0) return InternalError(name + " exited with " + std::to_string(*code));
  if (cost != nullptr) COURIER_RETURN_IF_ERROR(cost->Finish(t));
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
  // What it costs the server: from here (the rows written) to its end.
  COURIER_ASSIGN_OR_RETURN(PgCost cost, PgCost::Start(url));
  const TimePoint start = Clock::Real().Now();
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p,
      Subprocess::Spawn({"/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", url, "--slot",
                         "bench_recv", "--start", "--no-loop", "-o", "proto_version=1", "-o",
                         "publication_names=bench", "-E", end, "-f", "/dev/null"}));
  COURIER_ASSIGN_OR_RETURN(Timed t,
                           WaitTimed(p, start, Duration(1200000), "pg_recvlogical", &cost));
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
