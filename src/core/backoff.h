// Capped exponential backoff with jitter: the n-th delay is drawn uniformly from
// [cap_n / 2, cap_n] where cap_n = min(max, initial * 2^n). Reset() after a success. Wait()
// sleeps the next delay on the clock it was given (the real one by default), so a retry loop
// runs under a fake clock in tests without sleeping.
//
// Thread-safety: not synchronised; one Backoff per retry loop.
#pragma once

#include <cstdint>
#include <random>

#include "core/clock.h"

namespace courier {

class Backoff {
 public:
  Backoff(Duration initial, Duration max, uint64_t seed = std::random_device{}())
      : Backoff(initial, max, &Clock::Real(), seed) {}
  // `clock` (not owned) outlives the backoff.
  Backoff(Duration initial, Duration max, Clock* clock, uint64_t seed = std::random_device{}());
  Duration Next();
  // Sleeps Next() on the clock; false when woken by `stop`.
  bool Wait(const StopSignal& stop) { return clock_->SleepFor(Next(), stop); }
  void Reset() { attempt_ = 0; }
  int attempt() const { return attempt_; }

 private:
  Duration initial_;
  Duration max_;
  Clock* clock_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace courier
