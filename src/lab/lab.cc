// The lab's runner (lab/lab.h): the workload and fault schedule, each strategy's run under it,
// and the verdict.
#include "lab/lab.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "brokers/dev/dev_broker.h"
#include "brokers/kafka/kafka_reader.h"
#include "core/postgres.h"
#include "core/subprocess.h"
#include "core/url.h"
#include "core/uuid.h"
#include "lab/lab_wire.h"
#include "lab/strategy.h"
#include "sources/source.h"

namespace courier::lab {
namespace {

// A service's answer to one command, its start (a 2PC service resolves what was left in doubt
// first), the side processes catching up, and its Finish (an in-memory queue drained).
constexpr Duration kCommandTimeout{20000};
constexpr Duration kStartTimeout{30000};
constexpr Duration kDrainTimeout{60000};
constexpr Duration kFinishTimeout{15000};
// How often a service that fails to start is started again before the strategy's run fails.
constexpr int kStartAttempts = 5;

// The guarantees the lab checks (its exit status): these must be clean wherever they ran.
bool IsGuaranteed(const std::string& name) {
  return name == "outbox-poll" || name == "outbox-cdc" || name == "event-sourcing";
}

std::string Join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const std::string& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

// A comma list's items, trimmed; an empty item ("a,,b", "a,") is refused.
Status Split(const std::string& flag, const std::string& text, std::vector<std::string>* out) {
  out->clear();
  size_t begin = 0;
  while (true) {
    const size_t end = text.find(',', begin);
    std::string item = text.substr(begin, end == std::string::npos ? end : end - begin);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) {
      return InvalidArgumentError(flag + " '" + text + "' has an empty name");
    }
    out->push_back(item);
    if (end == std::string::npos) return Status::Ok();
    begin = end + 1;
  }
}

// One step of the schedule: the command, and what the lab does around it.
struct Step {
  Command command;
  bool in_outage = false;          // the broker is down while it is sent
  bool db_restart_before = false;  // the service's connections are terminated before it
  int side_kill_after_ms = -1;     // the side processes are SIGKILLed this long after it is sent
};

struct Schedule {
  std::vector<Step> steps;
  int outage_begin = -1;  // the first step sent with the broker down
  int outage_end = -1;    // the first one after
};

// One workload and one schedule for every strategy: the same orders, versions and faults, at
// the same commands (the event ids are drawn again per strategy: each has its own run).
Schedule MakeSchedule(int n, const std::set<std::string>& faults, bool outage_possible,
                      std::mt19937& rng) {
  Schedule s;
  s.steps.resize(static_cast<size_t>(n));
  // A few dozen orders, each created once, then updated: a create is drawn so that every order
  // is created by the end.
  const int orders = std::max(3, n / 3);
  std::vector<int64_t> versions;  // per order created so far: its last version
  for (int i = 0; i < n; ++i) {
    Command& c = s.steps[static_cast<size_t>(i)].command;
    c.seq = i + 1;
    const int left_to_create = orders - static_cast<int>(versions.size());
    const bool create = versions.empty() ||
                        (left_to_create > 0 &&
                         std::uniform_int_distribution<int>(0, n - i - 1)(rng) < left_to_create);
    if (create) {
      versions.push_back(1);
      c.version = 1;
      char id[16];
      std::snprintf(id, sizeof id, "order-%02zu", versions.size());
      c.order_id = id;
    } else {
      const size_t k = std::uniform_int_distribution<size_t>(0, versions.size() - 1)(rng);
      c.version = ++versions[k];
      char id[16];
      std::snprintf(id, sizeof id, "order-%02zu", k + 1);
      c.order_id = id;
    }
  }
  std::set<int> taken;
  // The first free step at or after `at` (a fault per command).
  auto place = [&](double fraction, int jitter) {
    int at = static_cast<int>(fraction * n) +
             (jitter > 0 ? std::uniform_int_distribution<int>(-jitter, jitter)(rng) : 0);
    at = std::clamp(at, 1, n - 2);
    while (taken.count(at) && at < n - 2) ++at;
    taken.insert(at);
    return at;
  };
  if (faults.count("outage") && outage_possible) {
    const int width = std::max(4, n / 8);
    s.outage_begin = std::clamp(static_cast<int>(0.45 * n), 1, n - 1);
    s.outage_end = std::min(n, s.outage_begin + width);
    for (int i = s.outage_begin; i < s.outage_end; ++i)
      s.steps[static_cast<size_t>(i)].in_outage = true;
    // A crash while the broker is down: whatever a service held in memory for it is gone.
    if (faults.count("crash-between")) {
      const int at = s.outage_begin + width / 2;
      taken.insert(at);
      s.steps[static_cast<size_t>(at)].command.fault = Fault::kCrashBetween;
    }
    for (int i = s.outage_begin; i < s.outage_end; ++i) taken.insert(i);
  }
  if (faults.count("crash-between")) {
    for (double f : {0.15, 0.7})
      s.steps[static_cast<size_t>(place(f, 2))].command.fault = Fault::kCrashBetween;
  }
  if (faults.count("crash-inside")) {
    for (double f : {0.25, 0.62, 0.85})
      s.steps[static_cast<size_t>(place(f, 2))].command.fault = Fault::kCrashInside;
  }
  if (faults.count("db-restart")) {
    for (double f : {0.35, 0.92})
      s.steps[static_cast<size_t>(place(f, 1))].db_restart_before = true;
  }
  if (faults.count("commit-fails")) {
    // About one in ten, never on a command that also crashes; at least two, outside the outage
    // window (their point: the broker acked, then the commit failed).
    int placed = 0;
    for (int i = 1; i < n; ++i) {
      Step& st = s.steps[static_cast<size_t>(i)];
      if (st.command.fault != Fault::kNone) continue;
      if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) {
        st.command.commit_fails = true;
        if (!st.in_outage) ++placed;
      }
    }
    for (double f : {0.1, 0.5}) {
      if (placed >= 2) break;
      Step& st = s.steps[static_cast<size_t>(place(f, 0))];
      if (st.command.fault == Fault::kNone && !st.in_outage) {
        st.command.commit_fails = true;
        ++placed;
      }
    }
  }
  if (faults.count("side-kill")) {
    // At random moments: about one command in eight, some time into its handling.
    for (int i = 2; i < n; ++i) {
      if (std::uniform_int_distribution<int>(0, 7)(rng) == 0) {
        s.steps[static_cast<size_t>(i)].side_kill_after_ms =
            std::uniform_int_distribution<int>(0, 30)(rng);
      }
    }
  }
  return s;
}

enum class Outcome { kAccepted, kRefused, kKilled, kTimedOut };

struct Sent {
  Outcome outcome = Outcome::kRefused;
  std::string message;  // the refusal's reason
  double ms = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// The schema of a strategy's tables on PostgreSQL: "lab_" and its name with '_' for '-'.
std::string SchemaFor(const std::string& name) {
  std::string s = "lab_" + name;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

class Lab {
 public:
  Lab(const LabOptions& o, const StopSignal& stop) : o_(o), stop_(stop) {}

  ~Lab() {
    if (!remove_on_exit_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(remove_on_exit_, ec);
    }
  }

  Result<LabReport> Run() {
    COURIER_RETURN_IF_ERROR(CheckUrls(o_));
    report_.seed = o_.seed != 0 ? o_.seed : std::random_device{}();
    report_.commands = o_.commands;
    report_.faults = o_.faults;
    report_.postgres = !o_.source.empty();
    report_.own_broker = o_.sink.empty();
    rng_.seed(report_.seed);
    run_id_ = NewUuidV7().substr(28, 8);
    std::vector<std::string> names = o_.strategies;
    if (names.empty()) {
      for (const StrategyInfo& s : Strategies()) names.push_back(s.name);
    }
    COURIER_RETURN_IF_ERROR(CheckWorkdir(names));
    if (report_.postgres) {
      COURIER_RETURN_IF_ERROR(LockDatabase());
      auto conn = PgConnect(o_.source);
      if (!conn.ok()) {
        return Status(conn.status().code(), "--source: " + conn.status().message());
      }
      pg_ = std::move(*conn);
    }
    if (report_.own_broker) {
      COURIER_ASSIGN_OR_RETURN(broker_, DevBroker::Start(1));
      bootstrap_ = broker_->bootstrap();
    } else {
      COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(o_.sink));
      bootstrap_ = url.hosts;
      // Asked once up front (5 s), rather than found out by every strategy after its run.
      COURIER_ASSIGN_OR_RETURN(auto probe, KafkaReader::Open(bootstrap_, {"lab-" + run_id_}, true));
      if (Status st = probe->MissingTopics().status(); !st.ok()) {
        return Status(st.code(),
                      "--sink " + RedactUrl(o_.sink) + " does not answer: " + st.message());
      }
    }
    // Made once the broker and the database answer: a lab that cannot start leaves no files.
    COURIER_RETURN_IF_ERROR(PrepareWorkdir());
    std::set<std::string> faults = o_.faults;
    schedule_ = MakeSchedule(o_.commands, faults, report_.own_broker, rng_);
    DescribeSchedule();

    Say("courier lab: " + std::to_string(o_.commands) + " commands per strategy, faults: " +
        (faults.empty() ? std::string("none") : Join({faults.begin(), faults.end()}, ",")) +
        " (seed " + std::to_string(report_.seed) + ", files in " + report_.workdir + ")");
    for (const std::string& name : names) {
      if (stop_.requested()) return CancelledError("interrupted");
      const StrategyInfo* info = FindStrategy(name);
      if (info == nullptr) return InvalidArgumentError("unknown strategy " + name);
      StrategyResult r = RunStrategy(*info);
      if (stop_.requested()) return CancelledError("interrupted");
      if (!r.skipped.empty()) {
        Say("  " + name + ": skipped (" + r.skipped + ")");
      } else if (!r.error.empty()) {
        Say("  " + name + ": failed: " + r.error);
      } else {
        Say("  " + name + ": " + std::to_string(r.verdict.lost) + " lost, " +
            std::to_string(r.verdict.ghosts) + " ghosts, " + std::to_string(r.verdict.duplicates) +
            " duplicates");
      }
      report_.results.push_back(std::move(r));
    }
    if (std::none_of(report_.results.begin(), report_.results.end(),
                     [](const StrategyResult& r) { return r.skipped.empty(); })) {
      std::vector<std::string> why;
      for (const StrategyResult& r : report_.results) why.push_back(r.strategy + ": " + r.skipped);
      return InvalidArgumentError("every strategy selected was skipped (" + Join(why, "; ") + ")");
    }
    bool keep = !o_.workdir.empty();
    for (const StrategyResult& r : report_.results) {
      if (!IsGuaranteed(r.strategy) || !r.skipped.empty()) continue;
      if (!r.error.empty() || !r.verdict.Clean()) {
        report_.guarantees_hold = false;
        keep = true;
      }
    }
    if (keep) {
      remove_on_exit_.clear();
    } else {
      report_.workdir.clear();
    }
    return report_;
  }

 private:
  void Say(const std::string& line) {
    if (!o_.verbose) return;
    std::fprintf(stderr, "%s\n", line.c_str());
  }

  void DescribeSchedule() {
    std::map<std::string, std::vector<std::string>> at;
    for (const Step& st : schedule_.steps) {
      const std::string seq = std::to_string(st.command.seq);
      if (st.command.fault == Fault::kCrashBetween) at["crash-between"].push_back(seq);
      if (st.command.fault == Fault::kCrashInside) at["crash-inside"].push_back(seq);
      if (st.command.commit_fails) at["commit-fails"].push_back(seq);
      if (st.db_restart_before) at["db-restart"].push_back(seq);
      if (st.side_kill_after_ms >= 0) at["side-kill"].push_back(seq);
    }
    auto& lines = report_.schedule;
    for (const char* f : kFaultNames) {
      if (!o_.faults.count(f)) continue;
      const std::string name = f;
      if (name == "outage") {
        if (schedule_.outage_begin < 0) {
          lines.push_back("outage: none (the lab takes down only its own dev broker, not --sink)");
        } else {
          lines.push_back("outage: the broker down from command " +
                          std::to_string(schedule_.outage_begin + 1) + " to " +
                          std::to_string(schedule_.outage_end));
        }
        continue;
      }
      std::string line = name + ": ";
      if (name == "crash-between") line += "SIGKILL after the first write, at commands ";
      if (name == "crash-inside") line += "SIGKILL inside the second write, at commands ";
      if (name == "commit-fails") line += "COMMIT refused at commands ";
      if (name == "db-restart") {
        line += report_.postgres ? "connections terminated before commands "
                                 : "none on SQLite (planned before commands ";
      }
      if (name == "side-kill") line += "SIGKILL of the side processes during commands ";
      line += Join(at[name], ", ");
      if (name == "db-restart" && !report_.postgres) line += ")";
      lines.push_back(line);
    }
  }

  Status PrepareWorkdir() {
    std::error_code ec;
    if (!o_.workdir.empty()) {
      report_.workdir = std::filesystem::absolute(o_.workdir, ec).string();
      std::filesystem::create_directories(report_.workdir, ec);
      if (ec) return InvalidArgumentError("--workdir " + o_.workdir + ": " + ec.message());
      return Status::Ok();
    }
    char tmpl[] = "/tmp/courier-lab-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return InternalError("mkdtemp failed");
    report_.workdir = tmpl;
    // Removed by the destructor however the run ends (interrupted too), unless Run keeps it.
    remove_on_exit_ = report_.workdir;
    return Status::Ok();
  }

  // A given --workdir is the user's: the lab writes a folder per strategy in it and removes
  // files only there, so a strategy's folder that already holds something is refused rather
  // than emptied.
  Status CheckWorkdir(const std::vector<std::string>& names) const {
    if (o_.workdir.empty()) return Status::Ok();
    for (const std::string& name : names) {
      const std::filesystem::path dir = std::filesystem::path(o_.workdir) / name;
      std::error_code ec;
      if (!std::filesystem::exists(dir, ec)) continue;
      if (!std::filesystem::is_directory(dir, ec) || !std::filesystem::is_empty(dir, ec)) {
        return InvalidArgumentError("--workdir " + o_.workdir + " already holds " + name +
                                    "/, which the lab would overwrite: remove it or use another "
                                    "--workdir");
      }
    }
    return Status::Ok();
  }

  // Takes kLabLockKey (lab.h) for the whole run, on a connection of its own: the lab's
  // database restarts terminate "courier-lab-<schema>" connections, not this one.
  Status LockDatabase() {
    auto conn = PgConnect(o_.source);
    if (!conn.ok()) return Status(conn.status().code(), "--source: " + conn.status().message());
    lock_ = std::move(*conn);
    COURIER_RETURN_IF_ERROR(PgRun(lock_.get(), "SET application_name = 'courier-lab'"));
    COURIER_ASSIGN_OR_RETURN(PgResult got,
                             PgExec(lock_.get(), "SELECT pg_try_advisory_lock($1::bigint)",
                                    {std::to_string(kLabLockKey)}));
    if (std::string(PQgetvalue(got.get(), 0, 0)) != "t") {
      return InvalidArgumentError(
          "another courier lab is running against this database; wait for it or use another "
          "database");
    }
    return Status::Ok();
  }

  // A fresh database for the strategy: its SQLite file removed, or its schema dropped (with
  // everything in it) and made again.
  Status FreshDatabase(const LabEnv& env) {
    if (env.schema.empty()) {
      std::error_code ec;
      const std::string path = env.db_url.substr(std::string("sqlite://").size());
      for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
        std::filesystem::remove(path + suffix, ec);
      }
      return Status::Ok();
    }
    // A prepared transaction an interrupted run left (2pc) keeps its locks on the schema's
    // tables, and DROP SCHEMA would wait for it forever: rolled back first, as the schema it
    // wrote to goes anyway. (pg_locks is cluster-wide: the relations are this database's.)
    COURIER_ASSIGN_OR_RETURN(
        PgResult left,
        PgExec(pg_.get(),
               "SELECT p.gid FROM pg_prepared_xacts p WHERE p.database = current_database() AND "
               "EXISTS (SELECT 1 FROM pg_locks x JOIN pg_locks r ON r.virtualtransaction = "
               "x.virtualtransaction AND r.pid IS NULL JOIN pg_class c ON c.oid = r.relation "
               "WHERE x.locktype = 'transactionid' AND x.pid IS NULL AND x.transactionid = "
               "p.transaction AND r.database = (SELECT oid FROM pg_database WHERE datname = "
               "current_database()) AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE "
               "nspname = $1))",
               {env.schema}));
    for (int i = 0; i < PQntuples(left.get()); ++i) {
      COURIER_RETURN_IF_ERROR(
          PgRun(pg_.get(), "ROLLBACK PREPARED " + QuoteLiteral(PQgetvalue(left.get(), i, 0))));
    }
    return PgRun(pg_.get(), "DROP SCHEMA IF EXISTS " + QuoteIdent(env.schema) +
                                " CASCADE; CREATE SCHEMA " + QuoteIdent(env.schema));
  }

  // PostgreSQL's restart as the service sees it: its connections terminated.
  Result<int> TerminateConnections(const std::string& schema) {
    const std::string app = "courier-lab-" + schema;
    COURIER_ASSIGN_OR_RETURN(
        PgResult res,
        PgExec(pg_.get(),
               "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> "
               "pg_backend_pid() AND (application_name = $1 OR left(application_name, "
               "length($1) + 1) = $1 || '-')",
               {app}));
    return std::atoi(PQgetvalue(res.get(), 0, 0));
  }

  // ---- one strategy's run ----

  struct StrategyRun {
    const StrategyInfo* info = nullptr;
    std::unique_ptr<Strategy> strategy;
    LabEnv env;
    UniqueFd listener;
    std::string socket;
    std::optional<Subprocess> service;
    LineSocket wire;
    std::vector<std::vector<std::string>> side_argv;
    std::vector<std::optional<Subprocess>> sides;
    StrategyResult* result = nullptr;
    std::vector<std::string> notes;  // odd things seen, for the explanation
    bool prepared = false;           // Prepare was called: Cleanup is due
  };

  std::string ServiceLog(const StrategyRun& run) const { return run.env.workdir + "/service.log"; }

  Status StartSide(StrategyRun& run, size_t i) {
    COURIER_ASSIGN_OR_RETURN(
        Subprocess p,
        Subprocess::Spawn(run.side_argv[i], run.env.workdir + "/side-" + std::to_string(i) + ".log",
                          run.env.workdir + "/side-" + std::to_string(i) + ".log"));
    run.sides[i] = std::move(p);
    return Status::Ok();
  }

  // Restarts side processes that died by themselves (not by the lab's SIGKILL).
  Status KeepSidesRunning(StrategyRun& run) {
    for (size_t i = 0; i < run.sides.size(); ++i) {
      if (!run.sides[i]) continue;
      if (auto code = run.sides[i]->Wait(Duration(0))) {
        run.notes.push_back("side process " + std::to_string(i) + " (" + run.side_argv[i][1] +
                            ") exited with " + std::to_string(*code) + " and was restarted; see " +
                            run.env.workdir + "/side-" + std::to_string(i) + ".log");
        COURIER_RETURN_IF_ERROR(StartSide(run, i));
      }
    }
    return Status::Ok();
  }

  Status KillSides(StrategyRun& run) {
    for (size_t i = 0; i < run.sides.size(); ++i) {
      if (!run.sides[i]) continue;
      run.sides[i]->Signal(SIGKILL);
      run.sides[i]->Wait(Duration(5000));
      COURIER_RETURN_IF_ERROR(StartSide(run, i));
    }
    if (!run.sides.empty()) ++run.result->side_kills;
    return Status::Ok();
  }

  void StopSides(StrategyRun& run) {
    for (auto& side : run.sides) {
      if (side && side->Running()) side->Signal(SIGTERM);
    }
    for (auto& side : run.sides) {
      if (side && !side->Wait(Duration(10000))) {
        side->Signal(SIGKILL);
        side->Wait(Duration(5000));
      }
      side.reset();
    }
  }

  static std::vector<std::string> ServiceArgv(const StrategyRun& run) {
    const LabEnv& env = run.env;
    std::vector<std::string> argv = {
        env.self,      "lab-service", "--strategy",   env.strategy,
        "--socket",    run.socket,    "--db",         env.db_url,
        "--bootstrap", env.bootstrap, "--topic",      env.topic,
        "--workdir",   env.workdir,   "--partitions", std::to_string(env.partitions)};
    if (!env.schema.empty()) argv.insert(argv.end(), {"--schema", env.schema});
    return argv;
  }

  // Starts the service and waits for its READY (retried: a service may fail to start while
  // the database restarts under it).
  Status StartService(StrategyRun& run) {
    Status last = InternalError("not started");
    for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
      if (stop_.requested()) return CancelledError("interrupted");
      if (attempt > 0) usleep(200000);
      COURIER_ASSIGN_OR_RETURN(
          Subprocess p, Subprocess::Spawn(ServiceArgv(run), ServiceLog(run), ServiceLog(run)));
      run.service = std::move(p);
      run.wire.Close();
      const TimePoint deadline = Clock::Real().Now() + kStartTimeout;
      UniqueFd conn;
      while (!conn.valid() && Clock::Real().Now() < deadline && run.service->Running()) {
        COURIER_ASSIGN_OR_RETURN(conn, AcceptWithin(run.listener.get(), Duration(200)));
      }
      if (!conn.valid()) {
        last = InternalError("the service did not connect; see " + ServiceLog(run));
        continue;
      }
      run.wire = LineSocket(std::move(conn));
      std::string line;
      const auto got = run.wire.ReadLine(kStartTimeout, &line);
      if (got == LineSocket::Got::kLine && line == "READY") return Status::Ok();
      last = InternalError("the service did not start: " +
                           (got == LineSocket::Got::kLine ? line.substr(line.find(' ') + 1)
                                                          : "no answer; see " + ServiceLog(run)));
      run.service->Signal(SIGKILL);
      run.service->Wait(Duration(5000));
    }
    return last;
  }

  // Sends one command and waits for the answer; the side processes are killed meanwhile when
  // the step says so.
  Result<Sent> Send(StrategyRun& run, const Step& step) {
    const Command& c = step.command;
    const int fault = c.fault == Fault::kCrashBetween ? 1 : c.fault == Fault::kCrashInside ? 2 : 0;
    std::ostringstream line;
    line << "CMD " << c.seq << " " << c.order_id << " " << c.version << " " << c.event_id << " "
         << (c.commit_fails ? 1 : 0) << " " << fault;
    const TimePoint start = Clock::Real().Now();
    Sent sent;
    if (Status st = run.wire.WriteLine(line.str()); !st.ok()) {
      sent.outcome = Outcome::kKilled;
    } else {
      if (step.side_kill_after_ms >= 0) {
        usleep(static_cast<useconds_t>(step.side_kill_after_ms) * 1000);
        COURIER_RETURN_IF_ERROR(KillSides(run));
      }
      std::string answer;
      switch (run.wire.ReadLine(kCommandTimeout, &answer)) {
        case LineSocket::Got::kLine:
          if (answer.rfind("OK ", 0) == 0) {
            sent.outcome = Outcome::kAccepted;
          } else {
            sent.outcome = Outcome::kRefused;
            const size_t sp = answer.find(' ', 4);
            sent.message = sp == std::string::npos ? answer : answer.substr(sp + 1);
          }
          break;
        case LineSocket::Got::kTimeout:
          sent.outcome = Outcome::kTimedOut;
          run.notes.push_back("command " + std::to_string(c.seq) + " got no answer within " +
                              std::to_string(kCommandTimeout.count() / 1000) +
                              " s; the service was SIGKILLed");
          run.service->Signal(SIGKILL);
          break;
        case LineSocket::Got::kClosed:
          sent.outcome = Outcome::kKilled;
          break;
      }
    }
    sent.ms = std::chrono::duration<double, std::milli>(Clock::Real().Now() - start).count();
    if (sent.outcome == Outcome::kKilled || sent.outcome == Outcome::kTimedOut) {
      auto code = run.service->Wait(Duration(10000));
      if (!code) {
        run.service->Signal(SIGKILL);
        code = run.service->Wait(Duration(5000));
      }
      if (code && *code == 128 + SIGKILL) {
        // A crash at the strategy's fault point; the lab's own kill of a service that did not
        // answer is noted above instead.
        if (sent.outcome == Outcome::kKilled) ++run.result->service_kills;
      } else {
        run.notes.push_back("the service exited with " + (code ? std::to_string(*code) : "?") +
                            " at command " + std::to_string(c.seq) + "; see " + ServiceLog(run));
      }
      run.service.reset();
      run.wire.Close();
    }
    return sent;
  }

  StrategyResult RunStrategy(const StrategyInfo& info) {
    StrategyResult r;
    r.strategy = info.name;
    r.summary = info.summary;
    r.commit_fails_applies = info.commit_fails_applies;
    if (info.needs_postgres && !report_.postgres) {
      r.skipped = "needs PostgreSQL: run with --source postgres://...";
      return r;
    }
    StrategyRun run;
    run.info = &info;
    run.result = &r;
    run.strategy = info.make();
    LabEnv& env = run.env;
    env.strategy = info.name;
    env.workdir = report_.workdir + "/" + info.name;
    env.bootstrap = bootstrap_;
    env.topic = "lab-" + std::string(info.name) + "-" + run_id_;
    env.self = SelfExecutable();
    env.partitions = 4;
    if (report_.postgres) {
      env.db_url = o_.source;
      env.schema = SchemaFor(info.name);
    } else {
      env.db_url = "sqlite://" + env.workdir + "/" + info.name + ".db";
    }
    // A fresh temporary directory, or a --workdir whose folder for it CheckWorkdir found
    // absent or empty: nothing of the user's is in it.
    std::error_code ec;
    std::filesystem::create_directories(env.workdir, ec);
    Status st = Execute(run);
    // Whatever happened, nothing of this run keeps running.
    if (run.service) {
      run.service->Signal(SIGKILL);
      run.service->Wait(Duration(5000));
    }
    StopSides(run);
    if (run.prepared) {
      // A replication slot left behind would hold WAL on the server for good.
      if (Status c = run.strategy->Cleanup(run.env); !c.ok() && st.ok()) {
        r.explanation.push_back("cleanup: " + c.message());
      }
    }
    if (!st.ok()) r.error = st.message();
    return r;
  }

  Status Execute(StrategyRun& run) {
    StrategyResult& r = *run.result;
    LabEnv& env = run.env;
    COURIER_RETURN_IF_ERROR(FreshDatabase(env));
    if (broker_ != nullptr)
      COURIER_RETURN_IF_ERROR(broker_->CreateTopic(env.topic, env.partitions));
    run.prepared = true;  // a Prepare that failed half-way may have left a slot too
    if (Status st = run.strategy->Prepare(env); !st.ok()) {
      return Status(st.code(), "prepare: " + st.message());
    }
    run.socket = "courier-lab-" + std::to_string(getpid()) + "-" + run_id_ + "-" + env.strategy;
    COURIER_ASSIGN_OR_RETURN(run.listener, ListenAbstract(run.socket));
    run.side_argv = run.strategy->SideProcesses(env);
    run.sides.resize(run.side_argv.size());
    for (size_t i = 0; i < run.side_argv.size(); ++i) COURIER_RETURN_IF_ERROR(StartSide(run, i));
    COURIER_RETURN_IF_ERROR(StartService(run));

    std::vector<Step> steps = schedule_.steps;
    for (Step& s : steps) s.command.event_id = NewUuidV7();
    std::map<std::string, size_t> by_event;
    std::vector<Sent> sent(steps.size());
    std::vector<double> latencies;
    for (size_t i = 0; i < steps.size(); ++i) {
      if (stop_.requested()) return CancelledError("interrupted");
      const Step& step = steps[i];
      by_event[step.command.event_id] = i;
      if (broker_ != nullptr && static_cast<int>(i) == schedule_.outage_begin)
        broker_->SetDown(true);
      if (broker_ != nullptr && static_cast<int>(i) == schedule_.outage_end)
        broker_->SetDown(false);
      if (step.db_restart_before && report_.postgres) {
        COURIER_ASSIGN_OR_RETURN(int terminated, TerminateConnections(env.schema));
        (void)terminated;  // a strategy that holds no connection between commands has none
        ++r.db_restarts;
      }
      COURIER_RETURN_IF_ERROR(KeepSidesRunning(run));
      if (!run.service) COURIER_RETURN_IF_ERROR(StartService(run));
      COURIER_ASSIGN_OR_RETURN(sent[i], Send(run, step));
      ++r.commands;
      if (step.command.commit_fails && r.commit_fails_applies) ++r.commit_fails;
      if (sent[i].outcome == Outcome::kAccepted) {
        ++r.accepted;
        latencies.push_back(sent[i].ms);
      }
      if (step.in_outage && !step.command.commit_fails) {
        ++r.outage_commands;
        if (sent[i].outcome == Outcome::kAccepted) ++r.outage_accepted;
      }
    }
    if (broker_ != nullptr) broker_->SetDown(false);
    if (r.outage_commands > 0) {
      r.accepted_during_outage =
          static_cast<double>(r.outage_accepted) / static_cast<double>(r.outage_commands);
    }
    r.latency_p50_ms = Percentile(latencies, 0.50);
    r.latency_p99_ms = Percentile(latencies, 0.99);

    // The service finishes what it holds (a retry queue), then the side processes catch up.
    if (!run.service) COURIER_RETURN_IF_ERROR(StartService(run));
    COURIER_RETURN_IF_ERROR(run.wire.WriteLine("FINISH " + std::to_string(kFinishTimeout.count())));
    std::string answer;
    if (run.wire.ReadLine(kFinishTimeout + Duration(5000), &answer) != LineSocket::Got::kLine) {
      run.notes.push_back("the service did not finish in time");
    } else if (answer != "FINISHED") {
      run.notes.push_back("finish: " + answer.substr(answer.find(' ') + 1));
    }
    if (!run.service->Wait(Duration(5000))) {
      run.service->Signal(SIGKILL);
      run.service->Wait(Duration(5000));
    }
    run.service.reset();
    const TimePoint drain_deadline = Clock::Real().Now() + kDrainTimeout;
    bool drained = false;
    while (!drained && Clock::Real().Now() < drain_deadline) {
      if (stop_.requested()) return CancelledError("interrupted");
      COURIER_RETURN_IF_ERROR(KeepSidesRunning(run));
      auto d = run.strategy->Drained(env);
      drained = d.ok() && *d;
      if (!drained) usleep(100000);
    }
    if (!drained) {
      run.notes.push_back("its side processes did not catch up within " +
                          std::to_string(kDrainTimeout.count() / 1000) + " s");
    }
    StopSides(run);

    auto expected = run.strategy->Committed(env);
    if (!expected.ok())
      return Status(expected.status().code(), "committed: " + expected.status().message());
    auto delivered = run.strategy->Delivered(env);
    if (!delivered.ok())
      return Status(delivered.status().code(), "delivered: " + delivered.status().message());
    r.verdict = Judge(*expected, *delivered);
    Explain(run, steps, sent, by_event);
    return Status::Ok();
  }

  // Why each lost and ghost event went wrong, from what happened to its command.
  static std::string Cause(const Step& step, const Sent& sent) {
    const Command& c = step.command;
    const char* fault = c.fault == Fault::kCrashBetween  ? "crash between the writes"
                        : c.fault == Fault::kCrashInside ? "crash inside the second write"
                                                         : "";
    switch (sent.outcome) {
      case Outcome::kKilled:
        return *fault ? fault : "service died";
      case Outcome::kTimedOut:
        return "no answer";
      case Outcome::kRefused:
        if (c.commit_fails) return "COMMIT refused after the rest was done";
        if (step.in_outage) return "refused during the broker outage";
        return "refused";
      case Outcome::kAccepted:
        if (c.commit_fails) return "accepted although its COMMIT failed";
        if (step.in_outage) return "accepted during the broker outage, dropped later";
        return "accepted, dropped later";
    }
    return "";
  }

  void Explain(StrategyRun& run, const std::vector<Step>& steps, const std::vector<Sent>& sent,
               const std::map<std::string, size_t>& by_event) {
    StrategyResult& r = *run.result;
    const Verdict& v = r.verdict;
    auto causes = [&](const std::vector<std::string>& ids) {
      std::map<std::string, int> count;
      for (const std::string& id : ids) {
        auto it = by_event.find(id);
        count[it == by_event.end() ? "not one of the lab's commands"
                                   : Cause(steps[it->second], sent[it->second])]++;
      }
      std::vector<std::string> parts;
      for (const auto& [cause, n] : count) parts.push_back(std::to_string(n) + " " + cause);
      return Join(parts, ", ");
    };
    if (v.lost > 0) {
      r.explanation.push_back("lost " + std::to_string(v.lost) +
                              " (committed, never on the topic): " + causes(v.lost_ids));
    }
    if (v.ghosts > 0) {
      r.explanation.push_back("ghosts " + std::to_string(v.ghosts) +
                              " (on the topic, never committed): " + causes(v.ghost_ids));
    }
    if (v.duplicates > 0) {
      r.explanation.push_back("duplicates " + std::to_string(v.duplicates) +
                              " (the same event_id again; an idempotent consumer drops them)");
    }
    if (v.order_violations > 0) {
      r.explanation.push_back(
          "order violations " + std::to_string(v.order_violations) +
          " (an order's event after a newer one): " +
          Join({v.order_violation_ids.begin(),
                v.order_violation_ids.begin() + std::min<size_t>(3, v.order_violation_ids.size())},
               ", "));
    }
    if (r.accepted_during_outage && r.outage_accepted < r.outage_commands) {
      int64_t died = 0;
      for (size_t i = 0; i < steps.size(); ++i) {
        if (steps[i].in_outage && !steps[i].command.commit_fails &&
            (sent[i].outcome == Outcome::kKilled || sent[i].outcome == Outcome::kTimedOut)) {
          ++died;
        }
      }
      const int64_t refused = r.outage_commands - r.outage_accepted - died;
      std::string line = "accepted " + std::to_string(r.outage_accepted) + " of " +
                         std::to_string(r.outage_commands) + " commands while the broker was down";
      std::vector<std::string> why;
      if (refused > 0) why.push_back(std::to_string(refused) + " refused");
      if (died > 0) why.push_back(std::to_string(died) + " died with the service's crash");
      r.explanation.push_back(line + " (" + Join(why, ", ") + ")");
    }
    for (const std::string& n : run.notes) r.explanation.push_back(n);
  }

  LabOptions o_;
  const StopSignal& stop_;
  LabReport report_;
  std::string remove_on_exit_;  // the temporary workdir, once nothing in it is worth keeping
  std::mt19937 rng_;
  std::string run_id_;
  std::unique_ptr<DevBroker> broker_;
  std::string bootstrap_;
  PgConn pg_;
  PgConn lock_;  // holds kLabLockKey until the lab ends
  Schedule schedule_;
};

}  // namespace

Status ParseStrategies(const std::string& text, std::vector<std::string>* out) {
  out->clear();
  if (text == "all" || text.empty()) return Status::Ok();
  std::vector<std::string> names;
  COURIER_RETURN_IF_ERROR(Split("--strategy", text, &names));
  for (const std::string& name : names) {
    if (FindStrategy(name) == nullptr) {
      std::vector<std::string> known;
      for (const StrategyInfo& s : Strategies()) known.push_back(s.name);
      return InvalidArgumentError("unknown strategy '" + name + "'; known: " + Join(known, ", ") +
                                  ", or all");
    }
    if (std::find(out->begin(), out->end(), name) == out->end()) out->push_back(name);
  }
  if (out->empty()) return InvalidArgumentError("--strategy names no strategy");
  return Status::Ok();
}

Status ParseFaults(const std::string& text, std::set<std::string>* out) {
  out->clear();
  if (text == "all") {
    for (const char* f : kFaultNames) out->insert(f);
    return Status::Ok();
  }
  if (text == "none") return Status::Ok();
  std::vector<std::string> names;
  COURIER_RETURN_IF_ERROR(Split("--faults", text, &names));
  for (const std::string& name : names) {
    if (std::none_of(std::begin(kFaultNames), std::end(kFaultNames),
                     [&](const char* f) { return name == f; })) {
      std::vector<std::string> known(std::begin(kFaultNames), std::end(kFaultNames));
      return InvalidArgumentError("unknown fault '" + name + "'; known: " + Join(known, ", ") +
                                  ", all or none");
    }
    out->insert(name);
  }
  return Status::Ok();
}

Status CheckUrls(const LabOptions& o) {
  if (!o.source.empty()) {
    auto loc = ParseSourceUrl(o.source);
    if (!loc.ok() || loc->kind != SourceLocation::Kind::kPostgres) {
      return InvalidArgumentError("--source takes a postgres:// URL, not '" + RedactUrl(o.source) +
                                  "' (without it the strategies run on SQLite files)");
    }
  }
  if (!o.sink.empty()) {
    auto url = ParseUrl(o.sink);
    if (!url.ok() || url->scheme != "kafka" || url->hosts.empty() || !url->path.empty()) {
      return InvalidArgumentError("--sink takes a Kafka cluster as kafka://host:port, not '" +
                                  RedactUrl(o.sink) + "' (the lab makes a topic per strategy)");
    }
  }
  if (o.commands < 20) return InvalidArgumentError("--commands must be at least 20");
  // A lab that would skip everything it was asked to run says so rather than exit 0.
  if (o.source.empty() && !o.strategies.empty() &&
      std::all_of(o.strategies.begin(), o.strategies.end(), [](const std::string& name) {
        const StrategyInfo* info = FindStrategy(name);
        return info != nullptr && info->needs_postgres;
      })) {
    return InvalidArgumentError("--strategy " + Join(o.strategies, ",") +
                                ": needs PostgreSQL, and nothing else would run: add --source "
                                "postgres://...");
  }
  return Status::Ok();
}

Result<LabReport> RunLab(const LabOptions& o, const StopSignal& stop) {
  Lab lab(o, stop);
  return lab.Run();
}

}  // namespace courier::lab
