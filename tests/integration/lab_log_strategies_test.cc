// The lab's log-based strategies (outbox-cdc, event-sourcing, listen-to-yourself) on their own,
// against real PostgreSQL and the dev broker: Prepare (twice, the second time over a previous
// run's leftovers), the side processes the strategy names, commands (some of whose COMMIT the
// database refuses) handled in this process while a side process is SIGKILLed and restarted
// and the sessions of the lab's application_name are terminated; then Drained, and the verdict
// on Committed against Delivered.
#include <signal.h>

#include <map>
#include <set>

#include "lab/strategy.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

using lab::Command;
using lab::LabEnv;
using lab::Strategy;
using lab::StrategyInfo;

std::string SchemaOf(const std::string& name) {
  std::string s = "lab_" + name;
  for (char& c : s) {
    if (c == '-') c = '_';
  }
  return s;
}

// The side processes, started (and restarted) as the lab does.
class SideProcesses {
 public:
  SideProcesses(std::vector<std::vector<std::string>> argvs, std::string log)
      : argvs_(std::move(argvs)), log_(std::move(log)) {}
  ~SideProcesses() { Stop(); }
  void Stop() {
    for (auto& p : running_) {
      p.Signal(SIGTERM);
      if (!p.Wait(Duration(20000))) p.Signal(SIGKILL);
    }
    running_.clear();
  }
  Status Start() {
    for (const auto& argv : argvs_) {
      COURIER_ASSIGN_OR_RETURN(Subprocess p,
                               Subprocess::Spawn(argv, log_, log_, "", /*own_group=*/true));
      running_.push_back(std::move(p));
    }
    return Status::Ok();
  }
  Status KillAndRestart() {
    for (auto& p : running_) {
      p.Signal(SIGKILL);
      if (!p.Wait(Duration(20000))) return InternalError("a side process outlived SIGKILL");
    }
    running_.clear();
    return Start();
  }
  bool AllRunning() {
    for (auto& p : running_) {
      if (!p.Running()) return false;
    }
    return true;
  }

 private:
  std::vector<std::vector<std::string>> argvs_;
  std::string log_;
  std::vector<Subprocess> running_;
};

// Drops the database's replication slots at the end of a test, once the side processes (declared
// after it) are gone: a slot would keep WAL on the shared server for the rest of the run.
struct SlotsDropped {
  std::string url;
  ~SlotsDropped() { DropReplicationSlots(url); }
};

class LabLogStrategies : public ::testing::TestWithParam<std::string> {};

TEST_P(LabLogStrategies, LoseNothingAndMakeNoGhostUnderSideProcessKillsAndCutSessions) {
  const std::string name = GetParam();
  const StrategyInfo* info = lab::FindStrategy(name);
  ASSERT_NE(info, nullptr);
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  TempDir dir;
  LabEnv env;
  env.strategy = name;
  env.db_url = *url;
  env.schema = SchemaOf(name);
  env.bootstrap = (*broker)->bootstrap();
  env.topic = "lab-" + name;
  env.workdir = dir.path();
  env.self = COURIER_BINARY;
  env.partitions = 4;
  ASSERT_OK((*broker)->CreateTopic(env.topic, env.partitions));

  std::unique_ptr<Strategy> lab_side = info->make();
  // A previous run in the same database left its schema's tables (dropped, as the lab drops
  // them) and whatever lives outside the schema (a replication slot, a publication).
  ASSERT_OK(lab_side->Prepare(env));
  ASSERT_OK(PgQuery(*url, "DROP SCHEMA " + env.schema + " CASCADE"));
  ASSERT_OK(lab_side->Prepare(env));

  SlotsDropped slots{*url};
  SideProcesses side(lab_side->SideProcesses(env), dir.File("side.log"));
  ASSERT_OK(side.Start());
  std::unique_ptr<Strategy> service = info->make();
  ASSERT_OK(service->Start(env));

  // 6 orders moved through 4 versions, interleaved; every 5th command's COMMIT is refused;
  // the broker is down for commands 11 to 13. An order's commands are numbered 1, 2, ...
  // whatever became of the earlier ones, as the lab numbers them.
  std::map<std::string, int64_t> version;
  std::set<std::string> accepted;
  int refused = 0;
  int outage_commands = 0;
  int outage_accepted = 0;
  std::string why_refused;
  const int kCommands = 24;
  for (int seq = 1; seq <= kCommands; ++seq) {
    Command c;
    c.seq = seq;
    c.order_id = "o" + std::to_string(seq % 6);
    c.version = ++version[c.order_id];
    c.event_id = NewUuidV7();  // what the outbox and the event store take
    c.commit_fails = seq % 5 == 0;
    const bool outage = seq >= 11 && seq <= 13;
    if (seq == 11) (*broker)->SetDown(true);
    Status st = service->Handle(c);
    if (seq == 13) (*broker)->SetDown(false);
    outage_commands += outage ? 1 : 0;
    if (st.ok()) {
      accepted.insert(c.event_id);
      outage_accepted += outage ? 1 : 0;
    } else if (!outage) {
      ++refused;
      why_refused += "\n" + st.ToString();
    }
    if (seq == 8) ASSERT_OK(side.KillAndRestart());
    if (seq == 16) {
      // The lab's database restart: every session of the strategy's application_name ends.
      ASSERT_OK(PgQuery(*url,
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        "application_name = 'courier-lab-" +
                            env.schema + "'"));
    }
  }
  ASSERT_OK(service->Finish(Clock::Real().Now() + Duration(10000)));
  // The outbox and the event store write the database only, and take commands while the
  // broker is down; listen-to-yourself's command is the publish, refused then.
  EXPECT_EQ(outage_accepted, name == "listen-to-yourself" ? 0 : outage_commands);
  // Refused besides: the commands whose COMMIT failed (none for listen-to-yourself, whose
  // commands write no database), and the first after the sessions were cut.
  EXPECT_LE(refused, kCommands / 5 + 1) << why_refused;

  ASSERT_TRUE(WaitUntil(
      [&] {
        auto drained = lab_side->Drained(env);
        return drained.ok() && *drained;
      },
      Duration(120000)))
      << ReadFile(dir.File("side.log"));
  EXPECT_TRUE(side.AllRunning()) << ReadFile(dir.File("side.log"));

  auto committed = lab_side->Committed(env);
  ASSERT_OK(committed);
  // Nothing is in doubt here (no COMMIT was cut): what was accepted is what was committed.
  EXPECT_EQ(committed->committed, accepted);
  auto delivered = lab_side->Delivered(env);
  ASSERT_OK(delivered);
  const Verdict v = Judge(*committed, *delivered);
  EXPECT_EQ(v.committed, static_cast<int64_t>(accepted.size()));
  EXPECT_EQ(v.lost, 0) << ExamplesOf(v);
  EXPECT_EQ(v.ghosts, 0) << ExamplesOf(v);
  EXPECT_EQ(v.order_violations, 0) << ExamplesOf(v);

  // Nothing that keeps WAL on the server outlives the run.
  side.Stop();
  ASSERT_OK(lab_side->Cleanup(env));
  auto slots_left = PgQuery(*url,
                            "SELECT count(*) FROM pg_replication_slots WHERE database = "
                            "current_database()");
  ASSERT_OK(slots_left);
  EXPECT_EQ((*slots_left)[0], "0");
}

INSTANTIATE_TEST_SUITE_P(Strategies, LabLogStrategies,
                         ::testing::Values("outbox-cdc", "event-sourcing", "listen-to-yourself"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (c == '-') c = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace courier::test
