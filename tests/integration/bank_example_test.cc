// examples/bank end to end, checked from outside the example: plain SQL over the event store
// and the ledger, and a reader of its own (KafkaReader) over what Kafka received.
//  - event-sourced: concurrent writers on the same accounts; every accepted command is one
//    event (no lost update), versions run 1..n per account, no running balance goes below
//    zero, and the balance projection (and its rebuild) equals the fold of the store;
//  - listen-to-yourself: concurrent writers with read-your-writes while the projector is
//    SIGKILLed and restarted; the ledger equals the fold of what Kafka received, each event
//    applied once; with the database down, commands are still accepted and the projector
//    catches up afterwards.
#include <signal.h>

#include <map>
#include <nlohmann/json.hpp>

#include "support/bank.h"

namespace courier::test {
namespace {

nlohmann::json RunBank(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {COURIER_BANK_EXAMPLE};
  argv.insert(argv.end(), args.begin(), args.end());
  TempDir dir;
  auto child = Subprocess::Spawn(argv, dir.File("out"), dir.File("err"));
  EXPECT_OK(child);
  if (!child.ok()) return {};
  const std::optional<int> code = child->Wait(Duration(300000));
  EXPECT_EQ(code, 0) << ReadFile(dir.File("err"));
  const std::string out = ReadFile(dir.File("out"));
  return out.empty() ? nlohmann::json{} : nlohmann::json::parse(out);
}

TEST(BankExample, EventSourcedConcurrentWritersLoseNoUpdateAndNeverOverdraw) {
  auto url = SharedPostgres().NewDatabase("bank");
  ASSERT_OK(url);
  CommandResult migrated = RunCourier({"migrate", "--event-store", "--source", *url});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  const nlohmann::json totals = RunBank({"event-sourced", "--db", *url, "--accounts", "3",
                                         "--writers", "4", "--commands", "60", "--seed", "7"});
  ASSERT_TRUE(totals.is_object());
  const int64_t accepted = totals["deposits"].get<int64_t>() + totals["withdrawals"].get<int64_t>();
  EXPECT_EQ(accepted + totals["refused"].get<int64_t>(), 4 * 60);
  EXPECT_GT(totals["refused"].get<int64_t>(), 0) << "the workload never tried an overdraft";
  EXPECT_GT(totals["conflicts"].get<int64_t>(), 0) << "the writers never raced";
  // No lost update: every accepted command is one event, and the sums match.
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM courier_events"), accepted);
  EXPECT_EQ(Scalar(*url,
                   "SELECT coalesce(sum((payload->>'amount')::bigint), 0) FROM courier_events "
                   "WHERE event_type = 'FundsDeposited'"),
            totals["deposited"].get<int64_t>());
  EXPECT_EQ(Scalar(*url,
                   "SELECT coalesce(sum((payload->>'amount')::bigint), 0) FROM courier_events "
                   "WHERE event_type = 'FundsWithdrawn'"),
            totals["withdrawn"].get<int64_t>());
  // Versions 1..n per account, and in position order.
  EXPECT_EQ(Scalar(*url,
                   "SELECT count(*) FROM (SELECT version, row_number() OVER (PARTITION BY "
                   "stream_id ORDER BY position) AS n FROM courier_events) e WHERE version <> n"),
            0);
  // No overdraft: the running balance of every account, in version order, stays >= 0.
  EXPECT_EQ(Scalar(*url, kOverdrawnEvents), 0);
  // Snapshots were taken along the way and agree with the fold at their version.
  EXPECT_GT(Scalar(*url, "SELECT count(*) FROM courier_events_snapshots"), 0);
  EXPECT_EQ(Scalar(*url,
                   "SELECT count(*) FROM courier_events_snapshots s WHERE s.state::bigint <> "
                   "(SELECT sum(CASE event_type WHEN 'FundsDeposited' THEN "
                   "(payload->>'amount')::bigint ELSE -(payload->>'amount')::bigint END) FROM "
                   "courier_events e WHERE e.stream_id = s.stream_id AND e.version <= s.version)"),
            0);

  const auto store_fold = Balances(*url, kStoreFold);
  ASSERT_EQ(store_fold.size(), 3u);
  RunBank({"project", "--db", *url});
  EXPECT_EQ(Balances(*url, "SELECT account, balance FROM account_balances"), store_fold);
  // More commands, then the projection goes on from its checkpoint.
  RunBank({"event-sourced", "--db", *url, "--writers", "2", "--commands", "20", "--seed", "8"});
  RunBank({"project", "--db", *url});
  const auto more = Balances(*url, kStoreFold);
  EXPECT_EQ(Balances(*url, "SELECT account, balance FROM account_balances"), more);
  // A rebuild from the first event gives the same state.
  ASSERT_OK(PgQuery(*url, "UPDATE account_balances SET balance = -1"));
  RunBank({"project", "--db", *url, "--rebuild"});
  EXPECT_EQ(Balances(*url, "SELECT account, balance FROM account_balances"), more);
}

// The event-sourced store published by `courier relay --event-store` (SIGKILLed twice on the
// way): the fold of what Kafka received, each event_id once, equals the fold of the store.
TEST(BankExample, EventSourcedStoreFoldEqualsTheFoldOfWhatKafkaReceivedThroughRelayKills) {
  auto url = SharedPostgres().NewDatabase("bank_pub");
  ASSERT_OK(url);
  ASSERT_EQ(RunCourier({"migrate", "--event-store", "--source", *url}).exit_code, 0);
  RunBank({"event-sourced", "--db", *url, "--accounts", "3", "--writers", "4", "--commands", "60",
           "--seed", "11"});
  const int64_t total = Scalar(*url, "SELECT count(*) FROM courier_events");
  ASSERT_GT(total, 30);
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("account", 3));
  const std::vector<std::string> relay = {
      "relay",        "--event-store",
      "--source",     *url,
      "--sink",       "kafka://" + (*broker)->bootstrap() + "/account",
      "--batch-size", "10"};
  TempDir dir;
  for (int kill = 1; kill <= 2; ++kill) {
    auto child = SpawnCourier(relay, dir.File("relay.log"));
    ASSERT_OK(child);
    EXPECT_TRUE(WaitUntil([&] {
      return Scalar(*url, "SELECT count(*) FROM courier_events WHERE published_at IS NOT NULL") >=
             total * kill / 3;
    })) << ReadFile(dir.File("relay.log"));
    child->Signal(SIGKILL);
    child->Wait(Duration(10000));
  }
  std::vector<std::string> once = relay;
  once.push_back("--once");
  CommandResult r = RunCourier(once);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM courier_events WHERE published_at IS NULL"), 0);
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM courier_events"), total) << "nothing deleted";
  int64_t events = 0;
  EXPECT_EQ(FoldKafka(**broker, "account", &events), Balances(*url, kStoreFold));
  EXPECT_EQ(events, total);
}

class BankListenTest : public BrokerWithTopic {
 protected:
  int partitions() const override { return 3; }

  Result<Subprocess> StartProjector(const std::string& db, const std::string& log) {
    return Subprocess::Spawn({COURIER_BANK_EXAMPLE, "projector", "--kafka", topic_url_, "--db", db},
                             "", log);
  }
};

TEST_F(BankListenTest, ReadYourWritesAndTheLedgerEqualsTheFoldOfKafkaThroughProjectorKills) {
  auto url = SharedPostgres().NewDatabase("bank_lty");
  ASSERT_OK(url);
  TempDir dir;
  auto projector = StartProjector(*url, dir.File("projector.log"));
  ASSERT_OK(projector);
  // Writers with read-your-writes: each command returns once the projector applied it.
  std::thread writers_thread;
  nlohmann::json totals;
  writers_thread = std::thread([&] {
    totals = RunBank({"listen", "--kafka", topic_url_, "--db", *url, "--accounts", "3", "--writers",
                      "4", "--commands", "40", "--seed", "5", "--timeout-ms", "60000"});
  });
  // SIGKILL the projector mid-stream, twice, and start it again.
  for (int kill = 0; kill < 2; ++kill) {
    const int64_t before = kill * 40 + 30;
    EXPECT_TRUE(WaitUntil(
        [&] { return Scalar(*url, "SELECT count(*) FROM account_events", true) >= before; },
        Duration(60000)))
        << "the projector applied fewer than " << before << " events";
    projector->Signal(SIGKILL);
    projector->Wait(Duration(10000));
    projector = StartProjector(*url, dir.File("projector.log"));
    ASSERT_OK(projector);
  }
  writers_thread.join();
  ASSERT_TRUE(totals.is_object());
  EXPECT_EQ(totals["deposits"].get<int64_t>() + totals["withdrawals"].get<int64_t>() +
                totals["refused"].get<int64_t>(),
            4 * 40);
  int64_t events = 0;
  const auto fold = FoldKafka(*broker_, "orders", &events);
  // Every event on Kafka applied exactly once, the ledger the fold of Kafka.
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM account_events"), events);
  EXPECT_EQ(Balances(*url, "SELECT account, balance FROM account_ledger"), fold);
  EXPECT_EQ(Scalar(*url, "SELECT count(*) FROM account_ledger WHERE balance < 0"), 0);
  // What the writers were told equals what the projector decided.
  EXPECT_EQ(Scalar(*url,
                   "SELECT coalesce(sum(amount), 0) FROM account_events WHERE applied AND "
                   "event_type = 'FundsDeposited'"),
            totals["deposited"].get<int64_t>());
  EXPECT_EQ(Scalar(*url,
                   "SELECT coalesce(sum(amount), 0) FROM account_events WHERE applied AND "
                   "event_type = 'WithdrawalRequested'"),
            totals["withdrawn"].get<int64_t>());
  projector->Signal(SIGTERM);
  EXPECT_EQ(projector->Wait(Duration(30000)), 0);
}

TEST_F(BankListenTest, WithTheDatabaseDownCommandsAreAcceptedAndTheProjectorCatchesUp) {
  auto pg = PostgresServer::Start();
  ASSERT_OK(pg);
  auto url = (*pg)->NewDatabase("bank_down");
  ASSERT_OK(url);
  ASSERT_OK((*pg)->Stop(/*immediate=*/false));
  const nlohmann::json totals =
      RunBank({"listen", "--kafka", topic_url_, "--db", *url, "--no-wait", "--accounts", "3",
               "--writers", "2", "--commands", "30", "--seed", "9"});
  ASSERT_TRUE(totals.is_object());
  EXPECT_EQ(totals["deposits"].get<int64_t>() + totals["withdrawals"].get<int64_t>(), 60)
      << "every command accepted while the database is down";
  ASSERT_OK((*pg)->StartAgain());
  TempDir dir;
  auto projector = StartProjector(*url, dir.File("projector.log"));
  ASSERT_OK(projector);
  int64_t events = 0;
  const auto fold = FoldKafka(*broker_, "orders", &events);
  EXPECT_EQ(events, 60);
  EXPECT_TRUE(
      WaitUntil([&] { return Scalar(*url, "SELECT count(*) FROM account_events", true) == events; },
                Duration(60000)))
      << ReadFile(dir.File("projector.log"));
  EXPECT_EQ(Balances(*url, "SELECT account, balance FROM account_ledger"), fold);
  projector->Signal(SIGTERM);
  EXPECT_EQ(projector->Wait(Duration(30000)), 0);
}

}  // namespace
}  // namespace courier::test
