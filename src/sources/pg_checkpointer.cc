#include "sources/pg_checkpointer.h"

#include <algorithm>

#include "core/fault_points.h"
#include "core/log.h"

namespace courier {

Result<PgConn> PgCheckpointer::Connect(const std::string& conninfo) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(conninfo));
  COURIER_RETURN_IF_ERROR(
      PgRun(conn.get(),
            std::string("SET idle_in_transaction_session_timeout = '") + kIdleInTransaction + "'"));
  return conn;
}

std::unique_ptr<PgCheckpointer> PgCheckpointer::Start(const std::string& conninfo, CommitFn commit,
                                                      size_t max_in_flight,
                                                      FaultPoints* fault_points) {
  auto conn = Connect(conninfo);
  if (!conn.ok()) {
    log::Warn("checkpoints commit one batch at a time: no second connection",
              {{"error", conn.status().message()}});
    return nullptr;
  }
  return std::make_unique<PgCheckpointer>(std::move(conn).value(), std::move(commit), max_in_flight,
                                          fault_points);
}

PgCheckpointer::PgCheckpointer(PgConn conn, CommitFn commit, size_t max_in_flight,
                               FaultPoints* fault_points)
    : commit_(std::move(commit)),
      max_in_flight_(std::max<size_t>(1, max_in_flight)),
      fault_points_(fault_points),
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
    if (st.ok()) {
      if (batches > 1) ReachFaultPoint(fault_points_, "relay-checkpoint-coalesced");
      st = commit_(conn_.get(), job);
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
      queue_.clear();  // their rows stay in the outbox, to be fetched again
    }
    cv_.notify_all();
  }
}

}  // namespace courier
