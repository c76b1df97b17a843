// Config files on arbitrary text: ${VAR} interpolation, then TOML into flag arguments with
// every key the relay takes, then the values through the parsers the relay applies to them
// (durations, source and sink URLs).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "cli/config.h"
#include "core/url.h"
#include "sources/source.h"

namespace {

// The relay's long flags (src/cli/main.cc), so that any of them may appear as a key.
const std::set<std::string>& RelayKeys() {
  static const std::set<std::string> keys = {
      "backoff-initial",
      "backoff-max",
      "batch-size",
      "cleanup-interval",
      "dead-letter-policy",
      "dead-letter-table",
      "delivery-timeout",
      "lease",
      "metrics-host",
      "metrics-port",
      "mode",
      "once",
      "poll-interval",
      "publication",
      "retain",
      "retention",
      "shard",
      "shutdown-timeout",
      "sink",
      "slot",
      "source",
      "table",
      "log-level",
      "log-format",
  };
  return keys;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("COURIER_FUZZ_PASSWORD", "s3cr\"et'}${x}", 1);
  setenv("COURIER_FUZZ_EMPTY", "", 1);
  setenv("COURIER_FUZZ_URL", "postgres://app:pw@127.0.0.1:5432/app", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace courier;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto interpolated = InterpolateEnv(text, "fuzz.toml");
  if (!interpolated.ok()) return 0;
  auto args = ConfigToArgs(*interpolated, "fuzz.toml", [](const std::string& key) {
    if (RelayKeys().count(key) == 0) return ConfigKey{};
    if (key == "once" || key == "retain") return ConfigKey{ConfigKey::Kind::kFlag, ""};
    if (key == "batch-size" || key == "metrics-port") {
      return ConfigKey{ConfigKey::Kind::kWholeNumber, "N"};
    }
    return ConfigKey{ConfigKey::Kind::kValue, ""};
  });
  if (!args.ok()) return 0;
  for (const ConfigArg& a : *args) {
    const std::string& arg = a.arg;
    if (arg.rfind("--" + a.key, 0) != 0) std::abort();
    if (a.line < 1 || static_cast<size_t>(a.line) > size + 1) std::abort();  // a line of the text
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) continue;
    const std::string value = arg.substr(eq + 1);
    if (a.key == "source") {
      (void)ParseSourceUrl(value);
    } else if (a.key == "sink") {
      (void)ParseUrl(value);
    } else {
      (void)ParseDuration(value);
    }
  }
  return 0;
}
