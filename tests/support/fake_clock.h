// A clock that moves only when a test moves it, for driving the relay, the lease and backoff
// without sleeping.
//
// SleepFor() blocks the calling thread until the fake time reaches its deadline (another
// thread called Advance or AdvanceToNextWakeup) or `stop` is requested; it never waits for
// real time to pass. A test drives a component running on its own thread by waiting until that
// thread sleeps (WaitForSleepers) and then moving the time to the earliest deadline: the
// component's schedule (backoff, lease renewals, poll intervals) runs at once, in order.
//
// Thread-safety: every member may be called from any thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>

#include "core/clock.h"

namespace courier::test {

class FakeClock final : public Clock {
 public:
  TimePoint Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }

  bool SleepFor(Duration d, const StopSignal& stop) override {
    std::unique_lock<std::mutex> lock(mu_);
    const TimePoint deadline = now_ + d;
    const auto me = sleepers_.emplace(deadline, 0);
    ++sleeps_;
    changed_.notify_all();
    // The short real wait only notices a stop request, which has no way to wake anyone; the
    // fake deadline is what ends a sleep.
    while (now_ < deadline && !stop.requested()) {
      changed_.wait_for(lock, std::chrono::milliseconds(1));
    }
    sleepers_.erase(me);
    changed_.notify_all();
    return !stop.requested();
  }

  void Advance(Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
    changed_.notify_all();
  }

  // Moves the time to the earliest deadline of a sleeper still waiting (none: nothing) and
  // returns how far it moved.
  Duration AdvanceToNextWakeup() {
    std::lock_guard<std::mutex> lock(mu_);
    const auto next = sleepers_.upper_bound(now_);
    if (next == sleepers_.end()) return Duration(0);
    const auto moved = std::chrono::duration_cast<Duration>(next->first - now_);
    now_ = next->first;
    changed_.notify_all();
    return moved;
  }

  // Waits, in real time and at most `timeout`, until at least `n` threads sleep on this clock
  // with a deadline still ahead.
  bool WaitForSleepers(size_t n, Duration timeout = Duration(5000)) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, timeout, [&] {
      return static_cast<size_t>(std::distance(sleepers_.upper_bound(now_), sleepers_.end())) >= n;
    });
  }

  size_t sleepers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sleepers_.size();
  }
  // Calls of SleepFor so far.
  int64_t sleeps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sleeps_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable changed_;
  TimePoint now_{std::chrono::hours(1000)};
  std::multimap<TimePoint, int> sleepers_;  // by deadline
  int64_t sleeps_ = 0;
};

}  // namespace courier::test
