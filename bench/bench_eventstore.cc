// The event store's cost, side by side in one run, on one PostgreSQL (fsync on):
//  - appends/s through courier::EventStore::Append with an expected version, one event per
//    transaction and 100 per transaction, from 4 clients each writing its own streams;
//  - the same rows as plain INSERTs into a table of the same columns without the store's
//    constraints (no unique (stream, version), no unique event_id): the ceiling;
//  - projection events/s: a Subscribe handler folding every event into a balance table, its
//    checkpoint in the same transaction, against a plain keyset read of the same rows.
// Prints Markdown for docs/benchmarks.md. Usage: courier_bench_eventstore [--single N]
//   [--batches N] [--runs R]
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <tuple>

#include "bench/bench_common.h"
#include "core/postgres.h"
#include "courier/event_store.h"
#include "courier/projection.h"
#include "support/harness.h"

using namespace courier;
using namespace courier::bench;

namespace {

constexpr int kClients = 4;
constexpr int kBatch = 100;

// ~80 bytes, the size of a typical account event.
std::string Payload(int64_t n) {
  return "{\"amount\":" + std::to_string(n % 1000 + 1) +
         ",\"currency\":\"EUR\",\"reference\":\"ref-" + std::to_string(n) +
         "\",\"channel\":\"branch\"}";
}

// Every client writes its own kStreams streams, one stream per transaction (its t-th goes to
// stream t % kStreams), so appends never conflict: what is measured is the cost of the check,
// not of retries.
constexpr int kStreams = 16;
// Each phase (`per_txn`) has streams of its own.
std::string StreamOf(int client, int64_t t, int per_txn) {
  return "acct-" + std::to_string(per_txn) + "-" + std::to_string(client) + "-" +
         std::to_string(t % kStreams);
}

// Runs `work(client, conn)` on kClients threads, each with its own connection; its wall time.
Result<double> OnClients(const std::string& url, const std::function<Status(int, PGconn*)>& work) {
  std::vector<PgConn> conns;
  for (int c = 0; c < kClients; ++c) {
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
    conns.push_back(std::move(conn));
  }
  std::vector<Status> results(kClients);
  std::vector<std::thread> threads;
  const TimePoint start = Clock::Real().Now();
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] { results[c] = work(c, conns[c].get()); });
  }
  for (auto& t : threads) t.join();
  const double seconds = Seconds(start, Clock::Real().Now());
  for (const Status& st : results) COURIER_RETURN_IF_ERROR(st);
  return seconds;
}

Status CreatePlainTable(const std::string& url) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  return PgRun(conn.get(),
               "DROP TABLE IF EXISTS plain_events;"
               "CREATE TABLE plain_events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
               " stream_type text NOT NULL, stream_id text NOT NULL, version bigint NOT NULL,"
               " event_id uuid NOT NULL DEFAULT gen_random_uuid(), event_type text NOT NULL,"
               " payload json NOT NULL, created_at timestamptz NOT NULL DEFAULT now())");
}

// Plain INSERTs of the rows the store's benchmark appends: `per_txn` rows per transaction,
// `txns` transactions per client. The version is the client's own count, unchecked.
Result<double> PlainInserts(const std::string& url, int txns, int per_txn) {
  COURIER_RETURN_IF_ERROR(CreatePlainTable(url));
  COURIER_ASSIGN_OR_RETURN(
      double seconds, OnClients(url, [&](int client, PGconn* conn) -> Status {
        int64_t n = 0;
        std::vector<int64_t> versions(kStreams, 0);
        for (int t = 0; t < txns; ++t) {
          std::string sql =
              "INSERT INTO plain_events (stream_type, stream_id, version, event_type, payload) "
              "VALUES ";
          PgParams params;
          for (int i = 0; i < per_txn; ++i, ++n) {
            if (i > 0) sql += ",";
            const int p = static_cast<int>(params.size());
            sql += "('account',$" + std::to_string(p + 1) + ",$" + std::to_string(p + 2) +
                   ",'FundsDeposited',$" + std::to_string(p + 3) + ")";
            params.push_back(StreamOf(client, t, per_txn));
            params.push_back(std::to_string(++versions[t % kStreams]));
            params.push_back(Payload(n));
          }
          // One statement is one transaction (autocommit), as one Append is.
          COURIER_RETURN_IF_ERROR(PgExec(conn, sql, params).status());
        }
        return Status::Ok();
      }));
  return kClients * static_cast<double>(txns) * per_txn / seconds;
}

// The same rows through EventStore::Append, each transaction checking the expected version
// (the writer's last one for the stream, kept in memory as a service that just read the stream
// would have it).
Result<double> StoreAppends(const std::string& url, int txns, int per_txn) {
  const EventStore store;
  COURIER_ASSIGN_OR_RETURN(
      double seconds, OnClients(url, [&](int client, PGconn* conn) -> Status {
        int64_t n = 0;
        std::vector<int64_t> versions(kStreams, kNoStream);
        for (int t = 0; t < txns; ++t) {
          std::vector<NewEvent> events;
          for (int i = 0; i < per_txn; ++i, ++n) {
            events.push_back({.event_type = "FundsDeposited", .payload = Payload(n)});
          }
          COURIER_RETURN_IF_ERROR(PgRun(conn, "BEGIN"));
          COURIER_ASSIGN_OR_RETURN(AppendResult appended,
                                   store.Append(conn, "account", StreamOf(client, t, per_txn),
                                                versions[t % kStreams], events));
          COURIER_RETURN_IF_ERROR(PgRun(conn, "COMMIT"));
          versions[t % kStreams] = appended.version;
        }
        return Status::Ok();
      }));
  return kClients * static_cast<double>(txns) * per_txn / seconds;
}

// Every row of the table read in position order, 1000 at a time (keyset): the ceiling of any
// reader of the store.
Result<double> PlainKeysetRead(const std::string& url, int64_t events) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  const TimePoint start = Clock::Real().Now();
  int64_t last = 0, read = 0;
  while (true) {
    COURIER_ASSIGN_OR_RETURN(
        PgResult rows,
        PgExec(conn.get(),
               "SELECT position, stream_id, version, event_id, event_type, payload FROM "
               "courier_events WHERE position > $1 ORDER BY position LIMIT 1000",
               {std::to_string(last)}));
    const int n = PQntuples(rows.get());
    if (n == 0) break;
    read += n;
    last = std::stoll(PQgetvalue(rows.get(), n - 1, 0));
  }
  if (read != events) return InternalError("read " + std::to_string(read) + " events");
  return read / Seconds(start, Clock::Real().Now());
}

// The same through ReadAll (gap-safe: each call waits out the writers it saw).
Result<double> StoreReadAll(const std::string& url, int64_t events) {
  const EventStore store;
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
  const TimePoint start = Clock::Real().Now();
  int64_t last = 0, read = 0;
  while (true) {
    COURIER_ASSIGN_OR_RETURN(std::vector<RecordedEvent> batch,
                             store.ReadAll(conn.get(), last, 1000));
    if (batch.empty()) break;
    read += static_cast<int64_t>(batch.size());
    last = batch.back().position;
  }
  if (read != events) return InternalError("ReadAll gave " + std::to_string(read) + " events");
  return read / Seconds(start, Clock::Real().Now());
}

// A projection folding every event into a balance per account (one upsert per event), its
// checkpoint committed with each batch of 100: events/s from the first event to the last.
Result<double> Projected(const std::string& url, int64_t events, const std::string& name) {
  {
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(url));
    COURIER_RETURN_IF_ERROR(PgRun(conn.get(),
                                  "CREATE TABLE IF NOT EXISTS bench_balances (account text "
                                  "PRIMARY KEY, balance bigint NOT NULL)"));
  }
  ProjectionOptions o;
  o.db_url = url;
  o.name = name;
  o.poll_interval = Duration(10);
  Projection projection(o);
  Status result;
  const TimePoint start = Clock::Real().Now();
  std::thread runner([&] {
    result = projection.Subscribe(From::Checkpoint(), [](PGconn* c, const ProjectedEvent& e) {
      const std::string amount = std::to_string(e.payload.size());
      return PgExec(c,
                    "INSERT INTO bench_balances VALUES ($1, $2) ON CONFLICT (account) DO "
                    "UPDATE SET balance = bench_balances.balance + EXCLUDED.balance",
                    {e.stream_id, amount})
          .status();
    });
  });
  const bool done = test::WaitUntil([&] { return projection.applied() >= events || !result.ok(); },
                                    Duration(1200000));
  const double seconds = Seconds(start, Clock::Real().Now());
  projection.RequestStop();
  runner.join();
  COURIER_RETURN_IF_ERROR(result);
  if (!done) return InternalError("the projection did not catch up");
  return events / seconds;
}

int Fail(const Status& st) {
  std::fprintf(stderr, "benchmark failed: %s\n", st.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int single = 1500;  // transactions per client, one event each
  int batches = 60;   // transactions per client, kBatch events each
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--single") == 0) single = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--batches") == 0) batches = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  }
  auto pg = test::PostgresServer::Start(/*durable=*/true);
  if (!pg.ok()) return Fail(pg.status());
  std::vector<double> plain_single, plain_batched, store_single, store_batched;
  std::vector<double> keyset, read_all, projected;
  for (int r = 0; r < runs; ++r) {
    auto url = (*pg)->NewDatabase("bench_es");
    if (!url.ok()) return Fail(url.status());
    test::CommandResult migrated = test::RunCourier({"migrate", "--event-store", "--source", *url});
    if (migrated.exit_code != 0) return Fail(InternalError("migrate: " + migrated.err));
    // Each pair back to back, plain first, so both see the same server state.
    for (auto [plain, store, txns, per_txn] :
         {std::tuple{&plain_single, &store_single, single, 1},
          std::tuple{&plain_batched, &store_batched, batches, kBatch}}) {
      auto a = PlainInserts(*url, txns, per_txn);
      if (!a.ok()) return Fail(a.status());
      plain->push_back(*a);
      auto b = StoreAppends(*url, txns, per_txn);
      if (!b.ok()) return Fail(b.status().WithContext("appends"));
      store->push_back(*b);
    }
    const int64_t events = kClients * (static_cast<int64_t>(single) + int64_t{batches} * kBatch);
    auto k = PlainKeysetRead(*url, events);
    if (!k.ok()) return Fail(k.status());
    keyset.push_back(*k);
    auto ra = StoreReadAll(*url, events);
    if (!ra.ok()) return Fail(ra.status());
    read_all.push_back(*ra);
    auto p = Projected(*url, events, "bench");
    if (!p.ok()) return Fail(p.status().WithContext("projection"));
    projected.push_back(*p);
  }
  std::printf("### %s\n\n", Machine().c_str());
  std::printf("| %d clients, own streams, fsync on (median of %d runs) | events/s | ratio |\n",
              kClients, runs);
  std::printf("|---|---:|---:|\n");
  const double ps = Median(plain_single), ss = Median(store_single);
  const double pb = Median(plain_batched), sb = Median(store_batched);
  std::printf("| plain INSERT, 1 row per transaction | %.0f | 1.00 |\n", ps);
  std::printf("| EventStore::Append, 1 event per transaction, expected version | %.0f | %.2f |\n",
              ss, ss / ps);
  std::printf("| plain INSERT, %d rows per transaction | %.0f | 1.00 |\n", kBatch, pb);
  std::printf("| EventStore::Append, %d events per transaction, expected version | %.0f | %.2f |\n",
              kBatch, sb, sb / pb);
  const double kr = Median(keyset), rr = Median(read_all), pr = Median(projected);
  std::printf("\n| reading the %d events back | events/s | ratio |\n|---|---:|---:|\n",
              static_cast<int>(kClients * (single + batches * kBatch)));
  std::printf("| plain keyset SELECT, 1000 per query | %.0f | 1.00 |\n", kr);
  std::printf("| EventStore::ReadAll (gap-safe horizon), 1000 per call | %.0f | %.2f |\n", rr,
              rr / kr);
  std::printf("| Projection::Subscribe, an upsert per event, checkpoint per 100 | %.0f | %.2f |\n",
              pr, pr / kr);
  return 0;
}
