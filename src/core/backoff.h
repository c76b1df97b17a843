// Capped exponential backoff with jitter: the n-th delay is drawn uniformly from
// [cap_n / 2, cap_n] where cap_n = min(max, initial * 2^n). Reset() after a success.
//
// Thread-safety: not synchronised; one Backoff per retry loop.
#pragma once

#include <cstdint>
#include <random>

#include "core/clock.h"

namespace courier {

class Backoff {
 public:
  Backoff(Duration initial, Duration max, uint64_t seed = std::random_device{}());
  Duration Next();
  void Reset() { attempt_ = 0; }
  int attempt() const { return attempt_; }

 private:
  Duration initial_;
  Duration max_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace courier
