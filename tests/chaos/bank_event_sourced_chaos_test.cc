// The event-sourced bank (examples/bank) under fire. Writer threads issue DepositFunds and
// WithdrawFunds through the example's command handler (EventStore::Append with the version it
// read; a conflict re-reads and retries, an overdraft is refused) on a handful of shared
// accounts, while `courier relay --event-store` (to the dev broker) and a balance projection
// (`courier project --event-store --exec`) run as separate processes, each SIGKILLed and
// started again at random for the chaos budget. Once both caught up, checked from outside
// (plain SQL, a Kafka reader of the test's own):
//  - no overdraft anywhere in the store;
//  - every command that returned success is in the store exactly once (no lost update), and
//    the store holds nothing else: its row count is the successful appends (none deleted);
//  - every event is stamped published_at and reached Kafka with its event_id, each stream in
//    version order;
//  - the projected balances = the fold of the store = the fold of what Kafka received
//    (each event_id once, per account in offset order), and the projection applied each
//    event exactly once.
#include <atomic>
#include <random>
#include <thread>

#include "bank/services.h"
#include "chaos/killer.h"
#include "support/bank.h"

namespace courier::test {
namespace {

struct BankWriter {
  std::set<std::string> accepted;  // event ids of the commands that returned success
  int64_t refused = 0;
  int64_t conflicts = 0;
};

// Commands through the example's handler until `stop`, on `accounts` shared accounts.
void IssueCommands(const std::string& url, int writer, int accounts, const std::atomic<bool>& stop,
                   BankWriter& out) {
  auto conn = PgConnect(url);
  ASSERT_OK(conn);
  const bank::EventSourcedAccounts handler;
  std::mt19937_64 rng(1000 + writer);
  const bank::WorkloadOptions workload{.accounts = accounts, .max_amount = 100};
  while (!stop.load()) {
    const bank::Command command = bank::RandomCommand(rng, workload);
    int conflicts = 0;
    auto outcome = handler.Handle(conn->get(), command, &conflicts);
    ASSERT_OK(outcome);
    out.conflicts += conflicts;
    if (outcome->accepted) {
      EXPECT_TRUE(out.accepted.insert(outcome->event_id).second) << outcome->event_id;
    } else {
      ++out.refused;
    }
    // A pace the projection's shell handler can follow on a busy machine.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The projection's handler: the event's JSON line goes to bank_project(), which counts each
// application of an event and folds it into account_balances, in the checkpoint's transaction.
constexpr const char* kProjectionSchema = R"SQL(
CREATE TABLE account_balances (account text PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE projected (event_id uuid PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION bank_project(e jsonb) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO projected VALUES ((e->>'event_id')::uuid, 1)
    ON CONFLICT (event_id) DO UPDATE SET n = projected.n + 1;
  INSERT INTO account_balances VALUES (e->>'aggregate_id',
      CASE e->>'event_type' WHEN 'FundsDeposited' THEN 1 ELSE -1 END
        * (e->'payload'->>'amount')::bigint)
    ON CONFLICT (account) DO UPDATE SET balance = account_balances.balance + EXCLUDED.balance;
END $f$;
)SQL";
constexpr const char* kProjectionHandler =
    R"SH(printf 'SELECT bank_project($e$%s$e$::jsonb);' "$(cat)")SH";

std::string HeaderOf(const Event& e, const std::string& name) {
  for (const auto& [k, v] : e.headers) {
    if (k == name) return v;
  }
  return "";
}

TEST(BankChaos, EventSourcedRelayAndProjectionKilledAtRandomLoseNothingAndAgree) {
  const Duration budget = ChaosBudget(Duration(10000));
  constexpr int kAccounts = 4;
  constexpr int kWriters = 4;
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 3));
  auto url = SharedPostgres().NewDatabase("bank_chaos");
  ASSERT_OK(url);
  CommandResult migrated = RunCourier({"migrate", "--event-store", "--source", *url});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  {
    auto admin = PgConnect(*url);
    ASSERT_OK(admin);
    ASSERT_OK(PgRun(admin->get(), kProjectionSchema));
  }
  TempDir dir;
  Victim relay("relay",
               {"relay", "--event-store", "--source", *url, "--sink",
                "kafka://" + (*broker)->bootstrap() + "/account", "--batch-size", "20",
                "--poll-interval", "10ms", "--backoff-initial", "20ms"},
               dir.File("relay.log"));
  Victim projection(
      "projection",
      {"project", "--event-store", "--db", *url, "--name", bank::kBalanceProjection, "--exec",
       kProjectionHandler, "--batch", "10", "--backoff-initial", "20ms", "--backoff-max", "500ms"},
      dir.File("project.log"));

  std::vector<BankWriter> writers(kWriters);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] { IssueCommands(*url, w, kAccounts, stop, writers[w]); });
  }
  std::mt19937 rng(20261127);
  const Status chaos =
      KillAtRandomUntil(Clock::Real().Now() + budget, {&relay, &projection}, rng, [](TimePoint) {});
  stop = true;
  for (std::thread& t : threads) t.join();
  ASSERT_OK(chaos);

  std::set<std::string> accepted;
  int64_t refused = 0, conflicts = 0;
  for (const BankWriter& w : writers) {
    accepted.insert(w.accepted.begin(), w.accepted.end());
    refused += w.refused;
    conflicts += w.conflicts;
  }
  const int64_t appends = static_cast<int64_t>(accepted.size());
  // Both catch up: the relay stamps every event, the projection's checkpoint reaches the last.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Scalar(*url, "SELECT count(*) FROM courier_events WHERE published_at IS NULL",
                      true) == 0;
      },
      Duration(180000)))
      << "the relay did not catch up\n"
      << ReadFile(relay.log());
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Scalar(*url,
                      "SELECT count(*) FROM courier_events_projections WHERE name = "
                      "'account_balances' AND position = (SELECT max(position) FROM "
                      "courier_events)",
                      true) == 1;
      },
      Duration(180000)))
      << "the projection did not catch up\n"
      << ReadFile(projection.log());
  EXPECT_EQ(relay.Stop(), 0) << ReadFile(relay.log());
  EXPECT_EQ(projection.Stop(), 0) << ReadFile(projection.log());

  // The store: exactly the accepted commands, none deleted, all stamped, no overdraft.
  auto ids = PgQuery(*url, "SELECT event_id::text FROM courier_events");
  ASSERT_OK(ids);
  const std::set<std::string> stored(ids->begin(), ids->end());
  EXPECT_EQ(static_cast<int64_t>(ids->size()), appends) << "rows in the store vs. appends";
  EXPECT_EQ(stored, accepted) << "a command that returned success is missing, or a ghost";
  EXPECT_EQ(Scalar(*url, "SELECT count(published_at) FROM courier_events"), appends);
  EXPECT_EQ(Scalar(*url, kOverdrawnEvents), 0) << "an overdraft";
  EXPECT_EQ(Scalar(*url,
                   "SELECT count(*) FROM (SELECT version, row_number() OVER (PARTITION BY "
                   "stream_id ORDER BY position) AS n FROM courier_events) e WHERE version <> n"),
            0)
      << "versions do not run 1..n per account in position order";

  // Kafka: every record a stored event; each account's events, first seen, in version order.
  const std::vector<KafkaRecord> records = InPartitionOrder(ReadTopic(**broker, "account"));
  std::set<std::string> delivered;
  std::map<std::string, int64_t> last_version;
  int64_t ghosts = 0, out_of_order = 0;
  for (const KafkaRecord& r : records) {
    if (stored.count(r.event.event_id) == 0) ++ghosts;
    if (!delivered.insert(r.event.event_id).second) continue;
    const int64_t version = std::atoll(HeaderOf(r.event, "version").c_str());
    if (version != ++last_version[r.event.aggregate_id]) ++out_of_order;
  }
  EXPECT_EQ(ghosts, 0) << "records whose event_id is not in the store";
  EXPECT_EQ(delivered, stored) << "stored events Kafka never received";
  EXPECT_EQ(out_of_order, 0) << "an account's events reached Kafka out of version order";
  const int64_t duplicates = static_cast<int64_t>(records.size() - delivered.size());

  // Three folds, one answer; each event projected once.
  const auto store_fold = Balances(*url, kStoreFold);
  int64_t kafka_events = 0;
  EXPECT_EQ(Balances(*url, "SELECT account, balance FROM account_balances"), store_fold)
      << "projection vs. store";
  EXPECT_EQ(FoldKafka(records, &kafka_events), store_fold) << "Kafka vs. store";
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM projected"), appends);
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM projected WHERE n <> 1"), 0)
      << "an event's effects committed more than once";

  std::printf(
      "[bank-chaos] kills=%d (relay %d, projection %d) commands=%lld accepted=%lld "
      "refused=%lld conflicts=%lld delivered=%zu duplicates=%lld\n",
      relay.kills() + projection.kills(), relay.kills(), projection.kills(),
      static_cast<long long>(appends + refused), static_cast<long long>(appends),
      static_cast<long long>(refused), static_cast<long long>(conflicts), records.size(),
      static_cast<long long>(duplicates));
  EXPECT_GE(relay.kills(), 5);
  EXPECT_GE(projection.kills(), 5);
  EXPECT_GT(conflicts, 0) << "the writers never raced";
  EXPECT_GT(refused, 0) << "no withdrawal was ever refused";
  EXPECT_GT(appends, 200);
}

}  // namespace
}  // namespace courier::test
