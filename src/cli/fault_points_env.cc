// The one place that reads COURIER_FAILPOINTS: the crash tests name the points
// (core/fault_points.h) where the courier binary kills itself.
#include <cstdlib>

#include "cli/commands.h"

namespace courier::cli {

FaultPoints* FaultPointsFromEnvironment() {
  static const std::unique_ptr<FaultPoints> points = [] {
    const char* env = std::getenv("COURIER_FAILPOINTS");
    return KillAtFaultPoints(env != nullptr ? env : "");
  }();
  return points.get();
}

}  // namespace courier::cli
