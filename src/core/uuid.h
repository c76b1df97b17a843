// UUIDs for event ids: version 7 (time-ordered, RFC 9562) so ids sort by creation time.
//
// Thread-safety: NewUuidV7 may be called from any thread (per-thread random state).
#pragma once

#include <string>
#include <string_view>

namespace courier {

std::string NewUuidV7();
// True for the canonical 8-4-4-4-12 hex form, either case.
bool IsUuid(std::string_view text);

}  // namespace courier
