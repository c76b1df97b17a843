// The account service written twice (event_sourced.cc, listen.cc), and the workload both run:
// writers issuing random deposits and withdrawals on a few accounts at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "bank/account.h"
#include "courier/command_log.h"
#include "courier/event_store.h"
#include "courier/status.h"

struct pg_conn;

namespace bank {

inline constexpr const char* kBalanceProjection = "account_balances";
inline constexpr const char* kListenProjection = "account_ledger";

// What a command came to.
struct Outcome {
  bool accepted = false;
  int64_t balance = 0;  // the account's balance right after the command, as its writer saw it
  std::string reason;   // why it was refused
  std::string event_id;
  int64_t position = 0;  // event sourcing: the event's global position
};

struct WorkloadOptions {
  int accounts = 3;
  int writers = 4;
  int commands = 100;  // per writer
  int max_amount = 100;
  uint64_t seed = 1;
};

inline Command RandomCommand(std::mt19937_64& rng, const WorkloadOptions& o) {
  Command c;
  // More deposits than withdrawals, and withdrawals large enough to be refused now and then.
  c.type = rng() % 5 < 3 ? CommandType::kDeposit : CommandType::kWithdraw;
  c.account = "acct-" + std::to_string(rng() % o.accounts);
  c.amount = static_cast<int64_t>(rng() % o.max_amount) + 1;
  if (c.type == CommandType::kWithdraw) c.amount *= 2;
  return c;
}

struct Totals {
  int64_t deposits = 0, deposited = 0;
  int64_t withdrawals = 0, withdrawn = 0;
  int64_t refused = 0;
  int64_t conflicts = 0;  // appends retried after another writer got there first

  void Count(const Command& c, const Outcome& o, int retried) {
    conflicts += retried;
    if (!o.accepted) {
      ++refused;
    } else if (c.type == CommandType::kDeposit) {
      ++deposits;
      deposited += c.amount;
    } else {
      ++withdrawals;
      withdrawn += c.amount;
    }
  }
  void Add(const Totals& t) {
    deposits += t.deposits;
    deposited += t.deposited;
    withdrawals += t.withdrawals;
    withdrawn += t.withdrawn;
    refused += t.refused;
    conflicts += t.conflicts;
  }
  std::string Json() const {
    return "{\"deposits\":" + std::to_string(deposits) +
           ",\"deposited\":" + std::to_string(deposited) +
           ",\"withdrawals\":" + std::to_string(withdrawals) +
           ",\"withdrawn\":" + std::to_string(withdrawn) +
           ",\"refused\":" + std::to_string(refused) +
           ",\"conflicts\":" + std::to_string(conflicts) + "}";
  }
};

// Event sourcing (event_sourced.cc).
class EventSourcedAccounts {
 public:
  // One command in its own transaction on `conn`; retried after every kAborted (counted in
  // *conflicts). An overdraft is an Outcome with accepted = false.
  courier::Result<Outcome> Handle(pg_conn* conn, const Command& command, int* conflicts) const;

 private:
  courier::EventStore store_;
};

courier::Result<Totals> RunEventSourcedWriters(const std::string& db_url,
                                               const WorkloadOptions& options);

// Folds every event of the store into account_balances (projection kBalanceProjection) up to
// the last one committed when it starts, then returns. `rebuild`: from the first event, into a
// fresh table.
courier::Status ProjectBalances(const std::string& db_url, bool rebuild);

// Listen-to-yourself (listen.cc).
struct ListenOptions {
  std::string kafka_url;  // kafka://host:port/topic
  std::string db_url;     // the projection's database
  std::chrono::milliseconds timeout{10000};
  // Wait for the projector after each command (and pre-check withdrawals against it). Off:
  // a command is accepted once Kafka acknowledged it, even with the database down.
  bool read_your_writes = true;
};

// One command, listen-to-yourself: a deposit becomes FundsDeposited, a withdrawal
// WithdrawalRequested, appended to Kafka through `log` (sent again with the same event_id
// while not acknowledged in time). With read_your_writes, a withdrawal is first pre-checked
// against account_ledger on `conn`, and the outcome is the projector's, read once it passed
// the command's offset (WaitFor); without, it is accepted once Kafka acknowledged it and
// `conn` is not used (it may be null).
// Thread-safety: Handle may be called from several threads, each with its own connection.
class ListenAccounts {
 public:
  ListenAccounts(const ListenOptions& options, courier::CommandLog* log)
      : options_(options), log_(log) {}
  courier::Result<Outcome> Handle(pg_conn* conn, const Command& command) const;

 private:
  ListenOptions options_;
  courier::CommandLog* log_;
};

// Creates the projector's tables (account_ledger, account_events) when missing.
courier::Status CreateLedger(const std::string& db_url);

// Writers send their commands to Kafka first (courier::CommandLog) and wait for the
// projector to have applied each (read-your-writes). The projector must run meanwhile.
courier::Result<Totals> RunListenWriters(const ListenOptions& listen,
                                         const WorkloadOptions& options);

// The projector: applies every message of the topic to account_ledger and account_events in
// the database, offsets in the same transaction, until SIGTERM/SIGINT.
courier::Status RunListenProjector(const ListenOptions& listen);

}  // namespace bank
