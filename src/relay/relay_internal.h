// The relay built from a Source and a Sink already made (Relay::Create makes them from URLs).
// For embedding courier with a custom sink, and for testing the pipeline's own logic.
#pragma once

#include <memory>

#include "courier/relay.h"
#include "sinks/sink.h"
#include "sources/source.h"

namespace courier {

std::unique_ptr<Relay> MakeRelay(const RelayOptions& options, std::unique_ptr<Source> source,
                                 std::unique_ptr<Sink> sink);

}  // namespace courier
