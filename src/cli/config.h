// The config file: TOML, top-level keys named like the subcommand's long flags
// (`batch-size = 500` is `--batch-size 500`); flags on the command line win. `${NAME}` is
// replaced by the environment variable NAME (for secrets); an unset variable is an error.
//
// Thread-safety: pure functions.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "courier/status.h"

namespace courier {

// Replaces ${NAME} with getenv(NAME); `$${` is a literal "${". Errors name the line.
Result<std::string> InterpolateEnv(const std::string& text, const std::string& file_name);

// Parses the TOML text into "--key=value" arguments. `is_known(key)` says whether the
// subcommand has that flag; unknown keys are errors naming the line. Arrays give one
// argument per element.
// `lines`, when given, receives each key's line (for errors found later, in the values).
Result<std::vector<std::string>> ConfigToArgs(
    const std::string& text, const std::string& file_name,
    const std::function<bool(const std::string&)>& is_known,
    std::map<std::string, int>* lines = nullptr);

// Parses durations: "250ms", "5s", "2m", "1h", "7d", or a bare number of milliseconds.
Result<std::chrono::milliseconds> ParseDuration(const std::string& text);

}  // namespace courier
