#include "sources/cdc/stream.h"

#include <chrono>

#include "sources/cdc/change.h"

namespace courier::cdc {
namespace {

// undefined_object: what pgoutput raises for a publication it cannot find.
constexpr const char* kUndefinedObject = "42704";

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
  {
    std::lock_guard<std::mutex> lock(mu_);
    repl_ = std::move(repl);
    received_ = start;
    confirmed_ = start;
    sent_confirmed_ = 0;
    last_status_ = Clock::Real().Now();
  }
  StartKeepalive();
  return Status::Ok();
}

Result<bool> ReplicationStream::Next(std::string* out) {
  if (!stash_.empty()) {
    out->swap(stash_);
    stash_.clear();
    return true;
  }
  std::lock_guard<std::mutex> lock(mu_);
  char* buf = nullptr;
  int n = PQgetCopyData(repl_.get(), &buf, /*async=*/1);
  if (n == 0) {
    if (PQconsumeInput(repl_.get()) == 0) return PgError(repl_.get(), nullptr);
    n = PQgetCopyData(repl_.get(), &buf, /*async=*/1);
  }
  if (n > 0) {
    out->assign(buf, static_cast<size_t>(n));
    PQfreemem(buf);
    return true;
  }
  if (n == 0) return false;
  // The stream ended: the server says why in the result that follows.
  PgResult res(PQgetResult(repl_.get()));
  const bool failed = res != nullptr && PQresultStatus(res.get()) == PGRES_FATAL_ERROR;
  const Status st =
      failed ? PgError(repl_.get(), res.get()) : RetriableError("replication stream ended");
  if (failed && PgSqlState(res.get()) == kUndefinedObject) publication_missing_ = true;
  return RetriableError(st.message()).WithContext("replication stream of slot " + slot_);
}

void ReplicationStream::Wait(const StopSignal& stop, Duration timeout) {
  if (!stash_.empty()) return;
  const TimePoint deadline = Clock::Real().Now() + timeout;
  while (!stop.requested() && Clock::Real().Now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!repl_ || PQconsumeInput(repl_.get()) == 0) return;  // Next reports the error
      char* buf = nullptr;
      const int n = PQgetCopyData(repl_.get(), &buf, /*async=*/1);
      if (n > 0) {
        stash_.assign(buf, static_cast<size_t>(n));
        PQfreemem(buf);
        return;
      }
      if (n < 0) return;
    }
    WaitReadable(Duration(20));  // re-check `stop` every 20 ms
  }
}

void ReplicationStream::WaitReadable(Duration timeout) {
  PGconn* conn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!repl_) return;
    conn = repl_.get();
  }
  // Outside the lock: the keepalive thread may send meanwhile. Only this thread closes the
  // connection, so it outlives the wait.
  PgWaitReadable(conn, static_cast<int>(timeout.count()));
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

void ReplicationStream::Close() {
  StopKeepalive();
  std::lock_guard<std::mutex> lock(mu_);
  if (repl_ && PQstatus(repl_.get()) == CONNECTION_OK) {
    // Report the final position so a restart repeats as little as possible.
    SendStatusLocked();
    (void)PQputCopyEnd(repl_.get(), nullptr);
    (void)PQflush(repl_.get());
  }
  repl_.reset();
  stash_.clear();
}

void ReplicationStream::StartKeepalive() {
  StopKeepalive();
  keepalive_stop_ = false;
  keepalive_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(keepalive_mu_);
    while (!keepalive_cv_.wait_for(lock, status_interval_, [this] { return keepalive_stop_; })) {
      std::lock_guard<std::mutex> repl_lock(mu_);
      SendStatusLocked();
    }
  });
}

void ReplicationStream::StopKeepalive() {
  if (!keepalive_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(keepalive_mu_);
    keepalive_stop_ = true;
  }
  keepalive_cv_.notify_all();
  keepalive_.join();
}

}  // namespace courier::cdc
