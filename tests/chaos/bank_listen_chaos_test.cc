// The listen-to-yourself bank (examples/bank) under fire. Writer threads send DepositFunds and
// WithdrawFunds through the example's command side (courier::CommandLog: a command is
// accepted once Kafka acknowledged its event), while the projector (`courier project --from
// kafka://... --exec`) is SIGKILLed and started again at random, and PostgreSQL is restarted
// with -m immediate, and later stopped until more commands were accepted, mid-run. After the
// projector caught up, checked from outside (plain SQL, a Kafka reader of the test's own):
//  - commands kept being accepted while the database was down;
//  - every Kafka record was applied exactly once (the offsets commit with the effects), every
//    accepted command is in the ledger's events once, and nothing else is;
//  - the ledger equals the fold of what Kafka received, and no balance is negative;
//  - a last command with read-your-writes (WaitFor on its offset) returns the new balance.
#include <atomic>
#include <random>
#include <thread>

#include "bank/services.h"
#include "chaos/killer.h"
#include "support/bank.h"

namespace courier::test {
namespace {

// The projector's handler: the event's JSON line goes to ledger_apply(), the example's
// projector (ApplyEvent in examples/bank/listen.cc) written in SQL, which also counts each
// application of a Kafka record in applied_offsets: a record applied twice, or never, is a
// failure of the offsets' transaction, not hidden by the event_id dedupe.
constexpr const char* kLedgerFunctions = R"SQL(
CREATE TABLE applied_offsets (kafka_partition int, kafka_offset bigint, n int NOT NULL,
                              PRIMARY KEY (kafka_partition, kafka_offset));
CREATE FUNCTION ledger_apply(e jsonb) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
  v_amount bigint := (e->'payload'->>'amount')::bigint;
  v_balance bigint;
  v_applied boolean := true;
BEGIN
  INSERT INTO applied_offsets VALUES ((e->>'partition')::int, (e->>'offset')::bigint, 1)
    ON CONFLICT (kafka_partition, kafka_offset) DO UPDATE SET n = applied_offsets.n + 1;
  -- A command sent again after a timeout carries the same event_id: its effect counts once.
  IF EXISTS (SELECT 1 FROM account_events WHERE event_id = e->>'event_id') THEN RETURN; END IF;
  SELECT l.balance INTO v_balance FROM account_ledger l WHERE l.account = e->>'aggregate_id';
  v_balance := coalesce(v_balance, 0);
  IF e->>'event_type' = 'FundsDeposited' THEN
    v_balance := v_balance + v_amount;
  ELSIF e->>'event_type' = 'WithdrawalRequested' AND v_amount <= v_balance THEN
    v_balance := v_balance - v_amount;
  ELSE
    v_applied := false;  -- bounced: it would overdraw
  END IF;
  INSERT INTO account_ledger VALUES (e->>'aggregate_id', v_balance)
    ON CONFLICT (account) DO UPDATE SET balance = EXCLUDED.balance;
  INSERT INTO account_events VALUES (e->>'event_id', e->>'aggregate_id', e->>'event_type',
    v_amount, v_applied, v_balance, e->>'topic', (e->>'partition')::int,
    (e->>'offset')::bigint);
END $f$;
)SQL";
constexpr const char* kLedgerHandler =
    R"SH(printf 'SELECT ledger_apply($e$%s$e$::jsonb);' "$(cat)")SH";

struct ListenWriter {
  std::set<std::string> accepted;  // event ids Kafka acknowledged
};

void SendCommands(const bank::ListenAccounts& accounts, int writer, int n_accounts,
                  const std::atomic<bool>& stop, std::atomic<int64_t>& accepted_total,
                  ListenWriter& out) {
  std::mt19937_64 rng(2000 + writer);
  const bank::WorkloadOptions workload{.accounts = n_accounts, .max_amount = 100};
  while (!stop.load()) {
    const bank::Command command = bank::RandomCommand(rng, workload);
    // Without read-your-writes the handler needs no database connection.
    auto outcome = accounts.Handle(nullptr, command);
    ASSERT_OK(outcome);
    ASSERT_TRUE(outcome->accepted);
    out.accepted.insert(outcome->event_id);
    ++accepted_total;
    // A pace the projector's shell handler (a process per event) can follow on a busy
    // machine: without the database in the way, commands are accepted far faster.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

TEST(BankChaos, ListenToYourselfProjectorKilledAndDatabaseRestartedAppliesEachCommandOnce) {
  const Duration budget = ChaosBudget(Duration(10000));
  constexpr int kAccounts = 4;
  constexpr int kWriters = 3;
  auto pg = PostgresServer::Start();  // its own server: this test restarts it
  ASSERT_OK(pg);
  auto url = (*pg)->NewDatabase("bank_listen");
  ASSERT_OK(url);
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 3));
  const std::string kafka = "kafka://" + (*broker)->bootstrap() + "/account";
  ASSERT_OK(bank::CreateLedger(*url));
  {
    auto admin = PgConnect(*url);
    ASSERT_OK(admin);
    ASSERT_OK(PgRun(admin->get(), kLedgerFunctions));
  }
  TempDir dir;
  Victim projector(
      "projector",
      {"project", "--from", kafka, "--db", *url, "--name", bank::kListenProjection, "--exec",
       kLedgerHandler, "--batch", "10", "--backoff-initial", "20ms", "--backoff-max", "500ms"},
      dir.File("projector.log"));

  auto log = CommandLog::Open({.url = kafka, .timeout = std::chrono::seconds(10)});
  ASSERT_OK(log);
  const bank::ListenAccounts no_wait(
      {.kafka_url = kafka, .db_url = *url, .read_your_writes = false}, log->get());
  std::vector<ListenWriter> writers(kWriters);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> accepted_total{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back(
        [&, w] { SendCommands(no_wait, w, kAccounts, stop, accepted_total, writers[w]); });
  }

  // Mid-run: a crash restart at a third of the budget; at two thirds the server stays down
  // until 20 more commands were accepted.
  const TimePoint start = Clock::Real().Now();
  const TimePoint end = start + budget;
  int restarts = 0;
  int64_t accepted_while_down = -1;
  auto database_faults = [&](TimePoint now) {
    if (restarts == 0 && now >= start + budget / 3) {
      EXPECT_OK((*pg)->Restart(/*immediate=*/true));
      ++restarts;
    } else if (restarts == 1 && now >= start + budget * 2 / 3) {
      EXPECT_OK((*pg)->Stop(/*immediate=*/true));
      const int64_t before = accepted_total.load();
      EXPECT_TRUE(WaitUntil([&] { return accepted_total.load() >= before + 20; }))
          << "commands stopped being accepted with the database down";
      accepted_while_down = accepted_total.load() - before;
      EXPECT_OK((*pg)->StartAgain());
      ++restarts;
    }
  };
  std::mt19937 rng(20261128);
  const Status chaos = KillAtRandomUntil(end, {&projector}, rng, database_faults);
  // A slow restart can use up a short budget: the faults it did not reach, now, while the
  // writers still run.
  database_faults(end);
  database_faults(end);
  stop = true;
  for (std::thread& t : threads) t.join();
  ASSERT_OK(chaos);
  ASSERT_EQ(restarts, 2);

  // Read-your-writes for one more command: the handler waits (WaitFor) until the projector,
  // catching up on everything before it, applied it, then reads the balance it produced.
  bank::ListenOptions ryw{.kafka_url = kafka, .db_url = *url, .read_your_writes = true};
  ryw.timeout = std::chrono::milliseconds(180000);
  const bank::ListenAccounts with_wait(ryw, log->get());
  auto conn = PgConnect(*url);
  ASSERT_OK(conn);
  const bank::Command last{.type = bank::CommandType::kDeposit, .account = "acct-0", .amount = 7};
  auto outcome = with_wait.Handle(conn->get(), last);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString() << "\n" << ReadFile(projector.log());
  ASSERT_TRUE(outcome->accepted);

  const std::vector<KafkaRecord> records = ReadTopic(**broker, "account");
  int64_t kafka_events = 0;
  const std::map<std::string, int64_t> fold = FoldKafka(records, &kafka_events);
  EXPECT_EQ(outcome->balance, fold.at("acct-0")) << "read-your-writes returned a stale balance";

  EXPECT_TRUE(WaitUntil(
      [&] {
        return Scalar(*url, "SELECT count(*) FROM applied_offsets", true) ==
               static_cast<int64_t>(records.size());
      },
      Duration(180000)))
      << "the projector did not catch up\n"
      << ReadFile(projector.log());
  EXPECT_EQ(projector.Stop(), 0) << ReadFile(projector.log());

  // Each record applied exactly once; each accepted command once; nothing else.
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM applied_offsets"),
            static_cast<int64_t>(records.size()));
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM applied_offsets WHERE n <> 1"), 0)
      << "a Kafka record's effects committed more than once";
  std::set<std::string> accepted = {outcome->event_id};
  for (const ListenWriter& w : writers) accepted.insert(w.accepted.begin(), w.accepted.end());
  auto applied = PgQuery(*url, "SELECT event_id FROM account_events");
  ASSERT_OK(applied);
  EXPECT_EQ(std::set<std::string>(applied->begin(), applied->end()), accepted)
      << "an accepted command not applied, or a ghost";
  EXPECT_EQ(static_cast<int64_t>(applied->size()), kafka_events);
  EXPECT_EQ(Balances(*url, "SELECT account, balance FROM account_ledger"), fold)
      << "the ledger vs. the fold of Kafka";
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM account_ledger WHERE balance < 0"), 0);

  std::printf(
      "[bank-listen-chaos] kills=%d db_restarts=%d commands=%zu accepted_while_db_down=%lld "
      "records=%zu bounced=%lld\n",
      projector.kills(), restarts, accepted.size(), static_cast<long long>(accepted_while_down),
      records.size(),
      static_cast<long long>(
          Scalar(*url, "SELECT count(*) FROM account_events WHERE NOT applied")));
  EXPECT_GE(projector.kills(), 3);  // the database faults take part of a short budget
  EXPECT_GE(accepted_while_down, 20);
}

}  // namespace
}  // namespace courier::test
