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
#include <type_traits>
#include <vector>

namespace courier::log {

enum class Level { kDebug = 0, kInfo, kWarn, kError };

// A value is text, a number or a boolean: JSON logs write numbers and booleans as such (logfmt
// has no types), so log processors can compare and sum them. Pass counts, ids and durations as
// numbers, not as their std::to_string.
struct Field {
  enum class Kind { kText, kNumber, kBool };
  Field(std::string_view k, std::string v) : key(k), value(std::move(v)) {}
  Field(std::string_view k, const char* v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v ? "true" : "false"), kind(Kind::kBool) {}
  template <typename T>
  requires std::is_integral_v<T> &&
      (!std::is_same_v<T, bool>)&&(!std::is_same_v<T, char>)Field(std::string_view k, T v)
      : key(k), value(std::to_string(v)), kind(Kind::kNumber) {}
  Field(std::string_view k, double v);  // finite: shortest text that reads back; else text

  std::string_view key;
  std::string value;  // the text logfmt writes
  Kind kind = Kind::kText;
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
