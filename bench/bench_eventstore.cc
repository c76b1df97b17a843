// The event store's cost, side by side in one run, on one PostgreSQL (fsync on):
//  - appends/s through courier::EventStore::Append with an expected version, one event per
//    transaction and 100 per transaction, from 4 clients each writing its own streams;
//  - the same rows as plain INSERTs into a table of the same columns without the store's
//    constraints (no unique (stream, version), no unique event_id): the ceiling;
//  - projection events/s: a Subscribe handler folding every event into a balance table, its
//    checkpoint in the same transaction, against a plain keyset read of the same rows;
//  - listen-to-yourself's command side: CommandLog::Append to a dev broker (a subprocess),
//    one command at a time and many in flight at once, against a plain librdkafka producer
//    with the same settings sending the same records (one at a time, each waiting for its
//    delivery report; all produced, then one flush).
// Prints Markdown for docs/benchmarks.md. Usage: courier_bench_eventstore [--single N]
//   [--batches N] [--commands N] [--command-batch N] [--runs R]
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <tuple>

#include <librdkafka/rdkafka.h>

#include "bench/bench_common.h"
#include "core/postgres.h"
#include "core/uuid.h"
#include "courier/command_log.h"
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

// Listen-to-yourself's command side. Every record: key = one of kStreams accounts, an
// account event's payload, headers event_id, event_type, aggregate_type: what CommandLog
// sends.
constexpr int kInFlight = 64;  // callers appending at once in the batched CommandLog run

// A plain librdkafka producer with CommandLog's settings (idempotent, acks=all, no linger, no
// Nagle), its delivery reports counted.
class PlainProducer {
 public:
  static Result<std::unique_ptr<PlainProducer>> Open(const std::string& bootstrap) {
    auto p = std::unique_ptr<PlainProducer>(new PlainProducer);
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"bootstrap.servers", bootstrap},
             {"enable.idempotence", "true"},
             {"acks", "all"},
             {"linger.ms", "0"},
             {"socket.nagle.disable", "true"},
             {"queue.buffering.max.messages", "1000000"},
             {"message.timeout.ms", "10000"}}) {
      if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return InvalidArgumentError(err);
      }
    }
    rd_kafka_conf_set_opaque(conf, p.get());
    rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* self) {
      auto* producer = static_cast<PlainProducer*>(self);
      (m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? producer->acked_ : producer->failed_)++;
    });
    p->rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (p->rk_ == nullptr) {
      rd_kafka_conf_destroy(conf);
      return InvalidArgumentError(err);
    }
    return p;
  }
  ~PlainProducer() {
    if (rk_ != nullptr) {
      rd_kafka_flush(rk_, 10000);
      rd_kafka_destroy(rk_);
    }
  }

  Status Produce(const std::string& topic, const std::string& key, const std::string& payload) {
    const std::string id = NewUuidV7();
    rd_kafka_headers_t* headers = rd_kafka_headers_new(3);
    rd_kafka_header_add(headers, "event_id", -1, id.data(), static_cast<ssize_t>(id.size()));
    rd_kafka_header_add(headers, "event_type", -1, "FundsDeposited", -1);
    rd_kafka_header_add(headers, "aggregate_type", -1, "account", -1);
    while (true) {
      const rd_kafka_resp_err_t err = rd_kafka_producev(
          rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Ok();
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_headers_destroy(headers);
        return RetriableError(rd_kafka_err2str(err));
      }
      rd_kafka_poll(rk_, 10);
    }
  }
  // Waits until every record produced so far is acknowledged.
  Status Flush() {
    if (rd_kafka_flush(rk_, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return RetriableError("plain producer: flush timed out");
    }
    rd_kafka_poll(rk_, 0);
    if (failed_ > 0) return RetriableError(std::to_string(failed_) + " records failed");
    return Status::Ok();
  }
  int64_t acked() const { return acked_; }

 private:
  PlainProducer() = default;
  rd_kafka_t* rk_ = nullptr;
  int64_t acked_ = 0;  // counted on the thread that polls (Flush's)
  int64_t failed_ = 0;
};

std::string KeyOf(int64_t n) { return "acct-" + std::to_string(n % kStreams); }

struct CommandFigures {
  double plain_single = 0, log_single = 0, plain_batched = 0, log_batched = 0;
};

Result<CommandFigures> CommandAppends(const std::string& bootstrap, int single, int batched) {
  CommandFigures f;
  const std::string topic = "bench";
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<PlainProducer> plain, PlainProducer::Open(bootstrap));
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<CommandLog> log,
                           CommandLog::Open({.url = "kafka://" + bootstrap + "/" + topic,
                                             .timeout = std::chrono::seconds(10)}));
  // Both connected and the topic's metadata known before the clocks start.
  COURIER_RETURN_IF_ERROR(plain->Produce(topic, KeyOf(0), Payload(0)));
  COURIER_RETURN_IF_ERROR(plain->Flush());
  COURIER_RETURN_IF_ERROR(log->Append({.stream_type = "account",
                                       .stream_id = KeyOf(0),
                                       .event_type = "FundsDeposited",
                                       .payload = Payload(0)})
                              .status());
  auto append = [&](int64_t n) {
    return log
        ->Append({.stream_type = "account",
                  .stream_id = KeyOf(n),
                  .event_type = "FundsDeposited",
                  .payload = Payload(n)})
        .status();
  };

  TimePoint start = Clock::Real().Now();
  for (int n = 0; n < single; ++n) {
    COURIER_RETURN_IF_ERROR(plain->Produce(topic, KeyOf(n), Payload(n)));
    COURIER_RETURN_IF_ERROR(plain->Flush());
  }
  f.plain_single = single / Seconds(start, Clock::Real().Now());

  start = Clock::Real().Now();
  for (int n = 0; n < single; ++n) COURIER_RETURN_IF_ERROR(append(n));
  f.log_single = single / Seconds(start, Clock::Real().Now());

  start = Clock::Real().Now();
  for (int n = 0; n < batched; ++n)
    COURIER_RETURN_IF_ERROR(plain->Produce(topic, KeyOf(n), Payload(n)));
  COURIER_RETURN_IF_ERROR(plain->Flush());
  f.plain_batched = batched / Seconds(start, Clock::Real().Now());

  // CommandLog::Append returns with its acknowledgement: many in flight = many callers.
  std::atomic<int64_t> next{0};
  std::vector<Status> results(kInFlight);
  std::vector<std::thread> callers;
  start = Clock::Real().Now();
  for (int c = 0; c < kInFlight; ++c) {
    callers.emplace_back([&, c] {
      for (int64_t n = next++; n < batched && results[c].ok(); n = next++) results[c] = append(n);
    });
  }
  for (std::thread& t : callers) t.join();
  f.log_batched = batched / Seconds(start, Clock::Real().Now());
  for (const Status& st : results) COURIER_RETURN_IF_ERROR(st);
  return f;
}

int Fail(const Status& st) {
  std::fprintf(stderr, "benchmark failed: %s\n", st.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int single = 1500;          // transactions per client, one event each
  int batches = 60;           // transactions per client, kBatch events each
  int commands = 2000;        // CommandLog appends one at a time
  int command_batch = 20000;  // CommandLog appends many in flight
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--commands") == 0) commands = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--command-batch") == 0) command_batch = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--single") == 0) single = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--batches") == 0) batches = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  }
  auto pg = test::PostgresServer::Start(/*durable=*/true);
  if (!pg.ok()) return Fail(pg.status());
  std::vector<double> plain_single, plain_batched, store_single, store_batched;
  std::vector<double> keyset, read_all, projected;
  std::vector<double> plain_command, log_command, plain_command_batch, log_command_batch;
  test::TempDir broker_dir;
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
    // A fresh broker per run, its topic large enough to keep every record.
    auto bootstrap = StartDevBroker(broker_dir, "broker-" + std::to_string(r),
                                    2 * (commands + command_batch) + 2);
    if (!bootstrap.ok()) return Fail(bootstrap.status());
    auto c = CommandAppends(*bootstrap, commands, command_batch);
    if (!c.ok()) return Fail(c.status().WithContext("command log"));
    plain_command.push_back(c->plain_single);
    log_command.push_back(c->log_single);
    plain_command_batch.push_back(c->plain_batched);
    log_command_batch.push_back(c->log_batched);
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
  const double pc = Median(plain_command), lc = Median(log_command);
  const double pcb = Median(plain_command_batch), lcb = Median(log_command_batch);
  std::printf(
      "\n| commands to Kafka (dev broker), idempotent, acks=all (median of %d runs) | records/s "
      "| ratio |\n|---|---:|---:|\n",
      runs);
  std::printf("| plain librdkafka, produce then wait for its delivery report, %d | %.0f | 1.00 |\n",
              commands, pc);
  std::printf("| CommandLog::Append, one at a time, %d | %.0f | %.2f |\n", commands, lc, lc / pc);
  std::printf("| plain librdkafka, produce %d then flush | %.0f | 1.00 |\n", command_batch, pcb);
  std::printf("| CommandLog::Append, %d callers at once, %d | %.0f | %.2f |\n", kInFlight,
              command_batch, lcb, lcb / pcb);
  return 0;
}
