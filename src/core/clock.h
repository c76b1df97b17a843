// Time, sleeping and stop requests behind one injectable interface, so backoff and timeouts
// are testable without sleeping.
//
// Thread-safety: StopSignal may be requested from any thread or a signal handler (it is a
// lock-free atomic); Clock implementations are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace courier {

using Duration = std::chrono::milliseconds;
using TimePoint = std::chrono::steady_clock::time_point;

// Microseconds since the Unix epoch by the wall clock: timestamps others read (an event's
// created_at, PostgreSQL's standby status updates), never for measuring time.
inline int64_t UnixMicrosNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class Clock;

// A stop request, and for a relay's publish path also its lease: a fence.
//
// The fence is a deadline, not only a flag. The lease holder moves `valid until` forward on
// each renewal (BeginTerm, Extend); once the steady clock passes it, abandoned() and
// requested() are true without anyone calling Abandon(). So a relay frozen past its lease
// (SIGSTOP, a long GC-like pause, a suspended VM) that resumes sees it is fenced the moment it
// looks, before its renewer thread has had a chance to run.
class StopSignal {
 public:
  // `clock` (not owned, outlives the signal) decides when the deadline has passed; null: the
  // steady clock.
  explicit StopSignal(const Clock* clock = nullptr) : clock_(clock) {}

  void Request() { requested_.store(true, std::memory_order_relaxed); }
  bool requested() const { return requested_.load(std::memory_order_relaxed) || Expired(); }
  // Stop now, without the usual grace for in-flight work (a relay that lost its lease).
  void Abandon() {
    abandoned_.store(true, std::memory_order_relaxed);
    Request();
  }
  // True once abandoned or once the lease's deadline has passed: send nothing more.
  bool abandoned() const { return abandoned_.load(std::memory_order_relaxed) || Expired(); }
  // A new lease term valid until `valid_until`; term() counts them (a Kafka producer is
  // re-initialised per term).
  void BeginTerm(TimePoint valid_until) {
    valid_until_ns_.store(Ns(valid_until), std::memory_order_release);
    term_.fetch_add(1, std::memory_order_acq_rel);
  }
  // A renewal: the lease is valid until `valid_until` now.
  void Extend(TimePoint valid_until) {
    valid_until_ns_.store(Ns(valid_until), std::memory_order_release);
  }
  uint64_t term() const { return term_.load(std::memory_order_acquire); }
  // For a signal reused across terms; only when no other thread may still request it. Clears
  // the deadline too (the next term sets it).
  void Reset() {
    abandoned_.store(false, std::memory_order_relaxed);
    requested_.store(false, std::memory_order_relaxed);
    valid_until_ns_.store(kNoDeadline, std::memory_order_release);
  }

 private:
  static constexpr int64_t kNoDeadline = INT64_MAX;
  static int64_t Ns(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  bool Expired() const;

  const Clock* clock_;
  std::atomic<bool> requested_{false};
  std::atomic<bool> abandoned_{false};
  std::atomic<int64_t> valid_until_ns_{kNoDeadline};  // steady clock; kNoDeadline: no lease
  std::atomic<uint64_t> term_{0};
  static_assert(std::atomic<bool>::is_always_lock_free, "must be usable from a signal handler");
  static_assert(std::atomic<int64_t>::is_always_lock_free, "must be usable from a signal handler");
};

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  // Sleeps for `d` or until `stop` is requested; returns false when woken by the stop.
  virtual bool SleepFor(Duration d, const StopSignal& stop) = 0;
  // The process-wide real clock.
  static Clock& Real();
};

inline bool StopSignal::Expired() const {
  const int64_t until = valid_until_ns_.load(std::memory_order_acquire);
  if (until == kNoDeadline) return false;
  const TimePoint now = clock_ != nullptr ? clock_->Now() : std::chrono::steady_clock::now();
  return Ns(now) >= until;
}

}  // namespace courier
