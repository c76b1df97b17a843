// Named fault points: places in the relay and in `courier consume` where a test makes the
// process fail on purpose (a crash between a commit and an ack, between a publish and its
// checkpoint), passed in through the options as the clock is, and absent (null) in normal
// runs. The library never reads the environment for them; the CLI turns COURIER_FAILPOINTS
// into a hook that kills the process (KillAtFaultPoints), and unit tests pass their own.
//
// The points, by name:
//   consume-after-commit   consume: the inbox transaction committed, the broker not acked yet
//   relay-after-publish    relay: the sink acked a batch, the checkpoint not written yet
//   relay-after-checkpoint relay: the batch checkpointed (queued, with pipelined checkpoints)
//   relay-checkpoint-coalesced relay: a checkpoint covering two batches or more is about to
//                          commit (pipelined checkpoints, sources/pg_checkpointer.h)
//   project-before-commit  project: a batch's effects and checkpoint written, not committed
//   project-after-commit   project: the batch committed, the next one not read yet
//
// Thread-safety: Reached() may be called from any thread.
#pragma once

#include <memory>
#include <string_view>

namespace courier {

class FaultPoints {
 public:
  virtual ~FaultPoints() = default;
  // The named point was reached; an implementation may kill the process, record it, or block.
  virtual void Reached(std::string_view name) = 0;
};

// Calls `points` at `name` when there is a hook; nothing otherwise.
inline void ReachFaultPoint(FaultPoints* points, std::string_view name) {
  if (points != nullptr) points->Reached(name);
}

// A hook that SIGKILLs the process at each point named in `names` ("a,b"); null when `names`
// is empty.
std::unique_ptr<FaultPoints> KillAtFaultPoints(std::string_view names);

}  // namespace courier
