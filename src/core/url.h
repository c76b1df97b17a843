// Endpoint URLs: scheme://[user[:password]@]hosts[/path][?key=value&...].
// `hosts` is kept whole ("h1:9092,h2:9092"); path and query values are percent-decoded.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "courier/status.h"

namespace courier {

struct Url {
  std::string scheme;  // lower-case, without "://"
  std::string user;
  std::string password;
  std::string hosts;
  std::string path;  // without the leading '/'
  std::vector<std::pair<std::string, std::string>> query;
};

Result<Url> ParseUrl(std::string_view text);

// The text with any password and secret-looking query values replaced by "***": safe to log.
std::string RedactUrl(std::string_view text);

std::string PercentDecode(std::string_view text);

}  // namespace courier
