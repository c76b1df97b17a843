// Time, sleeping and stop requests behind one injectable interface, so backoff and timeouts
// are testable without sleeping.
//
// Thread-safety: StopSignal may be requested from any thread or a signal handler (it is a
// lock-free atomic); Clock implementations are thread-safe.
#pragma once

#include <atomic>
#include <chrono>

namespace courier {

using Duration = std::chrono::milliseconds;
using TimePoint = std::chrono::steady_clock::time_point;

class StopSignal {
 public:
  void Request() { requested_.store(true, std::memory_order_relaxed); }
  bool requested() const { return requested_.load(std::memory_order_relaxed); }
  // Stop now, without the usual grace for in-flight work (a relay that lost its lease).
  void Abandon() {
    abandoned_.store(true, std::memory_order_relaxed);
    Request();
  }
  bool abandoned() const { return abandoned_.load(std::memory_order_relaxed); }
  // For a signal reused across terms; only when no other thread may still request it.
  void Reset() {
    abandoned_.store(false, std::memory_order_relaxed);
    requested_.store(false, std::memory_order_relaxed);
  }

 private:
  std::atomic<bool> requested_{false};
  std::atomic<bool> abandoned_{false};
  static_assert(std::atomic<bool>::is_always_lock_free, "must be usable from a signal handler");
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

}  // namespace courier
