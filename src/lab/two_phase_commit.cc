// 2pc: two-phase commit over PostgreSQL and Kafka, the service itself the coordinator, with a
// coordinator log (a file, fsynced) that outlives it.
//
//   phase 1  BEGIN; write the order; PREPARE TRANSACTION 'gid'   PostgreSQL's vote: the order
//            is durable and can still go either way (deferred constraints are checked here,
//            so a commit_fails command votes no and nothing reaches the broker)
//            the Kafka side's vote: a transactional producer whose transactions are
//            initialised and a broker that answers for the topic; no answer votes no, and
//            ROLLBACK PREPARED refuses the command
//   decide   "commit <gid> <order_id> <version> <event_id>" appended to the coordinator log
//            and fsynced: from here on the order commits, whatever crashes
//   phase 2  the event in a Kafka transaction, committed ("sent <gid>" logged); then
//            COMMIT PREPARED 'gid'
//
// Why the event is produced after the decision, not before it as the Kafka side's "prepare":
// a Kafka transaction cannot stay prepared across its producer's life. A restarted
// coordinator's producer (same transactional.id) fences the old one and the broker aborts its
// open transaction, so whatever was sent before a crash is gone either way, and recovery sends
// the event again from the decision line, which is the event's only durable prepared copy.
// Sending only after the decision also means no reader ever sees the event of an order that
// was rolled back: not a read_uncommitted one, and not one of the dev broker, whose read
// committed is no different (librdkafka's mock cluster writes no transaction markers). The
// worst a crash between the send and "sent" does is a duplicate, with the same event_id.
//
// Recovery (Start, at every start): every prepared transaction of this strategy's gid prefix
// in pg_prepared_xacts is resolved by the log: decided → the event sent again unless "sent"
// was logged, then COMMIT PREPARED; undecided → ROLLBACK PREPARED (nothing was sent for it).
//
// What it costs, and the lab shows: every command needs both sides up, so during a broker
// outage commands are refused (each after the vote's one-second timeout) where an outbox
// accepts them; each command waits for four flushes to disk (PREPARE, the decision, "sent",
// COMMIT PREPARED) and for the vote's metadata request and the Kafka transaction's round trips
// (partition added, produce, commit). And a transaction left in doubt (prepared, the coordinator
// crashed or the broker went away after the decision) keeps holding what it held at PREPARE until
// it is resolved: its order's row lock (the next command on that order waits for it, here at most
// lock_timeout, then is refused), its xid (VACUUM cannot remove rows younger than it, on every
// table of the database) and a max_prepared_transactions slot, across server restarts, for as
// long as the coordinator stays away. Needs max_prepared_transactions > 0 on the server.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "brokers/kafka/kafka_common.h"
#include "core/log.h"
#include "core/postgres.h"
#include "lab/lab_db.h"
#include "lab/strategy.h"

namespace courier::lab {
namespace {

// Each Kafka step (init, the vote's metadata, a send, a commit attempt) waits this long; a
// commit is attempted until kCommitTimeout.
constexpr Duration kTimeout{1000};
constexpr Duration kCommitTimeout{3000};

std::string Errno() { return std::strerror(errno); }

// The file descriptor of the coordinator log.
struct Fd {
  explicit Fd(int fd = -1) : fd(fd) {}
  Fd(Fd&& other) noexcept : fd(std::exchange(other.fd, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      if (fd >= 0) ::close(fd);
      fd = std::exchange(other.fd, -1);
    }
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int fd;
};

// The coordinator's decisions, one line each, appended and fsynced before anything acts on
// them:
//   commit <gid> <order_id> <version> <event_id>   the decision (and the event, rebuilt from
//                                                  the command's fields by OrderEvent)
//   sent <gid>                                     the event's Kafka transaction committed
class CoordinatorLog {
 public:
  static Result<CoordinatorLog> Open(const std::string& path) {
    CoordinatorLog log;
    log.path_ = path;
    std::string text;
    {
      std::ifstream in(path, std::ios::binary);
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    const bool existed = ::access(path.c_str(), F_OK) == 0;
    log.fd_ = Fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
    if (log.fd_.fd < 0)
      return InternalError("cannot open the coordinator log " + path + ": " + Errno());
    // A line cut short by a crash was never acted on (nothing happens before its fsync
    // returned): it is no decision, and it is cut off so that the next line starts clean.
    const size_t complete = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    if (complete < text.size()) {
      if (::ftruncate(log.fd_.fd, static_cast<off_t>(complete)) != 0 || ::fsync(log.fd_.fd) != 0) {
        return InternalError("cannot cut the torn last line off " + path + ": " + Errno());
      }
      text.resize(complete);
    }
    if (!existed) {
      // The new file's name must survive a crash as well as its lines.
      const std::string dir =
          path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
      Fd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (d.fd < 0 || ::fsync(d.fd) != 0) {
        return InternalError("cannot sync the directory of " + path + ": " + Errno());
      }
    }
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream words(line);
      std::string verb, gid;
      words >> verb >> gid;
      if (verb == "commit") {
        Command c;
        words >> c.order_id >> c.version >> c.event_id;
        if (!words) return InternalError("coordinator log " + path + ": bad line '" + line + "'");
        log.decided_[gid] = c;
      } else if (verb == "sent") {
        log.sent_.insert(gid);
      } else {
        return InternalError("coordinator log " + path + ": bad line '" + line + "'");
      }
    }
    return log;
  }

  Status Decide(const std::string& gid, const Command& c) {
    COURIER_RETURN_IF_ERROR(Append("commit " + gid + " " + c.order_id + " " +
                                   std::to_string(c.version) + " " + c.event_id + "\n"));
    decided_[gid] = c;
    return Status::Ok();
  }
  Status Sent(const std::string& gid) {
    COURIER_RETURN_IF_ERROR(Append("sent " + gid + "\n"));
    sent_.insert(gid);
    return Status::Ok();
  }
  // The decided command of `gid`, if the log has its decision.
  std::optional<Command> Decision(const std::string& gid) const {
    auto it = decided_.find(gid);
    if (it == decided_.end()) return std::nullopt;
    return it->second;
  }
  bool WasSent(const std::string& gid) const { return sent_.count(gid) > 0; }

 private:
  Status Append(const std::string& line) {
    const ssize_t n = ::write(fd_.fd, line.data(), line.size());
    if (n != static_cast<ssize_t>(line.size())) {
      // A short write leaves a torn line that the next Open cuts off; nothing acts on it.
      return InternalError("cannot write the coordinator log " + path_ + ": " + Errno());
    }
    if (::fsync(fd_.fd) != 0) return InternalError("fsync " + path_ + ": " + Errno());
    return Status::Ok();
  }

  std::string path_;
  Fd fd_;
  std::map<std::string, Command> decided_;
  std::set<std::string> sent_;
};

// librdkafka's transactional producer, one transaction at a time.
class TransactionalProducer {
 public:
  TransactionalProducer(std::string bootstrap, std::string topic, std::string transactional_id)
      : bootstrap_(std::move(bootstrap)),
        topic_(std::move(topic)),
        transactional_id_(std::move(transactional_id)) {}

  // The Kafka side's vote: transactions initialised (the first init_transactions of a
  // producer fences every older producer of the transactional.id: the broker aborts the open
  // transaction a crashed coordinator left) and a broker that answers for the topic.
  Status Vote() {
    COURIER_RETURN_IF_ERROR(Ready());
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(producer_.get(), topic_.c_str(), nullptr);
    if (rkt == nullptr) return InternalError("Kafka topic handle for " + topic_);
    const rd_kafka_metadata_t* md = nullptr;
    const rd_kafka_resp_err_t err =
        rd_kafka_metadata(producer_.get(), 0, rkt, &md, static_cast<int>(kTimeout.count()));
    rd_kafka_topic_destroy(rkt);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return RetriableError(std::string("the broker does not answer: ") + rd_kafka_err2str(err));
    }
    const rd_kafka_resp_err_t topic_err =
        md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    rd_kafka_metadata_destroy(md);
    if (topic_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return RetriableError("the broker has no topic " + topic_ + ": " +
                            rd_kafka_err2str(topic_err));
    }
    return Status::Ok();
  }

  // Phase 2: `events` in one Kafka transaction, committed. `after_send` runs once they were
  // sent (acked inside the still open transaction), before the commit.
  Status SendCommitted(const std::vector<Event>& events, const std::function<void()>& after_send) {
    COURIER_RETURN_IF_ERROR(Ready());
    COURIER_RETURN_IF_ERROR(Check(rd_kafka_begin_transaction(producer_.get()), "begin"));
    for (const Event& e : events) {
      KafkaHeaders headers = MakeEventHeaders(e);
      const rd_kafka_resp_err_t err =
          rd_kafka_producev(producer_.get(), RD_KAFKA_V_TOPIC(topic_.c_str()),
                            RD_KAFKA_V_KEY(e.aggregate_id.data(), e.aggregate_id.size()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(e.payload.data()), e.payload.size()),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        Abort();
        return RetriableError(std::string("Kafka produce: ") + rd_kafka_err2str(err));
      }
      headers.release();  // owned by the message now
    }
    // Sent and acked, not committed: the commit decides whether a read_committed reader sees
    // them. (A timeout here leaves the rest to the commit, which waits for every send.)
    (void)rd_kafka_flush(producer_.get(), static_cast<int>(kTimeout.count()));
    after_send();
    const TimePoint deadline = Clock::Real().Now() + kCommitTimeout;
    while (true) {
      rd_kafka_error_t* error =
          rd_kafka_commit_transaction(producer_.get(), static_cast<int>(kTimeout.count()));
      if (error == nullptr) return Status::Ok();
      if (rd_kafka_error_is_retriable(error) && Clock::Real().Now() < deadline) {
        rd_kafka_error_destroy(error);
        continue;
      }
      const bool abortable = rd_kafka_error_txn_requires_abort(error);
      Status st = Check(error, "commit");
      if (abortable) {
        Abort();
      } else {
        // Still committing, or failed for good: a new producer starts clean, and its
        // init_transactions settles this transaction on the broker.
        Reset();
      }
      return st;
    }
  }

 private:
  // A producer with its transactions initialised.
  Status Ready() {
    if (producer_ == nullptr) {
      auto props = KafkaProducerSettings(bootstrap_, kTimeout);
      for (auto& [k, v] : props) {
        if (k == "linger.ms") v = "0";  // one event per transaction: nothing to batch
      }
      props.emplace_back("transactional.id", transactional_id_);
      COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf(props));
      char err[512];
      rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
      if (rk == nullptr) return InvalidArgumentError(std::string("Kafka producer: ") + err);
      conf.release();  // owned by rk now
      producer_.reset(rk);
      initialized_ = false;
    }
    if (!initialized_) {
      rd_kafka_error_t* error =
          rd_kafka_init_transactions(producer_.get(), static_cast<int>(kTimeout.count()));
      // A timed-out init may be called again on the same producer (librdkafka's rule).
      const bool retriable = error != nullptr && rd_kafka_error_is_retriable(error);
      Status st = Check(error, "init");
      if (!st.ok()) {
        if (!retriable) Reset();
        return st;
      }
      initialized_ = true;
    }
    return Status::Ok();
  }

  void Abort() {
    rd_kafka_error_t* error =
        rd_kafka_abort_transaction(producer_.get(), static_cast<int>(kTimeout.count()));
    if (error != nullptr) {
      rd_kafka_error_destroy(error);
      Reset();  // the next producer's init_transactions aborts it on the broker
    }
  }

  void Reset() {
    producer_.reset();
    initialized_ = false;
  }

  // Ok for no error; otherwise the error, destroyed, as kRetriable naming the step.
  Status Check(rd_kafka_error_t* error, const char* step) {
    if (error == nullptr) return Status::Ok();
    std::string message = std::string("Kafka transaction ") + step + " (transactional.id " +
                          transactional_id_ + "): " + rd_kafka_error_string(error);
    const bool fatal = rd_kafka_error_is_fatal(error);
    rd_kafka_error_destroy(error);
    if (fatal) Reset();
    return RetriableError(std::move(message));
  }

  std::string bootstrap_;
  std::string topic_;
  std::string transactional_id_;
  KafkaHandle producer_;
  bool initialized_ = false;  // init_transactions done on producer_
};

// The gids of this strategy's prepared transactions: "courier-lab:<schema>:<event_id>", so
// that strategies (and lab runs in other schemas) never resolve each other's.
std::string GidPrefix(const LabEnv& env) { return "courier-lab:" + env.schema + ":"; }

// The database of `env`, checked to be PostgreSQL with prepared transactions enabled.
Result<std::unique_ptr<LabDb>> OpenPostgres(const LabEnv& env) {
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<LabDb> db, LabDb::Open(env.db_url, env.schema));
  if (db->pg() == nullptr) {
    return FailedPreconditionError(
        "2pc needs PostgreSQL (PREPARE TRANSACTION): run the lab with --source postgres://...");
  }
  COURIER_ASSIGN_OR_RETURN(auto setting, db->Column("SHOW max_prepared_transactions"));
  if (setting.empty() || !setting[0] || *setting[0] == "0") {
    return FailedPreconditionError(
        "2pc needs PREPARE TRANSACTION, which this PostgreSQL server refuses: its "
        "max_prepared_transactions is 0 (set it above 0 in postgresql.conf and restart the "
        "server)");
  }
  return db;
}

// The gids of the prepared transactions that begin with `prefix`.
Result<std::vector<std::string>> PreparedGids(LabDb& db, const std::string& prefix) {
  COURIER_ASSIGN_OR_RETURN(auto rows,
                           db.Column("SELECT gid FROM pg_prepared_xacts WHERE database = "
                                     "current_database() AND left(gid, " +
                                     std::to_string(prefix.size()) + ") = " + QuoteLiteral(prefix) +
                                     " ORDER BY prepared"));
  std::vector<std::string> gids;
  for (auto& r : rows) {
    if (r) gids.push_back(std::move(*r));
  }
  return gids;
}

// COMMIT PREPARED / ROLLBACK PREPARED; one that is not prepared any more (resolved already) is
// done.
Status Resolve(LabDb& db, const char* verb, const std::string& gid) {
  Status st = db.Exec(std::string(verb) + " " + QuoteLiteral(gid));
  if (st.code() == StatusCode::kNotFound) return Status::Ok();
  return st;
}

class TwoPhaseCommit final : public Strategy {
 public:
  Status Prepare(const LabEnv& env) override {
    COURIER_ASSIGN_OR_RETURN(std::unique_ptr<LabDb> db, OpenPostgres(env));
    // Transactions an earlier run left prepared in this schema hold locks on the tables the
    // fresh run recreates: gone first.
    COURIER_ASSIGN_OR_RETURN(auto gids, PreparedGids(*db, GidPrefix(env)));
    for (const std::string& gid : gids) {
      COURIER_RETURN_IF_ERROR(Resolve(*db, "ROLLBACK PREPARED", gid));
    }
    return Strategy::Prepare(env);
  }

  // After the verdict: nothing of the run may stay prepared on the server (each prepared
  // transaction would hold its locks and VACUUM's horizon for good). What the service left is
  // resolved as a restarted service would: by the coordinator log, both sides completed.
  Status Cleanup(const LabEnv& env) override {
    TwoPhaseCommit coordinator;
    COURIER_RETURN_IF_ERROR(coordinator.Start(env));
    return coordinator.Finish(Clock::Real().Now() + Duration(10000));
  }

  Status Start(const LabEnv& env) override {
    prefix_ = GidPrefix(env);
    COURIER_ASSIGN_OR_RETURN(db_, OpenPostgres(env));
    COURIER_ASSIGN_OR_RETURN(CoordinatorLog log,
                             CoordinatorLog::Open(env.workdir + "/2pc-coordinator.log"));
    log_ = std::make_unique<CoordinatorLog>(std::move(log));
    // Fixed per strategy and topic: this start's producer fences the one a crashed start left.
    kafka_ = std::make_unique<TransactionalProducer>(env.bootstrap, env.topic,
                                                     "courier-lab-2pc:" + env.topic);
    return Recover();
  }

  Status Handle(const Command& c) override {
    // Those left in doubt first: they may hold the lock this command's order needs.
    CompleteInDoubt();
    const std::string gid = prefix_ + c.event_id;

    // Phase 1, PostgreSQL: the order prepared. PREPARE runs the deferred constraint checks,
    // so a commit that would fail fails here, before the broker hears of it.
    COURIER_RETURN_IF_ERROR(db_->Begin());
    Status st = db_->Exec(
        // A row an in-doubt transaction holds is not waited for longer than this.
        "SET LOCAL lock_timeout = '1s';" + WriteOrderSql(c));
    if (st.ok()) st = db_->Exec("PREPARE TRANSACTION " + QuoteLiteral(gid));
    if (!st.ok()) {
      (void)db_->Rollback();  // PREPARE's failure ended the transaction; this ends any other
      if (st.code() == StatusCode::kInvalidArgument) {
        return AbortedError("2pc: PostgreSQL votes no (the order was rolled back): " +
                            st.message());
      }
      // The connection dropped, perhaps after the PREPARE went through: no decision, so
      // rolled back if it did.
      RollBackUndecided(gid);
      return st;
    }
    // Prepared, no decision: a restart rolls it back.
    HitFault(c, Fault::kCrashBetween);

    // Phase 1, Kafka: the vote.
    if (Status vote = kafka_->Vote(); !vote.ok()) {
      RollBackUndecided(gid);
      return vote.WithContext("2pc: the Kafka side votes no; the order was rolled back");
    }

    // The decision, durable before either side commits.
    if (Status decided = log_->Decide(gid, c); !decided.ok()) {
      RollBackUndecided(gid);
      return decided;
    }
    in_doubt_.insert(gid);

    // Phase 2. The command is committed from the decision on: a failure here leaves it in
    // doubt (its order locked) until Idle, the next command or the next start completes it.
    if (Status done = Complete(gid, c, [&] { HitFault(c, Fault::kCrashInside); }); !done.ok()) {
      log::Warn("2pc: decided commit, not completed yet; the transaction stays prepared",
                {{"gid", gid}, {"error", done.message()}});
    }
    return Status::Ok();
  }

  void Idle() override { CompleteInDoubt(); }

  Status Finish(TimePoint deadline) override {
    while (true) {
      CompleteInDoubt();
      if (in_doubt_.empty() && to_roll_back_.empty()) return Status::Ok();
      if (Clock::Real().Now() >= deadline) break;
      std::this_thread::sleep_for(Duration(100));
    }
    return RetriableError(std::to_string(in_doubt_.size() + to_roll_back_.size()) +
                          " prepared transactions still in doubt (their rows locked): the "
                          "next start resolves them");
  }

 private:
  // Resolves what the last life left prepared, by the coordinator log.
  Status Recover() {
    COURIER_ASSIGN_OR_RETURN(auto gids, PreparedGids(*db_, prefix_));
    for (const std::string& gid : gids) {
      if (log_->Decision(gid)) {
        in_doubt_.insert(gid);  // decided commit: completed below, or later
      } else {
        // Undecided: nothing was sent for it (the Kafka side sends only after the decision).
        log::Info("2pc recovery: rolling back an undecided prepared transaction", {{"gid", gid}});
        COURIER_RETURN_IF_ERROR(Resolve(*db_, "ROLLBACK PREPARED", gid));
      }
    }
    if (!in_doubt_.empty()) {
      log::Info("2pc recovery: completing decided prepared transactions",
                {{"count", std::to_string(in_doubt_.size())}});
    }
    CompleteInDoubt();  // what the broker cannot take now waits for Idle
    return Status::Ok();
  }

  // Phase 2 of a decided transaction: the event committed in Kafka (unless logged as sent
  // already), then COMMIT PREPARED.
  Status Complete(const std::string& gid, const Command& c,
                  const std::function<void()>& after_send) {
    if (!log_->WasSent(gid)) {
      COURIER_RETURN_IF_ERROR(kafka_->SendCommitted({OrderEvent(c)}, after_send));
      // Spares a restart the duplicate of sending it again; without it, no harm but that.
      COURIER_RETURN_IF_ERROR(log_->Sent(gid));
    }
    COURIER_RETURN_IF_ERROR(Resolve(*db_, "COMMIT PREPARED", gid));
    in_doubt_.erase(gid);
    return Status::Ok();
  }

  // Tries once to complete every decided transaction still prepared, and to roll back the
  // undecided ones a failed ROLLBACK PREPARED left; after a failure, not again for a second.
  void CompleteInDoubt() {
    if ((in_doubt_.empty() && to_roll_back_.empty()) || Clock::Real().Now() < retry_at_) return;
    for (auto it = to_roll_back_.begin(); it != to_roll_back_.end();) {
      it = Resolve(*db_, "ROLLBACK PREPARED", *it).ok() ? to_roll_back_.erase(it) : std::next(it);
    }
    // The broker first: a send to a broker that is away fails only after every timeout.
    Status st = in_doubt_.empty() ? Status::Ok() : kafka_->Vote();
    const std::set<std::string> gids = in_doubt_;
    for (auto it = gids.begin(); st.ok() && it != gids.end(); ++it) {
      const std::optional<Command> c = log_->Decision(*it);
      if (c) st = Complete(*it, *c, [] {});  // in_doubt_ holds decided gids only
    }
    if (!st.ok() || !to_roll_back_.empty()) retry_at_ = Clock::Real().Now() + kTimeout;
  }

  // A prepared transaction with no decision: rolled back now, or as soon as the database
  // answers again.
  void RollBackUndecided(const std::string& gid) {
    if (!Resolve(*db_, "ROLLBACK PREPARED", gid).ok()) to_roll_back_.insert(gid);
  }

  std::string prefix_;
  std::unique_ptr<LabDb> db_;
  std::unique_ptr<CoordinatorLog> log_;
  std::unique_ptr<TransactionalProducer> kafka_;
  std::set<std::string> in_doubt_;      // decided commit, not completed
  std::set<std::string> to_roll_back_;  // undecided, ROLLBACK PREPARED failed
  TimePoint retry_at_{};                // CompleteInDoubt's next attempt after a failure
};

}  // namespace

std::unique_ptr<Strategy> MakeTwoPhaseCommit() { return std::make_unique<TwoPhaseCommit>(); }

}  // namespace courier::lab
