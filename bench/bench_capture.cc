// Table CDC throughput, side by side in one run, same PostgreSQL server (fsync on):
//   (a) pg_recvlogical streaming the table's changes (pgoutput) to /dev/null: the ceiling
//   (b) courier relay --mode cdc --capture → JSONL file sink (fsync per batch)
//   (c) courier relay --mode cdc --capture → dev broker
// Each reads the same changes of a `products` table from its own database: N inserts (100
// per transaction) then N updates of the same rows (100 per transaction), so 2N changes; the
// slot exists before the rows are written, so they come from the WAL.
// Then the snapshot: a table of M rows that exist when capture starts,
//   (d) COPY products TO STDOUT through psql to /dev/null: the ceiling
//   (e) courier migrate --capture + relay --once → JSONL file: M `read` events
// Prints Markdown for docs/benchmarks.md. Usage: courier_bench_capture [--changes N] [--rows M]
#include <cstdio>
#include <cstring>

#include "bench/bench_common.h"
#include "core/postgres.h"
#include "core/subprocess.h"
#include "sources/pgoutput.h"
#include "support/harness.h"

using namespace courier;
using namespace courier::bench;

namespace {

constexpr const char* kTable =
    "CREATE TABLE products (id int8 PRIMARY KEY, name text NOT NULL, price numeric(12,2),"
    " stock int, active bool, tags jsonb, updated_at timestamptz NOT NULL DEFAULT now())";

Result<std::string> NewTable(test::PostgresServer& pg, const std::string& name) {
  COURIER_ASSIGN_OR_RETURN(std::string url, pg.NewDatabase(name));
  COURIER_RETURN_IF_ERROR(test::PgQuery(url, kTable).status());
  return url;
}

// `rows` inserts, 100 per transaction, then (with `updates`) an update of each, 100 per
// transaction.
Status Write(const std::string& url, int rows, bool updates) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  for (int base = 1; base <= rows; base += 100) {
    COURIER_RETURN_IF_ERROR(
        PgExec(conn.get(),
               "INSERT INTO products (id, name, price, stock, active, tags) SELECT g,"
               " 'product ' || g, g * 1.25, g % 500, g % 3 <> 0,"
               " jsonb_build_object('color', 'red', 'size', g % 7) FROM"
               " generate_series($1::int8, $2::int8) g",
               {std::to_string(base), std::to_string(std::min(rows, base + 99))})
            .status());
  }
  if (!updates) return Status::Ok();
  for (int base = 1; base <= rows; base += 100) {
    COURIER_RETURN_IF_ERROR(PgExec(conn.get(),
                                   "UPDATE products SET stock = stock + 1, updated_at = now()"
                                   " WHERE id BETWEEN $1::int8 AND $2::int8",
                                   {std::to_string(base), std::to_string(base + 99)})
                                .status());
  }
  return Status::Ok();
}

Result<double> TimeRecvlogical(test::PostgresServer& pg, int rows) {
  COURIER_ASSIGN_OR_RETURN(std::string url, NewTable(pg, "bench_capture_recv"));
  COURIER_RETURN_IF_ERROR(
      test::PgQuery(url, "CREATE PUBLICATION bench FOR TABLE products").status());
  COURIER_RETURN_IF_ERROR(
      test::PgQuery(url, "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
          .status());
  COURIER_RETURN_IF_ERROR(Write(url, rows, /*updates=*/true));
  COURIER_ASSIGN_OR_RETURN(std::string end, Query1(url, "SELECT pg_current_wal_flush_lsn()::text"));
  const TimePoint start = Clock::Real().Now();
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p,
      Subprocess::Spawn({"/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", url, "--slot",
                         "bench_recv", "--start", "--no-loop", "-o", "proto_version=1", "-o",
                         "publication_names=bench", "-E", end, "-f", "/dev/null"}));
  auto code = p.Wait(Duration(1200000));
  if (!code || *code != 0) return InternalError("pg_recvlogical failed");
  const double secs = Seconds(start, Clock::Real().Now());
  (void)test::PgQuery(url, "SELECT pg_drop_replication_slot('bench_recv')");
  return secs;
}

// (b), (c): capture set up on the empty table, then the changes, then the relay drains them.
Result<double> TimeCapture(test::PostgresServer& pg, const std::string& name, int rows,
                           const std::string& sink) {
  COURIER_ASSIGN_OR_RETURN(std::string url, NewTable(pg, name));
  test::CommandResult m =
      test::RunCourier({"migrate", "--source", url, "--capture", "public.products"});
  if (m.exit_code != 0) return InternalError("courier migrate --capture failed: " + m.err);
  COURIER_RETURN_IF_ERROR(Write(url, rows, /*updates=*/true));
  return TimeCourier({"relay", "--mode", "cdc", "--source", url, "--capture", "public.products",
                      "--sink", sink, "--once", "--log-level", "warn"});
}

// (d): COPY of the whole table through PostgreSQL's own client.
Result<double> TimeCopy(const std::string& url) {
  const TimePoint start = Clock::Real().Now();
  COURIER_ASSIGN_OR_RETURN(
      Subprocess p, Subprocess::Spawn({"/usr/lib/postgresql/15/bin/psql", "-X", "-q", "-d", url,
                                       "-o", "/dev/null", "-c", "COPY products TO STDOUT"}));
  auto code = p.Wait(Duration(1200000));
  if (!code || *code != 0) return InternalError("psql COPY failed");
  return Seconds(start, Clock::Real().Now());
}

// (e): capture starts on a filled table: its rows arrive as `read` events.
Result<double> TimeSnapshot(const std::string& url, const std::string& sink) {
  const TimePoint start = Clock::Real().Now();
  test::CommandResult m =
      test::RunCourier({"migrate", "--source", url, "--capture", "public.products"});
  if (m.exit_code != 0) return InternalError("courier migrate --capture failed: " + m.err);
  test::CommandResult r =
      test::RunCourier({"relay", "--mode", "cdc", "--source", url, "--capture", "public.products",
                        "--sink", sink, "--once", "--log-level", "warn"},
                       Duration(1200000));
  if (r.exit_code != 0) return InternalError("courier relay failed: " + r.err);
  return Seconds(start, Clock::Real().Now());
}

size_t Lines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

int Fail(const Status& st) {
  std::fprintf(stderr, "benchmark failed: %s\n", st.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int changes = 200000;
  int rows = 200000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--changes") == 0) changes = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--rows") == 0) rows = std::atoi(argv[i + 1]);
  }
  const int inserts = changes / 2;
  auto pg = test::PostgresServer::Start(/*durable=*/true);
  if (!pg.ok()) return Fail(pg.status());
  test::TempDir dir;

  auto a = TimeRecvlogical(**pg, inserts);
  if (!a.ok()) return Fail(a.status());
  std::fprintf(stderr, "(a) pg_recvlogical: %.0f changes/s\n", changes / *a);

  const std::string file_b = dir.File("capture.jsonl");
  auto b = TimeCapture(**pg, "bench_capture_file", inserts, "file://" + file_b);
  if (!b.ok()) return Fail(b.status());
  if (Lines(file_b) < static_cast<size_t>(changes)) {
    return Fail(InternalError("(b) delivered " + std::to_string(Lines(file_b)) + " of " +
                              std::to_string(changes) + " changes"));
  }
  std::fprintf(stderr, "(b) courier capture → file: %.0f changes/s\n", changes / *b);

  auto bootstrap = StartDevBroker(dir, "bootstrap-c", changes);
  if (!bootstrap.ok()) return Fail(bootstrap.status());
  auto c = TimeCapture(**pg, "bench_capture_kafka", inserts, "kafka://" + *bootstrap + "/bench");
  if (!c.ok()) return Fail(c.status());
  std::fprintf(stderr, "(c) courier capture → dev broker: %.0f changes/s\n", changes / *c);

  auto snap_url = NewTable(**pg, "bench_snapshot");
  if (!snap_url.ok()) return Fail(snap_url.status());
  if (Status st = Write(*snap_url, rows, /*updates=*/false); !st.ok()) return Fail(st);
  (void)test::PgQuery(*snap_url, "VACUUM ANALYZE products");
  auto d = TimeCopy(*snap_url);
  if (!d.ok()) return Fail(d.status());
  const std::string file_e = dir.File("snapshot.jsonl");
  auto e = TimeSnapshot(*snap_url, "file://" + file_e);
  if (!e.ok()) return Fail(e.status());
  if (Lines(file_e) < static_cast<size_t>(rows)) {
    return Fail(InternalError("(e) delivered " + std::to_string(Lines(file_e)) + " of " +
                              std::to_string(rows) + " rows"));
  }

  const double ceiling = changes / *a;
  std::printf(
      "| %d changes of a 7-column table (%d inserts, then as many updates; 100 per"
      " transaction) | changes/s | ratio to (a) |\n",
      changes, inserts);
  std::printf("|---|---:|---:|\n");
  std::printf("| (a) pg_recvlogical (pgoutput) → /dev/null: the ceiling | %.0f | 1.00 |\n",
              ceiling);
  std::printf("| (b) courier relay --capture → JSONL file, fsync per batch | %.0f | %.2f |\n",
              changes / *b, (changes / *b) / ceiling);
  std::printf("| (c) courier relay --capture → dev broker | %.0f | %.2f |\n", changes / *c,
              (changes / *c) / ceiling);
  std::printf("\n| snapshot of %d existing rows | rows/s | ratio to (d) |\n", rows);
  std::printf("|---|---:|---:|\n");
  std::printf("| (d) COPY products TO STDOUT (psql) → /dev/null: the ceiling | %.0f | 1.00 |\n",
              rows / *d);
  std::printf(
      "| (e) courier migrate --capture + relay --once → JSONL file (read events) |"
      " %.0f | %.2f |\n",
      rows / *e, (rows / *e) / (rows / *d));
  std::printf("\nmachine: %s\n", Machine().c_str());
  return 0;
}
