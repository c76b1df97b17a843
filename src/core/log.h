// Structured logs: one line per record on stderr, logfmt by default or JSON, never secrets:
// callers pass URLs through RedactUrl before logging them, and every record is also scrubbed
// of the secrets registered with AddSecrets (the passwords and tokens of the URLs in play), in
// case a library's error message repeats one.
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace courier::log {

enum class Level { kDebug = 0, kInfo, kWarn, kError };

struct Field {
  std::string_view key;
  std::string value;
};

void SetLevel(Level level);
void SetJson(bool json);
bool IsJson();
// Parses "debug|info|warn|error"; false if unknown.
bool ParseLevel(std::string_view text, Level* level);

// Adds secrets (as UrlSecrets lists them) to scrub from every record and from Scrub().
void AddSecrets(const std::vector<std::string>& secrets);
// The text with every registered secret replaced by "***": for what is printed without Write
// (the final error, HTTP answers).
std::string Scrub(std::string text);

void Write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kDebug, m, f);
}
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kInfo, m, f);
}
inline void Warn(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kWarn, m, f);
}
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kError, m, f);
}

}  // namespace courier::log
