// The config file: TOML, top-level keys named like the subcommand's long flags
// (`batch-size = 500` is `--batch-size 500`); flags on the command line win. `${NAME}` is
// replaced by the environment variable NAME (for secrets); an unset variable is an error.
//
// Thread-safety: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "courier/status.h"

namespace courier {

// Reads a config file whole: a regular file (or a symbolic link to one) of at most
// kMaxConfigBytes. A directory, FIFO, device (/dev/zero) or larger file is refused with one
// line, without waiting for a writer or reading more than that.
inline constexpr size_t kMaxConfigBytes = 1 << 20;
Result<std::string> ReadConfigFile(const std::string& path);

// Replaces ${NAME} with getenv(NAME); `$${` is a literal "${". Errors name the line. With
// `errors`, every error is appended there (an unset variable reads as empty, an unterminated
// `${` is kept) and the text is returned; without, the first error is.
Result<std::string> InterpolateEnv(const std::string& text, const std::string& file_name,
                                   std::vector<std::string>* errors = nullptr);

// One command-line argument from the file.
struct ConfigArg {
  std::string key;  // "batch-size"
  std::string arg;  // "--batch-size=500"; a flag set to true is "--retain"
  int line = 0;     // of the key, or of the array element
};

// What a key takes, as the subcommand's flag of that name does.
struct ConfigKey {
  enum class Kind {
    kUnknown,      // no such flag
    kFlag,         // a flag without a value: true or false
    kValue,        // a value (a string, or a number written as one)
    kWholeNumber,  // a value that is a whole number: a TOML float (4.0, 1e1) is refused
  };
  Kind kind = Kind::kUnknown;
  std::string type_name;  // the value's name in --help ("N", "DURATION"), for errors
};

// Parses the TOML text into "--key=value" arguments. `key_of(key)` says what the subcommand's
// flag of that name takes; unknown keys, and values of a TOML type the flag cannot take (a
// boolean for a value, a float for a whole number), are errors naming the line and the key.
// Arrays give one argument per element. Each error is "file:line: what is wrong". A TOML
// syntax error is returned (nothing else can be known then). Otherwise, with `errors`, every
// error is appended there and the good arguments are returned; without, the first error is.
Result<std::vector<ConfigArg>> ConfigToArgs(
    const std::string& text, const std::string& file_name,
    const std::function<ConfigKey(const std::string&)>& key_of,
    std::vector<std::string>* errors = nullptr);

// Parses durations: "250ms", "5s", "2m", "1h", "7d", or a bare number of milliseconds.
Result<std::chrono::milliseconds> ParseDuration(const std::string& text);

// The shortest text ParseDuration reads back as `d`, in the largest unit that divides it
// ("100ms", "5s", "7d"; "0" for zero): how the commands show the library's defaults.
inline std::string FormatDuration(std::chrono::milliseconds d) {
  if (d.count() == 0) return "0";
  constexpr std::pair<int64_t, const char*> kUnits[] = {
      {86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
  for (const auto& [ms, unit] : kUnits) {
    if (d.count() % ms == 0) return std::to_string(d.count() / ms) + unit;
  }
  return std::to_string(d.count()) + "ms";  // not reached: every count divides by 1
}

}  // namespace courier
