// `courier lab`: one orders workload and one fault schedule, applied to every way of doing the
// dual write, each a real implementation in a file of its own (src/lab/<name>.cc).
//
// The lab (src/lab/lab.cc) runs each strategy's orders service in a child process
// (`courier lab-service --strategy NAME`), sends it the commands one at a time and times each
// answer, SIGKILLs it where a command says so (the strategy calls HitFault at its fault
// points), takes the broker down for a while, makes some commits fail after everything else
// was written (a deferred constraint), and terminates the service's PostgreSQL connections
// (what a database restart does to its clients). Processes a strategy runs beside the service
// (a relay, a consumer) are SIGKILLed and restarted as well. At the end it judges what the
// strategy's source of truth committed against what its other side holds (audit/verdict.h).
//
// A strategy is both sides of that: Start/Handle/Finish run in the service process;
// Prepare/SideProcesses/Drained/Committed/Delivered run in the lab.
//
// Thread-safety: none; each process uses its Strategy from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "audit/verdict.h"
#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier::lab {

// Where a strategy runs, chosen by the lab and passed to both sides.
struct LabEnv {
  std::string strategy;  // its name, as in Strategies()
  // Its database: "sqlite:///dir/NAME.db" (a file of its own) or the --source
  // "postgres://..." URL, where its tables live in a schema of their own (`schema`).
  std::string db_url;
  std::string schema;     // PostgreSQL: "lab_<name with _ for ->"; empty for SQLite
  std::string bootstrap;  // Kafka bootstrap servers (the dev broker the lab started, or --sink)
  std::string topic;      // this strategy's topic (one per strategy, one per lab run)
  std::string workdir;    // this strategy's files (logs, a coordinator log)
  std::string self;       // the courier executable, to run side processes with
  int partitions = 4;     // of `topic`
};

// The process-level faults a command may carry. The service hits them itself, at the places
// its strategy names (HitFault): a SIGKILL of the whole process, as kill -9 would.
enum class Fault {
  kNone,
  kCrashBetween,  // after the first of the two writes is done, before the second starts
  kCrashInside,   // inside the second write: sent but not acknowledged, or written not committed
};

// One command of the orders workload: create an order (version 1) or move it to `version`.
struct Command {
  int64_t seq = 0;  // 1, 2, ... in the order the lab sends them
  std::string order_id;
  int64_t version = 1;   // the event's position among its order's events
  std::string event_id;  // the event's id, chosen by the lab, unique per command
  // The database refuses this command's COMMIT (a deferred foreign key, checked at COMMIT),
  // after everything else the strategy does before committing was done: "the commit failed
  // after the broker acked".
  bool commit_fails = false;
  Fault fault = Fault::kNone;
};

// The command's event: aggregate "order"/order_id, OrderPlaced (version 1) or OrderUpdated,
// payload {"order_id":"…","version":N}, the command's event_id.
Event OrderEvent(const Command& c);

// SIGKILLs this process when `c` carries `where`; nothing otherwise.
void HitFault(const Command& c, Fault where);

// The order tables every strategy keeps (unless it says otherwise), created by the default
// Prepare:
//   lab_ok(id)                               one row, id 1: what lab_order_log.ok refers to
//   lab_orders(order_id PK, version)         the orders
//   lab_order_log(event_id PK, order_id, version, ok REFERENCES lab_ok DEFERRABLE INITIALLY
//                 DEFERRED)                  one row per committed command: the truth
// The statements that write command `c` into them, for inside the caller's transaction
// (valid for SQLite and PostgreSQL): a commit_fails command refers to a missing lab_ok row, so
// its COMMIT fails (SQLite then leaves the transaction open: roll it back).
std::string WriteOrderSql(const Command& c);

// env.db_url for a process beside the service (a relay, a consumer), on PostgreSQL with the
// service's application_name ("courier-lab-<schema>", as LabDb's): the lab's database restart
// terminates the sessions of that name, so it cuts theirs too, as a real restart would.
std::string SideDbUrl(const LabEnv& env);

class Strategy {
 public:
  virtual ~Strategy() = default;

  // ---- in the service process (`courier lab-service`) ----
  // Connects and does what a restarted service must do first (2PC: resolve the transactions
  // left in doubt). Called at every start, also after a SIGKILL.
  virtual Status Start(const LabEnv& env) = 0;
  // Does command `c` its way: Ok means the client is told "done" (accepted); an error means it
  // is told the command failed (refused), with why. Calls HitFault(c, ...) at its fault points.
  virtual Status Handle(const Command& c) = 0;
  // Called while no command is waiting (at most every 50 ms): background work such as an
  // in-memory retry queue.
  virtual void Idle() {}
  // No more commands: finish what the service still holds (an in-memory retry queue), giving
  // up at `deadline`.
  virtual Status Finish(TimePoint deadline) {
    (void)deadline;
    return Status::Ok();
  }

  // ---- in the lab ----
  // Creates what the strategy needs in its fresh database and broker (the order tables by
  // default; an outbox, an event store, a replication slot), once before the run.
  virtual Status Prepare(const LabEnv& env);
  // Processes that run beside the service (a relay, a consumer), each as an argv whose first
  // element is env.self. The lab starts them with the service, SIGKILLs and restarts them.
  virtual std::vector<std::vector<std::string>> SideProcesses(const LabEnv& env) const {
    (void)env;
    return {};
  }
  // After the last command (and the service's Finish): whether the side processes caught up
  // (an outbox drained). The lab waits for true, with a deadline, before it judges.
  virtual Result<bool> Drained(const LabEnv& env) {
    (void)env;
    return true;
  }
  // The source of truth: by default the event_ids in lab_order_log. (Listen-to-yourself's
  // truth is the topic; event sourcing's the event store.)
  virtual Result<Expectation> Committed(const LabEnv& env);
  // The other side, in the order a reader sees it: by default every record of env.topic (seq:
  // the payload's version).
  virtual Result<std::vector<DeliveredRecord>> Delivered(const LabEnv& env);
  // After the verdict, with the side processes stopped: drops what must not outlive the run
  // (a replication slot keeps WAL on the server for as long as it exists). The tables stay,
  // for a look at what happened.
  virtual Status Cleanup(const LabEnv& env) {
    (void)env;
    return Status::Ok();
  }
};

struct StrategyInfo {
  const char* name;     // naive, publish-first, publish-in-transaction, in-memory-retry, 2pc,
                        // outbox-poll, outbox-cdc, event-sourcing, listen-to-yourself
  const char* summary;  // one line: the two writes, in the order this strategy does them
  bool needs_postgres;  // false: runs on SQLite (the embedded default) as well
  std::unique_ptr<Strategy> (*make)();
  // False where the command has no database transaction whose COMMIT could be refused
  // (listen-to-yourself): the lab's commit-fails fault is not applied to it.
  bool commit_fails_applies;
};

// Every strategy, in the order the lab runs and prints them.
const std::vector<StrategyInfo>& Strategies();
// The named one, or nullptr.
const StrategyInfo* FindStrategy(const std::string& name);

// Each in its own file.
std::unique_ptr<Strategy> MakeNaive();                 // naive.cc
std::unique_ptr<Strategy> MakePublishFirst();          // publish_first.cc
std::unique_ptr<Strategy> MakePublishInTransaction();  // publish_in_transaction.cc
std::unique_ptr<Strategy> MakeInMemoryRetry();         // in_memory_retry.cc
std::unique_ptr<Strategy> MakeTwoPhaseCommit();        // two_phase_commit.cc
std::unique_ptr<Strategy> MakeOutboxPoll();            // outbox_poll.cc
std::unique_ptr<Strategy> MakeOutboxCdc();             // outbox_cdc.cc
std::unique_ptr<Strategy> MakeEventSourcing();         // event_sourcing.cc
std::unique_ptr<Strategy> MakeListenToYourself();      // listen_to_yourself.cc

}  // namespace courier::lab
