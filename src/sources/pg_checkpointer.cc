#include "sources/pg_checkpointer.h"

#include <sys/socket.h>

#include <algorithm>

#include "core/fault_points.h"
#include "core/log.h"

namespace courier {
namespace {

struct PgCancelDeleter {
  void operator()(PGcancel* c) const { PQfreeCancel(c); }
};

// How often the watching thread looks at the stop (a signal handler requests it, and can
// only set a flag).
constexpr Duration kTick{50};
// A stop noticed while a checkpoint runs is logged once it has waited this long (or the
// grace, when shorter): a checkpoint that commits at once is not worth a line.
constexpr Duration kReportAfter{500};
// After a cancel, how long the statement may take to return before its socket is shut down
// (a server that cannot be reached does not answer a cancel).
constexpr Duration kCancelWait{5000};

}  // namespace

CheckpointDeadline::CheckpointDeadline(const StopSignal* stop, Duration grace)
    : stop_(stop), grace_(grace), thread_([this] { Watch(); }) {}

CheckpointDeadline::~CheckpointDeadline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool CheckpointDeadline::Passed(TimePoint now) {
  if (!stop_->requested()) return false;
  if (!stopping_since_) stopping_since_ = now;
  return now - *stopping_since_ >= grace_;
}

Status CheckpointDeadline::Run(PGconn* conn, size_t events,
                               const std::function<Status()>& checkpoint) {
  // Made here, by the connection's thread; PQcancel may then be called from the watcher's.
  std::unique_ptr<PGcancel, PgCancelDeleter> cancel(PQgetCancel(conn));
  Watched w{cancel.get(), PQsocket(conn), events};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (Passed(Clock::Real().Now())) {
      return CancelledError("checkpoint of " + std::to_string(events) +
                            " events not started: the relay is stopping and its shutdown "
                            "timeout has passed");
    }
    watched_.push_back(&w);
  }
  Status st = checkpoint();
  std::lock_guard<std::mutex> lock(mu_);
  watched_.erase(std::find(watched_.begin(), watched_.end(), &w));
  if (!w.cancelled || st.ok()) return st;
  return CancelledError("checkpoint of " + std::to_string(events) +
                        " events cancelled: the relay is stopping and it still waited " +
                        std::to_string(grace_.count()) + " ms later (" + st.message() + ")");
}

void CheckpointDeadline::LogAbandoned(size_t events) const {
  log::Warn(
      "checkpoint abandoned at shutdown: its events were acked but stay in the outbox, and the "
      "next relay publishes them again",
      {{"events", events}, {"shutdown_timeout_ms", grace_.count()}});
}

void CheckpointDeadline::Watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!quit_) {
    cv_.wait_for(lock, kTick);
    if (quit_ || watched_.empty()) continue;
    const TimePoint now = Clock::Real().Now();
    const bool passed = Passed(now);
    if (!stopping_since_) continue;
    if (!reported_ && now - *stopping_since_ >= std::min(kReportAfter, grace_)) {
      reported_ = true;
      size_t events = 0;
      for (const Watched* w : watched_) events += w->events;
      log::Info("stopping: waiting for the checkpoint to commit, up to the shutdown timeout",
                {{"events", events}, {"shutdown_timeout_ms", grace_.count()}});
    }
    if (!passed) continue;
    for (Watched* w : watched_) {
      if (!w->cancelled) {
        w->cancelled = true;
        w->cancelled_at = now;
        char error[256] = "no cancel handle";
        if (w->cancel != nullptr && PQcancel(w->cancel, error, sizeof error)) continue;
        log::Warn("cannot cancel the checkpoint; closing its connection", {{"error", error}});
      } else if (w->shut || now - w->cancelled_at < kCancelWait) {
        continue;
      }
      // The statement then fails at once, as on a lost connection; its owner drops it.
      ::shutdown(w->socket, SHUT_RDWR);
      w->shut = true;
    }
  }
}

Result<PgConn> PgCheckpointer::Connect(const std::string& conninfo) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(conninfo));
  COURIER_RETURN_IF_ERROR(
      PgRun(conn.get(),
            std::string("SET idle_in_transaction_session_timeout = '") + kIdleInTransaction + "'"));
  return conn;
}

std::unique_ptr<PgCheckpointer> PgCheckpointer::Start(const std::string& conninfo, CommitFn commit,
                                                      size_t max_in_flight,
                                                      FaultPoints* fault_points,
                                                      CheckpointDeadline* deadline) {
  auto conn = Connect(conninfo);
  if (!conn.ok()) {
    log::Warn("checkpoints commit one batch at a time: no second connection",
              {{"error", conn.status().message()}});
    return nullptr;
  }
  return std::make_unique<PgCheckpointer>(std::move(conn).value(), std::move(commit), max_in_flight,
                                          fault_points, deadline);
}

PgCheckpointer::PgCheckpointer(PgConn conn, CommitFn commit, size_t max_in_flight,
                               FaultPoints* fault_points, CheckpointDeadline* deadline)
    : commit_(std::move(commit)),
      max_in_flight_(std::max<size_t>(1, max_in_flight)),
      fault_points_(fault_points),
      deadline_(deadline),
      conn_(std::move(conn)),
      thread_([this] { Work(); }) {}

PgCheckpointer::~PgCheckpointer() {
  (void)Drain();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Status PgCheckpointer::Submit(CheckpointJob job) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !failure_.ok() || queue_.size() + committing_ < max_in_flight_; });
  if (!failure_.ok()) return failure_;
  queue_.push_back(std::move(job));
  cv_.notify_all();
  return Status::Ok();
}

Status PgCheckpointer::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !failure_.ok() || (queue_.empty() && committing_ == 0); });
  return failure_;
}

void PgCheckpointer::PendingIds(std::vector<int64_t>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  out->insert(out->end(), committing_ids_.begin(), committing_ids_.end());
  for (const CheckpointJob& job : queue_) {
    out->insert(out->end(), job.acked.begin(), job.acked.end());
    for (const Rejected& r : job.rejected) out->push_back(r.id);
  }
}

Status PgCheckpointer::failure() {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

uint64_t PgCheckpointer::committed() {
  std::lock_guard<std::mutex> lock(mu_);
  return committed_;
}

void PgCheckpointer::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || (!queue_.empty() && failure_.ok()); });
    if (stop_) return;
    // Everything queued goes into one transaction.
    CheckpointJob job = std::move(queue_.front());
    queue_.pop_front();
    size_t batches = 1;
    while (!queue_.empty()) {
      CheckpointJob& next = queue_.front();
      job.acked.insert(job.acked.end(), next.acked.begin(), next.acked.end());
      job.xids.insert(job.xids.end(), next.xids.begin(), next.xids.end());
      if (next.record && (!job.record || *next.record > *job.record)) job.record = next.record;
      job.rejected.insert(job.rejected.end(), std::make_move_iterator(next.rejected.begin()),
                          std::make_move_iterator(next.rejected.end()));
      queue_.pop_front();
      ++batches;
    }
    committing_ = batches;
    committing_ids_ = job.acked;
    for (const Rejected& r : job.rejected) committing_ids_.push_back(r.id);
    lock.unlock();
    // Dead letters keep the source's order (their ids decide what is released first).
    std::sort(job.rejected.begin(), job.rejected.end(),
              [](const Rejected& a, const Rejected& b) { return a.id < b.id; });
    Status st = conn_ ? Status::Ok() : RetriableError("the checkpoint connection is closed");
    const size_t events = job.acked.size() + job.rejected.size();
    if (st.ok()) {
      if (batches > 1) ReachFaultPoint(fault_points_, "relay-checkpoint-coalesced");
      st = deadline_ == nullptr ? commit_(conn_.get(), job)
                                : deadline_->Run(conn_.get(), events, [this, &job] {
                                    return commit_(conn_.get(), job);
                                  });
    }
    // A failed transaction leaves the connection suspect; nothing more is committed here
    // (the source reconnects, with a new checkpointer).
    if (!st.ok()) conn_.reset();
    lock.lock();
    committing_ = 0;
    committing_ids_.clear();
    if (st.ok()) committed_ += batches;
    if (!st.ok() && failure_.ok()) {
      failure_ = st;
      if (st.code() == StatusCode::kCancelled && deadline_ != nullptr) {
        size_t abandoned = events;
        for (const CheckpointJob& queued : queue_) {
          abandoned += queued.acked.size() + queued.rejected.size();
        }
        deadline_->LogAbandoned(abandoned);
      }
      queue_.clear();  // their rows stay in the outbox, to be fetched again
    }
    cv_.notify_all();
  }
}

}  // namespace courier
