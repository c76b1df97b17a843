#include "core/url.h"

#include <algorithm>
#include <cctype>

namespace courier {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsSecretKey(std::string_view key) {
  std::string lower(key);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (std::string_view word : {"password", "secret", "token", "passwd", "credential"}) {
    if (lower.find(word) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

std::string PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      const int hi = HexValue(text[i + 1]);
      const int lo = HexValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

Result<Url> ParseUrl(std::string_view text) {
  const size_t sep = text.find("://");
  if (sep == std::string_view::npos || sep == 0) {
    return InvalidArgumentError("'" + RedactUrl(text) +
                                "' is not a URL; expected scheme://host/..., e.g. "
                                "kafka://127.0.0.1:9092/orders");
  }
  Url url;
  url.scheme = std::string(text.substr(0, sep));
  std::transform(url.scheme.begin(), url.scheme.end(), url.scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view rest = text.substr(sep + 3);
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  std::string_view authority = rest;
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    url.path = PercentDecode(rest.substr(slash + 1));
  }
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    if (size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
      url.user = PercentDecode(userinfo.substr(0, colon));
      url.password = PercentDecode(userinfo.substr(colon + 1));
    } else {
      url.user = PercentDecode(userinfo);
    }
  }
  url.hosts = std::string(authority);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgumentError("query parameter '" + std::string(pair) + "' in '" +
                                  RedactUrl(text) + "' has no value; write key=value");
    }
    url.query.emplace_back(PercentDecode(pair.substr(0, eq)), PercentDecode(pair.substr(eq + 1)));
  }
  return url;
}

std::string RedactUrl(std::string_view text) {
  std::string out(text);
  const size_t sep = out.find("://");
  if (sep != std::string::npos) {
    const size_t start = sep + 3;
    size_t end = out.find_first_of("/?", start);
    if (end == std::string::npos) end = out.size();
    const size_t at = out.rfind('@', end);
    if (at != std::string::npos && at >= start) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // key=value pairs, both in URL queries and libpq "key=value" connection strings.
  size_t pos = 0;
  while ((pos = out.find('=', pos)) != std::string::npos) {
    size_t key_start = out.find_last_of("?& ", pos);
    key_start = key_start == std::string::npos ? 0 : key_start + 1;
    const std::string key = out.substr(key_start, pos - key_start);
    size_t value_end = out.find_first_of("& ", pos + 1);
    if (value_end == std::string::npos) value_end = out.size();
    if (IsSecretKey(key)) {
      out.replace(pos + 1, value_end - pos - 1, "***");
      value_end = pos + 4;
    }
    pos = value_end;
  }
  return out;
}

}  // namespace courier
