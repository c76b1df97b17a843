// Processes the chaos tests kill: each runs a courier command, is SIGKILLed at a random moment
// (every 0.1-1 s by default) and started again at once, for the chaos budget
// (COURIER_CHAOS_SECONDS).
#pragma once

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/fixtures.h"

namespace courier::test {

// COURIER_CHAOS_SECONDS when set (at least 5 s), else `fallback`.
inline Duration ChaosBudget(Duration fallback) {
  const char* env = std::getenv("COURIER_CHAOS_SECONDS");
  const int seconds = env != nullptr ? std::atoi(env) : 0;
  return seconds > 0 ? Duration(std::max(5, seconds) * 1000) : fallback;
}

// A courier process started again each time it is killed.
class Victim {
 public:
  Victim(std::string name, std::vector<std::string> args, std::string log)
      : name_(std::move(name)), args_(std::move(args)), log_(std::move(log)) {}

  const std::string& name() const { return name_; }
  const std::string& log() const { return log_; }
  int kills() const { return kills_; }
  TimePoint next_kill() const { return next_kill_; }

  Status Start() {
    COURIER_ASSIGN_OR_RETURN(Subprocess child, SpawnCourier(args_, log_));
    child_ = std::move(child);
    return Status::Ok();
  }

  // SIGKILL, reaped, started again; the next kill drawn from [min, max].
  Status KillAndRestart(std::mt19937& rng, Duration min, Duration max) {
    if (child_) {
      child_->Signal(SIGKILL);
      child_->Wait(Duration(10000));
      ++kills_;
    }
    Schedule(rng, min, max);
    return Start();
  }

  void Schedule(std::mt19937& rng, Duration min, Duration max) {
    const auto spread = static_cast<unsigned>((max - min).count());
    next_kill_ = Clock::Real().Now() + min + Duration(spread > 0 ? rng() % spread : 0);
  }

  // SIGTERM, and its exit code (nullopt: still running after the timeout, then killed).
  std::optional<int> Stop() {
    if (!child_) return std::nullopt;
    child_->Signal(SIGTERM);
    std::optional<int> code = child_->Wait(Duration(30000));
    child_.reset();
    return code;
  }

 private:
  std::string name_;
  std::vector<std::string> args_;
  std::string log_;
  std::optional<Subprocess> child_;
  TimePoint next_kill_{};
  int kills_ = 0;
};

// Until `end`: whichever victim's moment comes first is SIGKILLed and started again, each on
// its own random schedule in [min, max]. `between(now)` runs before each kill (a test's other
// faults on their own schedule). The victims are running when it returns.
template <typename Between>
Status KillAtRandomUntil(TimePoint end, std::vector<Victim*> victims, std::mt19937& rng,
                         Between between, Duration min = Duration(100),
                         Duration max = Duration(1000)) {
  for (Victim* v : victims) {
    COURIER_RETURN_IF_ERROR(v->Start());
    v->Schedule(rng, min, max);
  }
  while (true) {
    Victim* next = *std::min_element(victims.begin(), victims.end(), [](Victim* a, Victim* b) {
      return a->next_kill() < b->next_kill();
    });
    const TimePoint at = std::min(next->next_kill(), end);
    // The chaos schedule itself: the moment of the next fault, not a wait for a condition.
    std::this_thread::sleep_until(at);
    if (at >= end) return Status::Ok();
    between(Clock::Real().Now());
    COURIER_RETURN_IF_ERROR(next->KillAndRestart(rng, min, max));
  }
}

}  // namespace courier::test
