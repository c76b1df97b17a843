#include "core/log.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>

#include <nlohmann/json.hpp>

#include "core/url.h"

namespace courier::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};
std::atomic<bool> g_json{false};
std::mutex g_write_mutex;  // serialises whole lines on stderr
std::mutex g_secrets_mutex;
std::vector<std::string> g_secrets;  // guarded by g_secrets_mutex

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

std::string Timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms.count()));
  return buf;
}

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20)
      return true;
  }
  return false;
}

void AppendLogfmtValue(std::string& out, std::string_view v) {
  if (!NeedsQuotes(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

}  // namespace

Field::Field(std::string_view k, double v) : key(k) {
  if (!std::isfinite(v)) {
    value = std::isnan(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity");  // JSON has no such number
    return;
  }
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  value.assign(buf, ec == std::errc() ? end : buf);
  kind = Kind::kNumber;
}

void SetLevel(Level level) { g_level = level; }
void SetJson(bool json) { g_json = json; }
bool IsJson() { return g_json.load(); }

void AddSecrets(const std::vector<std::string>& secrets) {
  std::lock_guard<std::mutex> lock(g_secrets_mutex);
  for (const std::string& s : secrets) {
    if (std::find(g_secrets.begin(), g_secrets.end(), s) == g_secrets.end()) g_secrets.push_back(s);
  }
}

std::string Scrub(std::string text) {
  std::lock_guard<std::mutex> lock(g_secrets_mutex);
  if (g_secrets.empty()) return text;
  return ScrubSecrets(std::move(text), g_secrets);
}

bool ParseLevel(std::string_view text, Level* level) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (text == LevelName(l)) {
      *level = l;
      return true;
    }
  }
  return false;
}

void Write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  if (level < g_level.load()) return;
  std::string line;
  if (g_json.load()) {
    nlohmann::json j;
    j["ts"] = Timestamp();
    j["level"] = LevelName(level);
    j["msg"] = Scrub(std::string(message));
    for (const Field& f : fields) {
      nlohmann::json& v = j[std::string(f.key)];
      if (f.kind == Field::Kind::kBool) {
        v = f.value == "true";
      } else if (f.kind == Field::Kind::kNumber) {
        v = nlohmann::json::parse(f.value, nullptr, /*allow_exceptions=*/false);
        if (v.is_discarded()) v = f.value;
      } else {
        v = Scrub(f.value);
      }
    }
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = Timestamp();
    line.push_back(' ');
    line.append(LevelName(level));
    line.push_back(' ');
    line.append(Scrub(std::string(message)));
    for (const Field& f : fields) {
      line.push_back(' ');
      line.append(f.key);
      line.push_back('=');
      AppendLogfmtValue(line, Scrub(f.value));
    }
  }
  line.push_back('\n');
  std::lock_guard<std::mutex> lock(g_write_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace courier::log
