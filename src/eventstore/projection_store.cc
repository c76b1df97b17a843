// A projection's event-store source: placeholder until the event store's reader is in.
#include "eventstore/projection_source.h"

namespace courier {

Result<std::unique_ptr<ProjectionSource>> MakeEventStoreSource(const ProjectionOptions&) {
  return FailedPreconditionError("the event store source is not available yet");
}

}  // namespace courier
