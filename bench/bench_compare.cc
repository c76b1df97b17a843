// courier against the ceiling and against what users would pick instead, in one run, on the
// same rows (N outbox rows, 100 per transaction, Fill in bench_common.h), one PostgreSQL 15
// (fsync on), a fresh database per contender and a fresh dev broker per Kafka contender:
//   (a) pg_recvlogical (pgoutput) → /dev/null: the ceiling
//   (b) courier relay --mode cdc → JSONL file, and → dev broker
//   (c) courier relay (polling) → dev broker
//   (d) pg-transactional-outbox (npm), its replication listener + a kafkajs handler
//   (e) a Node pgoutput relay: pg-logical-replication + kafkajs, batched, LSN acked after the
//       broker's ack
//   (f) a batched Python polling relay: psycopg2 + confluent-kafka, SKIP LOCKED × 1000
// The peers are in bench/peers/ (Node: `npm ci` in bench/peers/node first). Every contender's
// output is counted by bench/peers/read_events.py, which knows none of them: the topic (or
// file) read to its end, the payloads' ids counted (lost, duplicates). For the streaming
// contenders the slot exists before the rows are written, so every row comes from the WAL.
// Peak RSS: each contender's VmHWM, sampled while it runs. What each costs PostgreSQL, over
// its run's window (from its start to its end, as its time; the rows are written before it):
// walsender CPU s, the CPU seconds (utime + stime) of the walsenders serving its database's
// replication connections ("—" for the polling relays, which have none); PostgreSQL CPU s,
// the whole server's (postmaster, its children, those it reaped), walsenders included
// (PgCost in bench_common.h).
// Then commit→delivered latency into the dev broker at a steady load (default 5,000 events/s,
// transactions of 10, 10 s) for courier and the peers, read by the same reader as the
// records arrive.
// Prints Markdown for docs/benchmarks.md. Usage: courier_bench_compare [--events N]
//   [--rate R] [--seconds S] [--only LETTERS] [--courier-flag FLAG]...
// --only runs the contenders of those letters only ("bc": courier's); --courier-flag adds a
// flag to every courier relay (e.g. --courier-flag=--checkpoints-in-flight=0), and
// --courier-sink-query a query to its Kafka sink URL (e.g. transactional=false), for A/B runs.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "bench/bench_common.h"

using namespace courier;
using namespace courier::bench;

namespace {

const std::string kPeers = COURIER_PEERS_DIR;
const std::string kNode = "/usr/bin/node";
const std::string kPython = "/usr/bin/python3";

// --only, --courier-flag and --courier-sink-query.
std::string g_only;
std::vector<std::string> g_courier_flags;
std::string g_sink_query;

// courier's sink: the dev broker's topic "bench", with --courier-sink-query.
std::string CourierTopic(const std::string& bootstrap) {
  return "kafka://" + bootstrap + "/bench" + (g_sink_query.empty() ? "" : "?" + g_sink_query);
}

// Whether the contender named "(x) ..." runs.
bool Selected(const std::string& name) {
  return g_only.empty() ||
         (name.size() > 2 && name[0] == '(' && g_only.find(name[1]) != std::string::npos);
}

// The rows' aggregates, and the room each event gets on the dev broker. All of an aggregate's
// events go to one partition, and a partition of the dev broker keeps its newest 5 MiB: with
// Fill's usual 64 aggregates a million events are ~15 600 (~4.7 MB) per aggregate, and two
// aggregates on one partition overflow it. 4 096 aggregates on partitions sized for 1 KiB per
// event (~300 B as records) keep every event of every contender up to a million and more.
constexpr int kAggregates = 4096;
constexpr int kBytesPerEvent = 1024;

// pg-transactional-outbox's table (made by its own setup, bench/peers/node/ptxo_relay.js);
// segment = aggregate id, for its segment mutex (order per aggregate).
OutboxTable PtxoOutbox() {
  return {"outbox",
          "INSERT INTO outbox (id, aggregate_type, aggregate_id, message_type, segment, payload)"
          " SELECT gen_random_uuid(), aggregate_type, aggregate_id, event_type, aggregate_id,"
          " payload::jsonb FROM"};
}

// What the reader counted.
struct Counted {
  long read = 0, distinct = 0, lost = 0, duplicates = 0;
};

// One row of the throughput table.
struct Row {
  std::string name;
  Timed timed;
  std::optional<Counted> counted;  // none for the ceiling, which writes nowhere
  std::string error;               // why the row has no result
  bool skipped = false;            // not among --only
};

// Runs read_events.py with `args` to its end; its one line of output.
Result<std::string> RunReader(const test::TempDir& dir, const std::vector<std::string>& args,
                              Duration timeout) {
  static int runs = 0;
  const std::string out = dir.File("reader-" + std::to_string(++runs) + ".out");
  const std::string err = dir.File("reader-" + std::to_string(runs) + ".err");
  std::vector<std::string> argv = {kPython, kPeers + "/read_events.py"};
  argv.insert(argv.end(), args.begin(), args.end());
  COURIER_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(argv, out, err));
  auto code = p.Wait(timeout);
  if (!code || *code != 0) return InternalError("reader failed: " + test::ReadFile(err));
  return test::ReadFile(out);
}

Result<Counted> Count(const test::TempDir& dir, const std::vector<std::string>& what, int events) {
  std::vector<std::string> args = {"count"};
  args.insert(args.end(), what.begin(), what.end());
  args.push_back(std::to_string(events));
  COURIER_ASSIGN_OR_RETURN(std::string line, RunReader(dir, args, Duration(1200000)));
  Counted c;
  long dropped = 0;
  if (std::sscanf(line.c_str(), "read=%ld distinct=%ld lost=%ld duplicates=%ld dropped=%ld",
                  &c.read, &c.distinct, &c.lost, &c.duplicates, &dropped) != 5) {
    return InternalError("reader said: " + line);
  }
  if (dropped > 0) {
    return InternalError("the dev broker dropped " + std::to_string(dropped) +
                         " records (a partition outgrew its 5 MiB): nothing to count");
  }
  return c;
}

Result<Counted> CountTopic(const test::TempDir& dir, const std::string& bootstrap, int events) {
  return Count(dir, {"kafka", bootstrap, "bench"}, events);
}

Status Sql(const std::string& url, const std::string& sql) {
  return test::PgQuery(url, sql).status();
}

// One line of a log for an error: the first that names an error (Node starts an out-of-heap
// abort with its last GCs, Python a failure with its traceback), else the first not empty.
std::string FirstLine(const std::string& text) {
  std::string first;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find("ERROR") != std::string::npos || line.find("Error") != std::string::npos) {
      return line;
    }
    if (first.empty()) first = line;
  }
  return first;
}

// A publication and slot (slot names are unique per server) for the Node pgoutput relay,
// made before the rows are written.
Status NodeSlot(const std::string& url, const std::string& slot) {
  COURIER_RETURN_IF_ERROR(Sql(url,
                              "CREATE PUBLICATION bench_node FOR TABLE courier_outbox WITH"
                              " (publish = 'insert')"));
  return Sql(url, "SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')");
}

// pg-transactional-outbox's table, publication and slot, by its own setup.
Status PtxoSetup(const test::TempDir& dir, const std::string& url, const std::string& slot) {
  const std::string log = dir.File("ptxo-setup-" + slot + ".log");
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p,
      Subprocess::Spawn({kNode, kPeers + "/node/ptxo_relay.js", "setup", url, slot}, "", log));
  auto code = p.Wait(Duration(120000));
  if (!code || *code != 0) {
    return InternalError("pg-transactional-outbox setup failed: " + FirstLine(test::ReadFile(log)));
  }
  return Status::Ok();
}

std::vector<std::string> CourierArgv(std::vector<std::string> args) {
  args.insert(args.begin(), COURIER_BINARY);
  args.insert(args.end(), g_courier_flags.begin(), g_courier_flags.end());
  return args;
}

// The relays, as argv. `bootstrap` is the dev broker's; `once` for the throughput runs.
std::vector<std::string> CourierCdc(const std::string& url, const std::string& sink, bool once) {
  std::vector<std::string> a = {"relay",  "--mode", "cdc",         "--source", url,
                                "--sink", sink,     "--log-level", "warn"};
  if (once) a.push_back("--once");
  return CourierArgv(a);
}
std::vector<std::string> CourierPoll(const std::string& url, const std::string& bootstrap,
                                     bool once) {
  std::vector<std::string> a = {"relay",       "--source", url, "--sink", CourierTopic(bootstrap),
                                "--log-level", "warn"};
  if (once) a.push_back("--once");
  return CourierArgv(a);
}
std::vector<std::string> Ptxo(const std::string& url, const std::string& slot,
                              const std::string& bootstrap) {
  return {kNode, kPeers + "/node/ptxo_relay.js", "run", url, slot, bootstrap, "bench"};
}
std::vector<std::string> NodeRelay(const std::string& url, const std::string& slot,
                                   const std::string& bootstrap, int expect) {
  std::vector<std::string> a = {
      kNode, kPeers + "/node/pgoutput_relay.js", url, slot, "bench_node", bootstrap, "bench"};
  if (expect > 0) {
    a.push_back("--expect");
    a.push_back(std::to_string(expect));
  }
  return a;
}
std::vector<std::string> PythonRelay(const std::string& url, const std::string& bootstrap,
                                     bool once) {
  std::vector<std::string> a = {kPython, kPeers + "/python/poll_relay.py", url, bootstrap, "bench"};
  if (once) a.push_back("--once");
  return a;
}

// Runs `argv` until it exits by itself (or, with `done`, until `done()` holds, then SIGTERM):
// its time, peak RSS, and what it cost PostgreSQL (PgCost on its database `url`) from its
// start to that end. Its output goes to `log`.
Result<Timed> TimeRelay(const std::string& url, const std::vector<std::string>& argv,
                        const std::string& log, const std::string& name, Duration timeout,
                        const std::function<bool()>& done = nullptr) {
  COURIER_ASSIGN_OR_RETURN(PgCost cost, PgCost::Start(url));
  const TimePoint start = Clock::Real().Now();
  COURIER_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(argv, log, log));
  if (!done) return WaitTimed(p, start, timeout, name, &cost);
  Timed t;
  const TimePoint deadline = start + timeout;
  TimePoint next_check = start;
  while (Clock::Real().Now() < deadline) {
    if (auto code = p.Wait(Duration(20))) {
      return InternalError(name + " exited with " + std::to_string(*code) + ": " +
                           FirstLine(test::ReadFile(log)));
    }
    t.peak_rss_kb = std::max(t.peak_rss_kb, PeakRssKb(p.pid()));
    cost.Sample();
    if (Clock::Real().Now() >= next_check) {  // `done` queries the database: not too often
      if (done()) break;
      next_check = Clock::Real().Now() + std::chrono::milliseconds(250);
    }
  }
  t.seconds = Seconds(start, Clock::Real().Now());
  Status cost_status = cost.Finish(t);  // before the SIGTERM, at the end of its time
  p.Signal(SIGTERM);
  if (!p.Wait(Duration(30000))) p.Signal(SIGKILL);
  if (t.seconds >= std::chrono::duration<double>(timeout).count()) {
    return InternalError(name + " did not finish in time");
  }
  COURIER_RETURN_IF_ERROR(cost_status);
  return t;
}

// One throughput contender: prepares its database (and broker), runs, counts.
// Runs `body` when the contender is selected; a row with skipped set otherwise.
Row Throughput(const std::string& name, const std::function<Status(Row&)>& body) {
  Row row;
  row.name = name;
  if (!Selected(name)) {
    row.skipped = true;
    return row;
  }
  std::fprintf(stderr, "%s ...\n", name.c_str());
  if (Status st = body(row); !st.ok()) row.error = st.message();
  return row;
}

// One latency contender's result.
struct LatencyRow {
  std::string name;
  long seen = 0;
  double p50 = 0, p99 = 0, max = 0;
  long peak_rss_kb = 0;
  std::string error;
};

// Commit→delivered latency: the reader follows the (fresh) broker's topic, the relay runs as
// a daemon, a writer commits `rate` events/s for `seconds`. `ready` says when the relay
// streams (or polls).
Status Latency(const test::TempDir& dir, const std::string& tag, const std::string& url,
               const OutboxTable& table, const std::string& bootstrap,
               const std::vector<std::string>& relay_argv, const std::function<bool()>& ready,
               int rate, int seconds, LatencyRow& row) {
  const int total = rate * seconds;
  const std::string ready_file = dir.File("latency-" + tag + ".ready");
  const std::string reader_out = dir.File("latency-" + tag + ".out");
  const std::string reader_err = dir.File("latency-" + tag + ".err");
  // The reader gives up a minute after the writer's last commit: a relay that cannot keep up
  // shows as fewer events seen.
  COURIER_ASSIGN_OR_RETURN(
      Subprocess reader,
      Subprocess::Spawn({kPython, kPeers + "/read_events.py", "latency", bootstrap, "bench",
                         std::to_string(total), std::to_string(seconds + 90), ready_file},
                        reader_out, reader_err));
  if (!test::WaitUntil([&] { return std::filesystem::exists(ready_file); }, Duration(60000))) {
    return InternalError("the latency reader did not start: " + test::ReadFile(reader_err));
  }
  const std::string log = dir.File("latency-" + tag + ".log");
  COURIER_ASSIGN_OR_RETURN(Subprocess relay, Subprocess::Spawn(relay_argv, log, log));
  if (!test::WaitUntil(ready, Duration(60000))) {
    return InternalError("the relay did not start: " + FirstLine(test::ReadFile(log)));
  }
  std::atomic<bool> failed{false};
  std::thread writer([&] {
    if (!WriteSteadily(url, rate, total, table).ok()) failed = true;
  });
  std::optional<int> code;
  while (!(code = reader.Wait(Duration(20)))) {
    row.peak_rss_kb = std::max(row.peak_rss_kb, PeakRssKb(relay.pid()));
  }
  writer.join();
  relay.Signal(SIGTERM);
  if (!relay.Wait(Duration(30000))) relay.Signal(SIGKILL);
  relay.Wait(Duration(10000));
  test::DropReplicationSlots(url);
  if (failed) return InternalError("the writer failed");
  const std::string line = test::ReadFile(reader_out);
  if (*code != 0 || std::sscanf(line.c_str(), "seen=%ld p50=%lf p99=%lf max=%lf", &row.seen,
                                &row.p50, &row.p99, &row.max) != 4) {
    return InternalError("the latency reader failed: " + line + test::ReadFile(reader_err));
  }
  return Status::Ok();
}

std::string Mb(long kb) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", static_cast<double>(kb) / 1024.0);
  return buf;
}

// "—" for none: no walsender (a polling relay).
std::string CpuSeconds(std::optional<double> s) {
  if (!s) return "—";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", *s);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  int events = 200000;
  int rate = 5000;
  int seconds = 10;
  for (int i = 1; i < argc; i += 2) {
    if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      g_only = argv[i + 1];
      continue;
    }
    if (std::strcmp(argv[i], "--courier-sink-query") == 0 && i + 1 < argc) {
      g_sink_query = argv[i + 1];
      continue;
    }
    if (std::strncmp(argv[i], "--courier-flag=", 15) == 0) {
      g_courier_flags.push_back(argv[i] + 15);
      --i;  // one argument
      continue;
    }
    const bool known = std::strcmp(argv[i], "--events") == 0 ||
                       std::strcmp(argv[i], "--rate") == 0 ||
                       std::strcmp(argv[i], "--seconds") == 0;
    if (!known || i + 1 >= argc || std::atoi(argv[i + 1]) <= 0) {
      std::fprintf(stderr,
                   "usage: courier_bench_compare [--events N] [--rate R] [--seconds S]"
                   " [--only LETTERS] [--courier-flag=FLAG]... [--courier-sink-query Q]\n");
      return 2;
    }
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--rate") == 0) rate = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atoi(argv[i + 1]);
  }
  if ((Selected("(d)") || Selected("(e)")) &&
      !std::filesystem::exists(kPeers + "/node/node_modules")) {
    std::fprintf(stderr, "run `npm ci` in %s/node first (./dev.sh bench compare does)\n",
                 kPeers.c_str());
    return 2;
  }
  auto pg = test::PostgresServer::Start(/*durable=*/true);
  if (!pg.ok()) {
    std::fprintf(stderr, "benchmark failed: %s\n", pg.status().message().c_str());
    return 1;
  }
  test::TempDir dir;
  // Generous: the slowest peer has been measured at ~200 events/s.
  const Duration timeout = Duration(1000LL * (600 + events / 50));
  const std::string with_slot_active =
      "SELECT count(*) FROM pg_replication_slots WHERE active AND database = current_database()";
  auto slot_active = [&](const std::string& url) {
    return [url, with_slot_active] {
      auto n = test::PgQuery(url, with_slot_active);
      return n.ok() && !n->empty() && (*n)[0] != "0";
    };
  };
  // A polling relay is ready once it holds a connection to its database.
  auto connected = [](const std::string& url) {
    return [url] {
      auto n = test::PgQuery(url,
                             "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                             " current_database() AND pid <> pg_backend_pid()");
      return n.ok() && !n->empty() && (*n)[0] != "0";
    };
  };

  std::vector<Row> rows;
  rows.push_back(
      Throughput("(a) pg_recvlogical (pgoutput) → /dev/null: the ceiling", [&](Row& row) -> Status {
        COURIER_ASSIGN_OR_RETURN(row.timed, TimeOutboxRecvlogical(**pg, events, kAggregates));
        return Status::Ok();
      }));
  rows.push_back(Throughput(
      "(b) courier relay --mode cdc → JSONL file, fsync per batch", [&](Row& row) -> Status {
        COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_cdc_file", true));
        COURIER_RETURN_IF_ERROR(Fill(url, events, CourierOutbox(), kAggregates));
        const std::string out = dir.File("cdc.jsonl");
        COURIER_ASSIGN_OR_RETURN(row.timed,
                                 TimeRelay(url, CourierCdc(url, "file://" + out, true),
                                           dir.File("cdc-file.log"), "courier", timeout));
        test::DropReplicationSlots(url);  // its WAL is not kept for the runs after it
        COURIER_ASSIGN_OR_RETURN(row.counted, Count(dir, {"file", out}, events));
        return Status::Ok();
      }));
  rows.push_back(Throughput("(b) courier relay --mode cdc → dev broker", [&](Row& row) -> Status {
    COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_cdc_kafka", true));
    COURIER_RETURN_IF_ERROR(Fill(url, events, CourierOutbox(), kAggregates));
    COURIER_ASSIGN_OR_RETURN(DevBrokerProcess broker,
                             SpawnDevBroker(dir, "bootstrap-cdc", events, kBytesPerEvent));
    COURIER_ASSIGN_OR_RETURN(row.timed,
                             TimeRelay(url, CourierCdc(url, CourierTopic(broker.bootstrap), true),
                                       dir.File("cdc-kafka.log"), "courier", timeout));
    test::DropReplicationSlots(url);
    COURIER_ASSIGN_OR_RETURN(row.counted, CountTopic(dir, broker.bootstrap, events));
    return Status::Ok();
  }));
  rows.push_back(Throughput("(c) courier relay (polling) → dev broker", [&](Row& row) -> Status {
    COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_poll", false));
    COURIER_RETURN_IF_ERROR(Fill(url, events, CourierOutbox(), kAggregates));
    COURIER_ASSIGN_OR_RETURN(DevBrokerProcess broker,
                             SpawnDevBroker(dir, "bootstrap-poll", events, kBytesPerEvent));
    COURIER_ASSIGN_OR_RETURN(row.timed, TimeRelay(url, CourierPoll(url, broker.bootstrap, true),
                                                  dir.File("poll.log"), "courier", timeout));
    COURIER_ASSIGN_OR_RETURN(row.counted, CountTopic(dir, broker.bootstrap, events));
    return Status::Ok();
  }));
  rows.push_back(Throughput(
      "(d) pg-transactional-outbox 0.5.7 (replication listener, segment mutex) + kafkajs →"
      " dev broker",
      [&](Row& row) -> Status {
        COURIER_ASSIGN_OR_RETURN(std::string url, (*pg)->NewDatabase("bench_ptxo"));
        COURIER_RETURN_IF_ERROR(PtxoSetup(dir, url, "bench_ptxo"));
        COURIER_RETURN_IF_ERROR(Fill(url, events, PtxoOutbox(), kAggregates));
        COURIER_ASSIGN_OR_RETURN(DevBrokerProcess broker,
                                 SpawnDevBroker(dir, "bootstrap-ptxo", events, kBytesPerEvent));
        // It runs until stopped: done when every row is marked processed (which it does after
        // its handler returned, i.e. after the broker's ack).
        COURIER_ASSIGN_OR_RETURN(
            row.timed, TimeRelay(url, Ptxo(url, "bench_ptxo", broker.bootstrap),
                                 dir.File("ptxo.log"), "pg-transactional-outbox", timeout, [&] {
                                   auto n = test::PgQuery(
                                       url,
                                       "SELECT count(*) FROM outbox WHERE processed_at IS NULL");
                                   return n.ok() && !n->empty() && (*n)[0] == "0";
                                 }));
        test::DropReplicationSlots(url);
        COURIER_ASSIGN_OR_RETURN(row.counted, CountTopic(dir, broker.bootstrap, events));
        return Status::Ok();
      }));
  rows.push_back(Throughput(
      "(e) Node pgoutput relay (pg-logical-replication 2.5.0 + kafkajs 2.2.4, batched) → dev"
      " broker",
      [&](Row& row) -> Status {
        COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_node", false));
        COURIER_RETURN_IF_ERROR(NodeSlot(url, "bench_node"));
        COURIER_RETURN_IF_ERROR(Fill(url, events, CourierOutbox(), kAggregates));
        COURIER_ASSIGN_OR_RETURN(DevBrokerProcess broker,
                                 SpawnDevBroker(dir, "bootstrap-node", events, kBytesPerEvent));
        COURIER_ASSIGN_OR_RETURN(
            row.timed, TimeRelay(url, NodeRelay(url, "bench_node", broker.bootstrap, events),
                                 dir.File("node.log"), "the Node relay", timeout));
        test::DropReplicationSlots(url);
        COURIER_ASSIGN_OR_RETURN(row.counted, CountTopic(dir, broker.bootstrap, events));
        return Status::Ok();
      }));
  rows.push_back(Throughput(
      "(f) Python polling relay (psycopg2 + confluent-kafka, SKIP LOCKED × 1000) → dev broker",
      [&](Row& row) -> Status {
        COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_python", false));
        COURIER_RETURN_IF_ERROR(Fill(url, events, CourierOutbox(), kAggregates));
        COURIER_ASSIGN_OR_RETURN(DevBrokerProcess broker,
                                 SpawnDevBroker(dir, "bootstrap-python", events, kBytesPerEvent));
        COURIER_ASSIGN_OR_RETURN(row.timed,
                                 TimeRelay(url, PythonRelay(url, broker.bootstrap, true),
                                           dir.File("python.log"), "the Python relay", timeout));
        test::DropReplicationSlots(url);
        COURIER_ASSIGN_OR_RETURN(row.counted, CountTopic(dir, broker.bootstrap, events));
        return Status::Ok();
      }));

  // Latency, each into a fresh broker.
  const int total = rate * seconds;
  std::vector<LatencyRow> latency;
  auto latency_run =
      [&](const std::string& name, const std::string& tag,
          const std::function<Status(LatencyRow&, const std::string& bootstrap)>& body) {
        if (!Selected(name)) return;
        LatencyRow row;
        row.name = name;
        std::fprintf(stderr, "latency: %s ...\n", name.c_str());
        Status st = [&]() -> Status {
          COURIER_ASSIGN_OR_RETURN(
              DevBrokerProcess broker,
              SpawnDevBroker(dir, "bootstrap-latency-" + tag, total, kBytesPerEvent));
          return body(row, broker.bootstrap);
        }();
        if (!st.ok()) row.error = st.message();
        latency.push_back(row);
      };
  latency_run("(b) courier relay --mode cdc", "cdc", [&](LatencyRow& row, const std::string& bs) {
    COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_lat_cdc", true));
    return Latency(dir, "cdc", url, CourierOutbox(), bs, CourierCdc(url, CourierTopic(bs), false),
                   slot_active(url), rate, seconds, row);
  });
  latency_run("(c) courier relay (polling)", "poll", [&](LatencyRow& row, const std::string& bs) {
    COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_lat_poll", false));
    return Latency(dir, "poll", url, CourierOutbox(), bs, CourierPoll(url, bs, false),
                   connected(url), rate, seconds, row);
  });
  latency_run("(d) pg-transactional-outbox + kafkajs", "ptxo",
              [&](LatencyRow& row, const std::string& bs) -> Status {
                COURIER_ASSIGN_OR_RETURN(std::string url, (*pg)->NewDatabase("bench_lat_ptxo"));
                COURIER_RETURN_IF_ERROR(PtxoSetup(dir, url, "bench_lat_ptxo"));
                return Latency(dir, "ptxo", url, PtxoOutbox(), bs, Ptxo(url, "bench_lat_ptxo", bs),
                               slot_active(url), rate, seconds, row);
              });
  latency_run("(e) Node pgoutput relay", "node",
              [&](LatencyRow& row, const std::string& bs) -> Status {
                COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_lat_node", false));
                COURIER_RETURN_IF_ERROR(NodeSlot(url, "bench_lat_node"));
                return Latency(dir, "node", url, CourierOutbox(), bs,
                               NodeRelay(url, "bench_lat_node", bs, 0), slot_active(url), rate,
                               seconds, row);
              });
  latency_run(
      "(f) Python polling relay", "python", [&](LatencyRow& row, const std::string& bs) -> Status {
        COURIER_ASSIGN_OR_RETURN(std::string url, NewOutbox(**pg, "bench_lat_python", false));
        return Latency(dir, "python", url, CourierOutbox(), bs, PythonRelay(url, bs, false),
                       connected(url), rate, seconds, row);
      });

  // The tables.
  bool complete = true;
  const double ceiling =
      !rows[0].skipped && rows[0].error.empty() ? events / rows[0].timed.seconds : 0;
  std::printf(
      "| %d outbox rows, 100 per transaction | events/s | ratio to (a) | lost | duplicates |"
      " peak RSS MB | walsender CPU s | PostgreSQL CPU s |\n",
      events);
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    if (r.skipped) continue;
    if (!r.error.empty()) {
      complete = false;
      std::printf("| %s | failed: %s | | | | | | |\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    const double rate_r = events / r.timed.seconds;
    std::string ratio = "—";
    if (ceiling > 0) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2f", rate_r / ceiling);
      ratio = buf;
    }
    std::string lost = "—", dups = "—";
    if (r.counted) {
      lost = std::to_string(r.counted->lost);
      dups = std::to_string(r.counted->duplicates);
      if (r.counted->lost != 0) complete = false;
    }
    std::printf("| %s | %.0f | %s | %s | %s | %s | %s | %s |\n", r.name.c_str(), rate_r,
                ratio.c_str(), lost.c_str(), dups.c_str(), Mb(r.timed.peak_rss_kb).c_str(),
                CpuSeconds(r.timed.walsender_cpu_s).c_str(),
                CpuSeconds(r.timed.server_cpu_s).c_str());
  }
  std::printf(
      "\n| commit→delivered latency at %d events/s (10 per transaction) for %d s, dev broker |"
      " p50 ms | p99 ms | max ms | delivered | peak RSS MB |\n",
      rate, seconds);
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (const LatencyRow& r : latency) {
    if (!r.error.empty()) {
      complete = false;
      std::printf("| %s | failed: %s | | | | |\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    // A relay that could not keep up: its percentiles are of what it delivered in time.
    std::printf("| %s | %.1f | %.1f | %.1f | %ld of %d | %s |\n", r.name.c_str(), r.p50, r.p99,
                r.max, r.seen, total, Mb(r.peak_rss_kb).c_str());
  }
  std::printf("\nmachine: %s\n", Machine().c_str());
  return complete ? 0 : 1;
}
