// The account service, event-sourced: each command reads the account's stream (latest
// snapshot + later events), folds it, decides, and appends the event with the version it read
// as the expected version, in one transaction. A writer that lost the race (kAborted) re-reads
// and decides again, so no update is lost and a withdrawal is judged against every deposit and
// withdrawal committed before it: no overdraft. A projection folds every event, in global
// order, into account_balances, its checkpoint in the same transaction.
#include "bank/services.h"

#include <libpq-fe.h>

#include <random>
#include <thread>

#include "courier/event_store.h"
#include "courier/projection.h"

namespace bank {

namespace {

using courier::Status;

struct PgDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, PgDeleter>;

Status Exec(PGconn* conn, const char* sql) {
  PGresult* res = PQexec(conn, sql);
  const bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
  std::string error = ok ? "" : PQerrorMessage(conn);
  PQclear(res);
  return ok ? Status::Ok() : courier::RetriableError(std::string(sql) + ": " + error);
}

// A snapshot every kSnapshotEvery versions keeps each fold short.
constexpr int64_t kSnapshotEvery = 20;

}  // namespace

courier::Result<Outcome> EventSourcedAccounts::Handle(PGconn* conn, const Command& command,
                                                      int* conflicts) const {
  for (int attempt = 0;; ++attempt) {
    COURIER_RETURN_IF_ERROR(Exec(conn, "BEGIN"));
    auto stream = store_.Load(conn, std::string(kStreamType), command.account);
    if (!stream.ok()) {
      (void)Exec(conn, "ROLLBACK");
      return stream.status();
    }
    Account account;
    if (stream->snapshot) {
      account.balance = std::stoll(stream->snapshot->state);
      account.version = stream->snapshot->version;
    }
    for (const courier::RecordedEvent& e : stream->events) account.Apply(e.event_type, e.payload);
    auto decision = Decide(account, command);
    if (!decision.ok()) {
      (void)Exec(conn, "ROLLBACK");
      if (decision.status().code() == courier::StatusCode::kFailedPrecondition) {
        return Outcome{
            .accepted = false, .balance = account.balance, .reason = decision.status().message()};
      }
      return decision.status();
    }
    auto appended =
        store_.Append(conn, std::string(kStreamType), command.account, stream->version,
                      {{.event_type = decision->event_type, .payload = decision->payload}});
    if (!appended.ok()) {
      (void)Exec(conn, "ROLLBACK");
      if (appended.status().code() == courier::StatusCode::kAborted) {
        ++*conflicts;  // another writer appended first: re-read, decide again
        continue;
      }
      return appended.status();
    }
    account.Apply(decision->event_type, decision->payload);
    if (appended->version % kSnapshotEvery == 0) {
      Status saved = store_.SaveSnapshot(conn, std::string(kStreamType), command.account,
                                         appended->version, std::to_string(account.balance));
      if (!saved.ok()) {
        (void)Exec(conn, "ROLLBACK");
        return saved;
      }
    }
    COURIER_RETURN_IF_ERROR(Exec(conn, "COMMIT"));
    return Outcome{.accepted = true,
                   .balance = account.balance,
                   .event_id = appended->events[0].event_id,
                   .position = appended->events[0].position};
  }
}

courier::Result<Totals> RunEventSourcedWriters(const std::string& db_url,
                                               const WorkloadOptions& options) {
  EventSourcedAccounts accounts;
  std::vector<Totals> totals(options.writers);
  std::vector<Status> results(options.writers);
  std::vector<std::thread> threads;
  for (int w = 0; w < options.writers; ++w) {
    threads.emplace_back([&, w] {
      Conn conn(PQconnectdb(db_url.c_str()));
      if (PQstatus(conn.get()) != CONNECTION_OK) {
        results[w] = courier::RetriableError(PQerrorMessage(conn.get()));
        return;
      }
      std::mt19937_64 rng(options.seed * 1000 + w);
      for (int i = 0; i < options.commands; ++i) {
        const Command command = RandomCommand(rng, options);
        int conflicts = 0;
        auto outcome = accounts.Handle(conn.get(), command, &conflicts);
        if (!outcome.ok()) {
          results[w] = outcome.status();
          return;
        }
        totals[w].Count(command, *outcome, conflicts);
      }
    });
  }
  for (auto& t : threads) t.join();
  Totals sum;
  for (int w = 0; w < options.writers; ++w) {
    COURIER_RETURN_IF_ERROR(results[w]);
    sum.Add(totals[w]);
  }
  return sum;
}

Status ProjectBalances(const std::string& db_url, bool rebuild) {
  Conn conn(PQconnectdb(db_url.c_str()));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return courier::RetriableError(PQerrorMessage(conn.get()));
  }
  COURIER_RETURN_IF_ERROR(Exec(conn.get(),
                               "CREATE TABLE IF NOT EXISTS account_balances (account text PRIMARY "
                               "KEY, balance bigint NOT NULL, version bigint NOT NULL)"));
  // Caught up once the checkpoint reached the last position committed now.
  PGresult* res =
      PQexec(conn.get(), "SELECT coalesce(max(position), 0), count(*) FROM courier_events");
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    std::string error = PQerrorMessage(conn.get());
    PQclear(res);
    return courier::NotFoundError("courier_events: " + error);
  }
  const int64_t last = std::stoll(PQgetvalue(res, 0, 0));
  const int64_t events = std::stoll(PQgetvalue(res, 0, 1));
  PQclear(res);

  courier::ProjectionOptions o;
  o.db_url = db_url;
  o.name = kBalanceProjection;
  o.poll_interval = std::chrono::milliseconds(20);
  courier::Projection projection(o);
  const courier::From from =
      rebuild
          ? courier::From::Start([](PGconn* c) { return Exec(c, "DELETE FROM account_balances"); })
          : courier::From::Checkpoint();
  Status result;
  std::thread runner([&] {
    result = projection.Subscribe(from, [](PGconn* c, const courier::ProjectedEvent& e) -> Status {
      Account account;
      PGresult* row = nullptr;
      {
        const char* params[] = {e.stream_id.c_str()};
        row = PQexecParams(c, "SELECT balance FROM account_balances WHERE account = $1", 1, nullptr,
                           params, nullptr, nullptr, 0);
      }
      if (PQresultStatus(row) != PGRES_TUPLES_OK) {
        PQclear(row);
        return courier::RetriableError(PQerrorMessage(c));
      }
      if (PQntuples(row) == 1) account.balance = std::stoll(PQgetvalue(row, 0, 0));
      PQclear(row);
      account.Apply(e.event_type, e.payload);
      const std::string balance = std::to_string(account.balance);
      const std::string version = std::to_string(e.version);
      const char* params[] = {e.stream_id.c_str(), balance.c_str(), version.c_str()};
      PGresult* up = PQexecParams(
          c,
          "INSERT INTO account_balances VALUES ($1, $2, $3) ON CONFLICT (account) DO UPDATE "
          "SET balance = EXCLUDED.balance, version = EXCLUDED.version",
          3, nullptr, params, nullptr, nullptr, 0);
      const bool ok = PQresultStatus(up) == PGRES_COMMAND_OK;
      PQclear(up);
      return ok ? Status::Ok() : courier::RetriableError(PQerrorMessage(c));
    });
  });
  Status waited = Status::Ok();
  if (rebuild) {
    // The checkpoint still says `last` until the rebuild zeroes it: count the events applied.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (projection.applied() < events && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (projection.applied() < events) {
      waited =
          courier::RetriableError("the rebuild applied " + std::to_string(projection.applied()) +
                                  " of " + std::to_string(events) + " events in 60 s");
    }
  } else if (last > 0) {
    waited = courier::WaitForPosition(db_url, kBalanceProjection, last, std::chrono::seconds(60));
  }
  projection.RequestStop();
  runner.join();
  COURIER_RETURN_IF_ERROR(result);
  return waited;
}

}  // namespace bank
