// Where a stream source keeps its position: the point past every transaction whose events are
// all done, from which a restarted relay resumes. The CDC source keeps it in the outbox's CDC
// slot table (stores/slot_checkpoints.h); a Kafka transaction could keep it beside the messages
// it published (exactly-once), a test keeps it in memory. Polling sources need none: the
// outbox rows themselves are their position (deleted, or stamped published_at).
//
// Thread-safety: used by the source's one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "courier/status.h"

namespace courier {

class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;
  // The stored position; nullopt when none was stored yet.
  virtual Result<std::optional<uint64_t>> Load() = 0;
  // Stores `position`. Called inside the transaction the source has open to mark the rows
  // done, so that a store on the source's own connection commits with them or not at all.
  virtual Status Save(uint64_t position) = 0;
};

}  // namespace courier
