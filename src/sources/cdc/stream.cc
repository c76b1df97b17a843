#include "sources/cdc/stream.h"

#include <algorithm>
#include <chrono>

#include "sources/cdc/change.h"

namespace courier::cdc {
namespace {

// undefined_object: what pgoutput raises for a publication it cannot find.
constexpr const char* kUndefinedObject = "42704";

// How long the reader waits for the socket or for room at a time: the longest it takes to see
// a stop, and how late a status update may be.
constexpr Duration kPoll{20};
// How long a waiter sleeps before it looks at its stop signal again.
constexpr Duration kStopCheck{20};
// Bytes the reader moves from the connection to the queue per hold of mu_, so a Report()
// never waits long behind it.
constexpr size_t kReadBudget = size_t{1} << 20;
// Emptied message buffers kept for reuse: small ones, and not many (at most 4 MiB).
constexpr size_t kMaxSpares = 256;
constexpr size_t kMaxSpareCapacity = size_t{16} << 10;

// A primary keepalive ('k', wal_end, send time, reply flag) that asks for a reply at once.
bool IsReplyRequest(const std::string& msg) {
  return msg.size() >= 18 && msg[0] == 'k' && msg[17] != 0;
}

}  // namespace

Status ReplicationStream::Start(const std::string& conninfo, const std::string& slot,
                                const std::string& publication, Lsn start) {
  Close();
  slot_ = slot;
  publication_missing_ = false;
  COURIER_ASSIGN_OR_RETURN(PgConn repl, PgConnect(conninfo, /*replication=*/true));
  COURIER_ASSIGN_OR_RETURN(PgResult id, PgSimple(repl.get(), "IDENTIFY_SYSTEM"));
  system_id_ = std::stoull(PQgetvalue(id.get(), 0, 0));
  // pgoutput writes column values with this session's output functions: captured tables'
  // values (docs/table-cdc.md) must read the same whatever the server's or role's settings,
  // timestamps in UTC.
  for (const char* setting : kValueSettings) {
    COURIER_RETURN_IF_ERROR(PgSimple(repl.get(), setting).status());
  }
  const std::string cmd = "START_REPLICATION SLOT " + QuoteIdent(slot) + " LOGICAL " +
                          pgoutput::FormatLsn(start) + " (proto_version '1', publication_names " +
                          QuoteLiteral(QuoteIdent(publication)) + ", messages 'true')";
  PgResult res(PQexec(repl.get(), cmd.c_str()));
  if (PQresultStatus(res.get()) != PGRES_COPY_BOTH) {
    // A slot dropped or taken since it was checked: the reconnect sorts it out.
    return RetriableError(PgError(repl.get(), res.get()).message())
        .WithContext("start streaming from slot " + slot);
  }
  PGconn* conn = repl.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    repl_ = std::move(repl);
    received_ = start;
    confirmed_ = start;
    sent_confirmed_ = 0;
    last_status_ = Clock::Real().Now();
  }
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_.clear();
    queued_bytes_ = 0;
    ended_.reset();
    stop_ = false;
    running_ = true;
  }
  // Close() joins the reader before it closes the connection: `conn` outlives it.
  reader_ = std::thread([this, conn] { ReadLoop(conn); });
  return Status::Ok();
}

Result<bool> ReplicationStream::Next(std::string* out) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (queue_.empty()) {
    if (ended_) return *ended_;
    return false;
  }
  std::string& front = queue_.front();
  out->swap(front);  // `front` now holds the caller's old buffer: kept for the reader
  const size_t before = queued_bytes_;
  queued_bytes_ -= out->size();
  if (spare_.size() < kMaxSpares && front.capacity() <= kMaxSpareCapacity) {
    front.clear();
    spare_.push_back(std::move(front));
  }
  queue_.pop_front();
  const size_t low_water = max_queued_bytes_ / 2;
  if (before > low_water && queued_bytes_ <= low_water) room_cv_.notify_all();
  return true;
}

void ReplicationStream::Wait(const StopSignal& stop, Duration timeout) {
  WaitQueued(&stop, Clock::Real().Now() + timeout);
}

void ReplicationStream::WaitReadable(Duration timeout) {
  WaitQueued(nullptr, Clock::Real().Now() + timeout);
}

void ReplicationStream::WaitQueued(const StopSignal* stop, TimePoint deadline) {
  std::unique_lock<std::mutex> lock(queue_mu_);
  while (running_ && queue_.empty() && !ended_) {
    if (stop != nullptr && stop->requested()) return;
    const TimePoint now = Clock::Real().Now();
    if (now >= deadline) return;
    // The reader's notify wakes this at once; the slices only bound how late `stop` is seen.
    const auto left = deadline - now;
    queued_cv_.wait_for(lock,
                        stop != nullptr ? std::min<TimePoint::duration>(left, kStopCheck) : left);
  }
}

size_t ReplicationStream::queued_bytes() const {
  std::lock_guard<std::mutex> lock(queue_mu_);
  return queued_bytes_;
}

void ReplicationStream::Report(Lsn received, Lsn confirmed, bool force) {
  received_ = received;
  confirmed_ = confirmed;
  std::lock_guard<std::mutex> lock(mu_);
  const bool moved = confirmed != sent_confirmed_;
  if (!force && !moved && Clock::Real().Now() - last_status_ < status_interval_) return;
  SendStatusLocked();
}

void ReplicationStream::SendStatusLocked() {
  if (!repl_) return;
  const Lsn confirmed = confirmed_.load();
  const std::string msg =
      pgoutput::StandbyStatusUpdate(received_.load(), confirmed, UnixMicrosNow(), false);
  if (PQputCopyData(repl_.get(), msg.data(), static_cast<int>(msg.size())) == 1) {
    (void)PQflush(repl_.get());
    sent_confirmed_ = confirmed;
    last_status_ = Clock::Real().Now();
  }
}

void ReplicationStream::ReadLoop(PGconn* conn) {
  std::vector<std::string> incoming;  // read under mu_, queued under queue_mu_
  std::vector<std::string> spares;
  // The queue filled up: read again only once it drained to half, not a message at a time.
  bool paused = false;
  const size_t low_water = max_queued_bytes_ / 2;
  while (true) {
    size_t room = 0;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      if (queued_bytes_ >= max_queued_bytes_) paused = true;
      if (paused) {
        room_cv_.wait_for(lock, kPoll, [&] { return stop_ || queued_bytes_ <= low_water; });
        if (queued_bytes_ <= low_water) paused = false;
      }
      if (stop_) return;
      if (!paused) room = max_queued_bytes_ - queued_bytes_;
      if (spares.empty()) spares.swap(spare_);
    }
    Read read = Read::kBudget;
    Status why;
    bool reply_requested = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (room > 0) {
        read = ReadLocked(conn, std::min(room, kReadBudget), &incoming, &spares, &why,
                          &reply_requested);
      }
      // While the queue is full too: the server must hear from the stream every interval.
      if (read != Read::kEnded &&
          (reply_requested || Clock::Real().Now() - last_status_ >= status_interval_)) {
        SendStatusLocked();
      }
    }
    if (!incoming.empty() || read == Read::kEnded) {
      std::lock_guard<std::mutex> lock(queue_mu_);
      for (std::string& msg : incoming) {
        queued_bytes_ += msg.size();
        queue_.push_back(std::move(msg));
      }
      if (read == Read::kEnded) ended_ = std::move(why);
      queued_cv_.notify_all();
    }
    incoming.clear();
    if (read == Read::kEnded) {
      // Nothing more to read: the relay reconnects, and Close() stops this.
      std::unique_lock<std::mutex> lock(queue_mu_);
      room_cv_.wait(lock, [&] { return stop_; });
      return;
    }
    // Outside mu_: the relay thread may report meanwhile.
    if (read == Read::kDrained) PgWaitReadable(conn, static_cast<int>(kPoll.count()));
  }
}

ReplicationStream::Read ReplicationStream::ReadLocked(PGconn* conn, size_t budget,
                                                      std::vector<std::string>* incoming,
                                                      std::vector<std::string>* spares, Status* why,
                                                      bool* reply_requested) {
  size_t got = 0;
  bool consumed = false;
  while (got < budget) {
    char* buf = nullptr;
    const int n = PQgetCopyData(conn, &buf, /*async=*/1);
    if (n > 0) {
      std::string msg;
      if (!spares->empty()) {
        msg.swap(spares->back());
        spares->pop_back();
      }
      msg.assign(buf, static_cast<size_t>(n));
      PQfreemem(buf);
      if (IsReplyRequest(msg)) *reply_requested = true;
      got += msg.size();
      incoming->push_back(std::move(msg));
      continue;
    }
    if (n == 0) {
      // Read what the socket has once; then it is the socket's turn to be waited for.
      if (consumed) return Read::kDrained;
      if (PQconsumeInput(conn) == 0) {
        *why = PgError(conn, nullptr);
        return Read::kEnded;
      }
      consumed = true;
      continue;
    }
    // The stream ended: the server says why in the result that follows.
    PgResult res(PQgetResult(conn));
    const bool failed = res != nullptr && PQresultStatus(res.get()) == PGRES_FATAL_ERROR;
    const Status st =
        failed ? PgError(conn, res.get()) : RetriableError("replication stream ended");
    if (failed && PgSqlState(res.get()) == kUndefinedObject) publication_missing_ = true;
    *why = RetriableError(st.message()).WithContext("replication stream of slot " + slot_);
    return Read::kEnded;
  }
  return Read::kBudget;
}

void ReplicationStream::Close() {
  StopReader();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (repl_ && PQstatus(repl_.get()) == CONNECTION_OK) {
      // Report the final position so a restart repeats as little as possible.
      SendStatusLocked();
      (void)PQputCopyEnd(repl_.get(), nullptr);
      (void)PQflush(repl_.get());
    }
    repl_.reset();
  }
  std::lock_guard<std::mutex> lock(queue_mu_);
  queue_.clear();
  queued_bytes_ = 0;
  ended_.reset();
  running_ = false;
}

void ReplicationStream::StopReader() {
  if (!reader_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stop_ = true;
  }
  room_cv_.notify_all();
  reader_.join();
}

}  // namespace courier::cdc
