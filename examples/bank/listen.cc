// The account service, listen-to-yourself: a command becomes an event on Kafka first
// (courier::CommandLog, acknowledged by the broker: the command is accepted). A projector
// (courier::Projection from kafka://) applies each account's events in offset order to
// account_ledger, storing the offsets in the same transaction, so a crash never applies one
// twice; it is the one that judges a WithdrawalRequested against the balance (Account::Apply),
// so nothing overdraws however many writers race. The writer waits for its offset (WaitFor)
// and reads what became of its command: read-your-writes.
#include <libpq-fe.h>

#include <atomic>
#include <csignal>
#include <thread>

#include "bank/services.h"
#include "courier/command_log.h"
#include "courier/projection.h"

namespace bank {

namespace {

using courier::Status;

struct PgDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, PgDeleter>;
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Rows = std::unique_ptr<PGresult, ResultDeleter>;

courier::Result<Rows> Query(PGconn* conn, const char* sql, std::vector<std::string> params) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  Rows rows(PQexecParams(conn, sql, static_cast<int>(values.size()), nullptr, values.data(),
                         nullptr, nullptr, 0));
  const ExecStatusType st = PQresultStatus(rows.get());
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    return courier::RetriableError(std::string(sql) + ": " + PQerrorMessage(conn));
  }
  return rows;
}

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS account_ledger (account text PRIMARY KEY,"
    " balance bigint NOT NULL CHECK (balance >= 0));"
    "CREATE TABLE IF NOT EXISTS account_events (event_id text PRIMARY KEY, account text NOT NULL,"
    " event_type text NOT NULL, amount bigint NOT NULL, applied boolean NOT NULL,"
    " balance_after bigint NOT NULL, topic text NOT NULL, kafka_partition int NOT NULL,"
    " kafka_offset bigint NOT NULL)";

// Applies one event inside the projection's transaction.
Status ApplyEvent(PGconn* c, const courier::ProjectedEvent& e) {
  // A command sent twice (its first append timed out) carries the same event_id: once only.
  COURIER_ASSIGN_OR_RETURN(
      Rows seen, Query(c, "SELECT 1 FROM account_events WHERE event_id = $1", {e.event_id}));
  if (PQntuples(seen.get()) > 0) return Status::Ok();
  COURIER_ASSIGN_OR_RETURN(
      Rows row, Query(c, "SELECT balance FROM account_ledger WHERE account = $1", {e.stream_id}));
  Account account;
  if (PQntuples(row.get()) == 1) account.balance = std::stoll(PQgetvalue(row.get(), 0, 0));
  const bool applied = account.Apply(e.event_type, e.payload);
  COURIER_RETURN_IF_ERROR(Query(c,
                                "INSERT INTO account_ledger VALUES ($1, $2) ON CONFLICT (account)"
                                " DO UPDATE SET balance = EXCLUDED.balance",
                                {e.stream_id, std::to_string(account.balance)})
                              .status());
  return Query(c, "INSERT INTO account_events VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
               {e.event_id, e.stream_id, e.event_type, std::to_string(AmountOf(e.payload)),
                applied ? "true" : "false", std::to_string(account.balance), e.topic,
                std::to_string(e.partition), std::to_string(e.offset)})
      .status();
}

std::atomic<courier::Projection*> running_projection{nullptr};

void OnSignal(int) {
  if (courier::Projection* p = running_projection.load()) p->RequestStop();
}

}  // namespace

courier::Result<Outcome> ListenAccounts::Handle(PGconn* conn, const Command& command) const {
  if (command.type == CommandType::kWithdraw && options_.read_your_writes) {
    // A quick refusal from what is applied so far; the projector has the last word.
    COURIER_ASSIGN_OR_RETURN(
        Rows row,
        Query(conn, "SELECT balance FROM account_ledger WHERE account = $1", {command.account}));
    const int64_t balance = PQntuples(row.get()) == 1 ? std::stoll(PQgetvalue(row.get(), 0, 0)) : 0;
    if (command.amount > balance) {
      return Outcome{.accepted = false, .balance = balance, .reason = "insufficient funds"};
    }
  }
  courier::CommandEvent event{
      .stream_type = std::string(kStreamType),
      .stream_id = command.account,
      .event_type = std::string(command.type == CommandType::kDeposit ? kFundsDeposited
                                                                      : kWithdrawalRequested),
      .payload = AmountPayload(command.amount),
      .event_id = courier::CommandLog::NewEventId()};
  // Not acknowledged in time: send the same event again (the projector dedupes by event_id).
  courier::Result<courier::LogPosition> at = log_->Append(event);
  for (int attempt = 1;
       !at.ok() && at.status().code() == courier::StatusCode::kRetriable && attempt < 5;
       ++attempt) {
    at = log_->Append(event);
  }
  if (!at.ok()) return at.status();
  if (!options_.read_your_writes) return Outcome{.accepted = true, .event_id = at->event_id};
  COURIER_RETURN_IF_ERROR(courier::WaitFor(options_.db_url, kListenProjection, at->topic,
                                           at->partition, at->offset, options_.timeout));
  COURIER_ASSIGN_OR_RETURN(
      Rows row, Query(conn, "SELECT applied, balance_after FROM account_events WHERE event_id = $1",
                      {at->event_id}));
  if (PQntuples(row.get()) != 1) {
    return courier::InternalError("event " + at->event_id + " applied but not in account_events");
  }
  Outcome o;
  o.accepted = std::string(PQgetvalue(row.get(), 0, 0)) == "t";
  o.balance = std::stoll(PQgetvalue(row.get(), 0, 1));
  o.event_id = at->event_id;
  if (!o.accepted) o.reason = "insufficient funds (bounced by the projector)";
  return o;
}

courier::Result<Totals> RunListenWriters(const ListenOptions& listen,
                                         const WorkloadOptions& options) {
  COURIER_ASSIGN_OR_RETURN(
      std::unique_ptr<courier::CommandLog> log,
      courier::CommandLog::Open({.url = listen.kafka_url, .timeout = listen.timeout}));
  const ListenAccounts accounts(listen, log.get());
  std::vector<Totals> totals(options.writers);
  std::vector<Status> results(options.writers);
  std::vector<std::thread> threads;
  for (int w = 0; w < options.writers; ++w) {
    threads.emplace_back([&, w] {
      Conn conn;
      if (listen.read_your_writes) {
        conn.reset(PQconnectdb(listen.db_url.c_str()));
        if (PQstatus(conn.get()) != CONNECTION_OK) {
          results[w] = courier::RetriableError(PQerrorMessage(conn.get()));
          return;
        }
      }
      std::mt19937_64 rng(options.seed * 1000 + w);
      for (int i = 0; i < options.commands; ++i) {
        const Command command = RandomCommand(rng, options);
        auto outcome = accounts.Handle(conn.get(), command);
        if (!outcome.ok()) {
          results[w] = outcome.status();
          return;
        }
        totals[w].Count(command, *outcome, 0);
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

Status CreateLedger(const std::string& db_url) {
  Conn conn(PQconnectdb(db_url.c_str()));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return courier::RetriableError(PQerrorMessage(conn.get()));
  }
  Rows made(PQexec(conn.get(), kSchema));
  if (PQresultStatus(made.get()) != PGRES_COMMAND_OK) {
    return courier::RetriableError(std::string("creating the ledger: ") +
                                   PQerrorMessage(conn.get()));
  }
  return Status::Ok();
}

Status RunListenProjector(const ListenOptions& listen) {
  COURIER_RETURN_IF_ERROR(CreateLedger(listen.db_url));
  courier::ProjectionOptions o;
  o.db_url = listen.db_url;
  o.name = kListenProjection;
  o.from_url = listen.kafka_url;
  o.poll_interval = std::chrono::milliseconds(20);
  courier::Projection projection(o);
  running_projection = &projection;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  Status st = projection.Subscribe(courier::From::Checkpoint(), ApplyEvent);
  running_projection = nullptr;
  return st;
}

}  // namespace bank
