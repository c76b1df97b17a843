#include "core/backoff.h"

#include <algorithm>
#include <thread>

namespace courier {
namespace {

class RealClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  bool SleepFor(Duration d, const StopSignal& stop) override {
    // Sliced so that a stop requested from a signal handler is seen within 20 ms.
    const TimePoint deadline = Now() + d;
    while (!stop.requested()) {
      const TimePoint now = Now();
      if (now >= deadline) return true;
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          deadline - now, std::chrono::milliseconds(20)));
    }
    return false;
  }
};

}  // namespace

Clock& Clock::Real() {
  static RealClock clock;
  return clock;
}

Backoff::Backoff(Duration initial, Duration max, Clock* clock, uint64_t seed)
    : initial_(initial), max_(max), clock_(clock), rng_(seed) {}

Duration Backoff::Next() {
  const int shift = std::min(attempt_, 30);
  ++attempt_;
  const int64_t cap = std::min<int64_t>(max_.count(), initial_.count() * (int64_t{1} << shift));
  std::uniform_int_distribution<int64_t> dist(cap / 2, cap);
  return Duration(dist(rng_));
}

}  // namespace courier
