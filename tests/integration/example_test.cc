// examples/inventory end to end: the demo's orders service commits orders with their events,
// the relay publishes them (some twice), the inventory service is SIGKILLed while it reserves
// stock; afterwards every committed OrderCreated reserved exactly one unit, none twice. And
// the README's steps, run as written, twice.
#include <signal.h>

#include <fstream>
#include <sstream>

#include "support/fixtures.h"

namespace courier::test {
namespace {

std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

int64_t SqliteCount(const std::string& path, const std::string& sql) {
  auto db = SqliteOpen(path, false);
  if (!db.ok()) return -1;
  auto stmt = SqlitePrepare(db->get(), sql);
  if (!stmt.ok() || sqlite3_step(stmt->get()) != SQLITE_ROW) return -1;
  return sqlite3_column_int64(stmt->get(), 0);
}

TEST(InventoryExample, ReservesStockOncePerOrderThroughDuplicatesAndCrashes) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("orders", 2));
  TempDir dir;
  const std::string orders_db = dir.File("orders.db");
  const std::string inventory_db = dir.File("inventory.db");
  ASSERT_EQ(RunCourier({"migrate", "--source", "sqlite://" + orders_db}).exit_code, 0);
  CommandResult orders = RunCourier({"demo-app", "--strategy", "outbox", "--db", orders_db,
                                     "--orders", "150", "--rate", "1000", "--seed", "3"});
  ASSERT_EQ(orders.exit_code, 0) << orders.err;
  const std::string sink = "kafka://" + (*broker)->bootstrap() + "/orders";
  const std::string source = "sqlite://" + orders_db;
  // Everything once, then a third of it again: duplicates on the topic.
  ASSERT_EQ(
      RunCourier({"relay", "--source", source, "--sink", sink, "--once", "--retain"}).exit_code, 0);
  auto outbox = SqliteOpen(orders_db, false);
  ASSERT_OK(outbox);
  ASSERT_OK(
      SqliteExec(outbox->get(), "UPDATE courier_outbox SET published_at = NULL WHERE id % 3 = 0"));
  ASSERT_EQ(
      RunCourier({"relay", "--source", source, "--sink", sink, "--once", "--retain"}).exit_code, 0);
  const int64_t created =
      SqliteCount(orders_db, "SELECT count(*) FROM order_log WHERE version = 1");
  ASSERT_GT(created, 10);

  const std::vector<std::string> args = {COURIER_INVENTORY_EXAMPLE,
                                         "--bootstrap",
                                         (*broker)->bootstrap(),
                                         "--topic",
                                         "orders",
                                         "--db",
                                         inventory_db,
                                         "--exit-when-idle",
                                         "20",
                                         "--session-timeout-ms",
                                         "6000"};
  // Killed once it has reserved some; the next instance goes on from the committed offsets.
  auto first = Subprocess::Spawn(args, dir.File("inventory.log"), dir.File("inventory.log"));
  ASSERT_OK(first);
  ASSERT_TRUE(WaitUntil([&] {
    return SqliteCount(inventory_db, "SELECT count(*) FROM reservations") >= created / 3;
  }));
  first->Signal(SIGKILL);
  first->Wait(Duration(10000));
  auto second = Subprocess::Spawn(args, dir.File("inventory.log"), dir.File("inventory.log"));
  ASSERT_OK(second);
  EXPECT_EQ(second->Wait(Duration(120000)), 0) << ReadFile(dir.File("inventory.log"));

  EXPECT_EQ(SqliteCount(inventory_db, "SELECT count(*) FROM reservations"), created);
  EXPECT_EQ(SqliteCount(inventory_db, "SELECT 1000000 - available FROM stock"), created)
      << "one unit per order, never two";
  EXPECT_EQ(SqliteCount(inventory_db, "SELECT count(*) FROM courier_inbox"), created);
  EXPECT_NE(ReadFile(dir.File("inventory.log")).find("duplicates_skipped="), std::string::npos);
}

// The shell block of examples/inventory/README.md, run as written, then run again in the same
// shell (the first dev broker still running): only its build directory, /tmp and port 9092
// are replaced by the test's. Each run prints the orders created and the reservations made;
// they match.
TEST(InventoryExample, ReadmeStepsWorkAsWrittenAndRerun) {
  const std::string readme =
      ReadFile(std::string(COURIER_SOURCE_DIR) + "/examples/inventory/README.md");
  const size_t begin = readme.find("```sh\n");
  ASSERT_NE(begin, std::string::npos);
  const size_t end = readme.find("```", begin + 6);
  std::string steps = readme.substr(begin + 6, end - begin - 6);
  TempDir dir;
  const std::string build =
      std::string(COURIER_BINARY).substr(0, std::string(COURIER_BINARY).rfind('/'));
  ASSERT_NE(steps.find("B=build\n"), std::string::npos) << steps;
  ASSERT_NE(steps.find("9092"), std::string::npos) << steps;
  steps = ReplaceAll(steps, "B=build\n", "B=" + build + "\n");
  steps = ReplaceAll(steps, "/tmp/", dir.path() + "/");
  steps = ReplaceAll(steps, "9092", std::to_string(FreePort()));
  std::ofstream(dir.File("steps.sh")) << steps << "echo '-- again'\n" << steps << "kill %1; wait\n";
  auto walk =
      Subprocess::Spawn({"/bin/bash", dir.File("steps.sh")}, dir.File("out"), dir.File("err"));
  ASSERT_OK(walk);
  ASSERT_EQ(walk->Wait(Duration(120000)), 0) << ReadFile(dir.File("err"));
  const std::string out = ReadFile(dir.File("out"));
  // Per run: "inventory: reserved=...", the orders created, then "reservations|units".
  std::vector<std::string> created;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("inventory: reserved=", 0) != 0) continue;
    std::string orders, reservations;
    ASSERT_TRUE(std::getline(lines, orders) && std::getline(lines, reservations)) << out;
    const size_t bar = reservations.find('|');
    ASSERT_NE(bar, std::string::npos) << out;
    EXPECT_EQ(orders, reservations.substr(0, bar)) << out;
    EXPECT_EQ(orders, reservations.substr(bar + 1)) << out;
    created.push_back(orders);
  }
  ASSERT_EQ(created.size(), 2u) << out << ReadFile(dir.File("err"));
  EXPECT_GT(std::stoi(created[0]), 10) << out;
  EXPECT_EQ(created[0], created[1]) << out;
}

}  // namespace
}  // namespace courier::test
