#include "core/url.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "core/encoding.h"

namespace courier {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IsSchemeChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '.' || c == '-';
}

// "h1:9092,h2", "[::1]:5432", "" (file:///...): what an authority without a user looks like.
bool LooksLikeHostList(std::string_view text) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(start, comma - start);
    std::string_view port;
    if (!item.empty() && item.front() == '[') {
      const size_t close = item.find(']');
      if (close == std::string_view::npos) return false;
      port = item.substr(close + 1);
      if (!port.empty() && port.front() != ':') return false;
      if (!port.empty()) port.remove_prefix(1);
    } else {
      const size_t colon = item.find(':');
      if (colon != std::string_view::npos) port = item.substr(colon + 1);
      for (char c : item.substr(0, colon)) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
          return false;
        }
      }
    }
    for (char c : port) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    }
    start = comma + 1;
  }
  return true;
}

// The end of the host list of a URL whose authority starts at `start`, as a standard parser
// sees it: the first '/', '?' or '#'.
size_t StandardAuthorityEnd(std::string_view text, size_t start) {
  const size_t end = text.find_first_of("/?#", start);
  return end == std::string_view::npos ? text.size() : end;
}

// The '@' that ends the user part, or npos. The LAST '@' of the URL, so that a password holding
// an unencoded '@', '/', '?' or '#' is taken whole (libpq and others would split it and echo
// the pieces); except an '@' inside a query value after a well-formed host list
// ("kafka://h:9092/t?sasl.username=me@corp"), which is data.
size_t UserinfoEnd(std::string_view text, size_t start) {
  const size_t at = text.rfind('@');
  if (at == std::string_view::npos || at < start) return std::string_view::npos;
  const size_t std_end = StandardAuthorityEnd(text, start);
  if (at < std_end) return at;
  const std::string_view authority = text.substr(start, std_end - start);
  if (authority.find('@') == std::string_view::npos && LooksLikeHostList(authority)) {
    const size_t q = text.find('?', std_end);
    if (q < at && text.find('=', q) < at) return std::string_view::npos;
  }
  return at;
}

// "name=" (a query parameter's start) at `pos`.
bool IsParamStart(std::string_view text, size_t pos) {
  size_t i = pos;
  while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '.' ||
                             text[i] == '_' || text[i] == '-' || text[i] == '%')) {
    ++i;
  }
  return i > pos && i < text.size() && text[i] == '=';
}

using Spans = std::vector<std::pair<size_t, size_t>>;

void QuerySpans(std::string_view text, size_t pos, Spans* spans) {
  while (pos < text.size()) {
    size_t segment_end = text.find('&', pos);
    if (segment_end == std::string_view::npos) segment_end = text.size();
    const size_t eq = text.find('=', pos);
    if (eq == std::string_view::npos || eq > segment_end ||
        !IsSecretKey(PercentDecode(text.substr(pos, eq - pos)))) {
      pos = segment_end + 1;
      continue;
    }
    // A secret value runs to the next "&name=": an unencoded '&' inside it stays hidden.
    size_t value_end = eq + 1;
    while (true) {
      const size_t amp = text.find('&', value_end);
      if (amp == std::string_view::npos) {
        value_end = text.size();
        break;
      }
      value_end = amp;
      if (IsParamStart(text, amp + 1)) break;
      ++value_end;
    }
    if (value_end > eq + 1) spans->emplace_back(eq + 1, value_end - eq - 1);
    pos = value_end + 1;
  }
}

// libpq's "key=value key='quoted value'" connection strings.
void ConninfoSpans(std::string_view text, Spans* spans) {
  auto space = [&](size_t i) { return std::isspace(static_cast<unsigned char>(text[i])) != 0; };
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && space(i)) ++i;
    const size_t key_start = i;
    while (i < text.size() && !space(i) && text[i] != '=') ++i;
    const std::string_view key = text.substr(key_start, i - key_start);
    while (i < text.size() && space(i)) ++i;
    if (i >= text.size() || text[i] != '=') {
      if (i == key_start) ++i;
      continue;
    }
    ++i;
    while (i < text.size() && space(i)) ++i;
    size_t value_start = i;
    size_t value_end;
    if (i < text.size() && text[i] == '\'') {
      value_start = ++i;
      while (i < text.size() && text[i] != '\'') i += text[i] == '\\' ? 2 : 1;
      value_end = std::min(i, text.size());
      ++i;
    } else {
      while (i < text.size() && !space(i)) ++i;
      value_end = i;
    }
    if (IsSecretKey(key) && value_end > value_start) {
      spans->emplace_back(value_start, value_end - value_start);
    }
  }
}

bool HasBadPercentEscape(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') continue;
    if (i + 2 >= text.size()) return true;
    if (HexValue(text[i + 1]) < 0 || HexValue(text[i + 2]) < 0) return true;
    i += 2;
  }
  return false;
}

Status BadUserinfo(std::string_view text) {
  return InvalidArgumentError(
      "the user or password in '" + RedactUrl(text) +
      "' holds a character that must be percent-encoded: write '@' as %40, '/' as %2F, '?' as "
      "%3F, '#' as %23, '%' as %25 (and ':' in a user name as %3A); the password s@fe/pw "
      "is written user:s%40fe%2Fpw@host");
}

}  // namespace

bool IsSecretKey(std::string_view name) {
  const std::string lower = Lower(name);
  for (std::string_view word :
       {"password", "passwd", "pwd", "secret", "token", "credential", "key.pem",
        "oauthbearer.config", "jaas.config", "apikey", "api_key", "api-key"}) {
    if (lower.find(word) != std::string::npos) return true;
  }
  return false;
}

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

namespace {

// Each host of the list may end in ":PORT", a whole number from 1 to 65535: a negative or
// huge port is refused here instead of making every connection attempt fail later.
// ("[v6]:PORT" keeps the address's own colons inside the brackets.)
Status CheckPorts(std::string_view text, std::string_view hosts) {
  while (!hosts.empty()) {
    const size_t comma = hosts.find(',');
    const std::string_view host = hosts.substr(0, comma);
    hosts = comma == std::string_view::npos ? std::string_view() : hosts.substr(comma + 1);
    const size_t bracket = host.rfind(']');
    const size_t colon = host.rfind(':');
    if (colon == std::string_view::npos || (bracket != std::string_view::npos && colon < bracket)) {
      continue;
    }
    const std::string_view port = host.substr(colon + 1);
    const std::optional<int64_t> n = ParseInt64(port);
    if (!n || *n < 1 || *n > 65535) {
      return InvalidArgumentError("'" + RedactUrl(text) + "' has a bad port '" + std::string(port) +
                                  "'; a port is a number from 1 to 65535");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<Url> ParseUrl(std::string_view text) {
  const size_t sep = text.find("://");
  if (sep == std::string_view::npos || sep == 0) {
    return InvalidArgumentError("'" + RedactUrl(text) +
                                "' is not a URL; expected scheme://host/..., e.g. "
                                "kafka://127.0.0.1:9092/orders");
  }
  Url url;
  url.scheme = Lower(text.substr(0, sep));
  const size_t start = sep + 3;
  size_t at = UserinfoEnd(text, start);
  if (at != std::string_view::npos) {
    const std::string_view userinfo = text.substr(start, at - start);
    if (userinfo.find_first_of("/?#") != std::string_view::npos) {
      const size_t std_end = StandardAuthorityEnd(text, start);
      const std::string_view authority = text.substr(start, std_end - start);
      // A well-formed host list followed by an '@' in the path ("http://h:80/u/a@b") has no
      // user; anything else is a user or password that was not percent-encoded.
      if (authority.find('@') != std::string_view::npos || !LooksLikeHostList(authority)) {
        return BadUserinfo(text);
      }
      at = std::string_view::npos;
    } else if (userinfo.find('@') != std::string_view::npos || HasBadPercentEscape(userinfo)) {
      return BadUserinfo(text);
    }
  }
  if (at != std::string_view::npos) {
    const std::string_view userinfo = text.substr(start, at - start);
    if (size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
      url.user = PercentDecode(userinfo.substr(0, colon));
      url.password = PercentDecode(userinfo.substr(colon + 1));
    } else {
      url.user = PercentDecode(userinfo);
    }
  }
  std::string_view rest = text.substr(at == std::string_view::npos ? start : at + 1);
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
  url.hosts = std::string(authority);
  COURIER_RETURN_IF_ERROR(CheckPorts(text, authority));
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      // The pair is not quoted: it may be the tail of a secret holding an unencoded '&'.
      return InvalidArgumentError("a query parameter of '" + RedactUrl(text) +
                                  "' has no value; write key=value, with '&' inside a value "
                                  "percent-encoded as %26");
    }
    url.query.emplace_back(PercentDecode(pair.substr(0, eq)), PercentDecode(pair.substr(eq + 1)));
  }
  return url;
}

std::vector<std::pair<size_t, size_t>> SecretSpans(std::string_view text) {
  Spans spans;
  const size_t sep = text.find("://");
  if (sep == std::string_view::npos) {
    ConninfoSpans(text, &spans);
    return spans;
  }
  size_t scheme_start = sep;
  while (scheme_start > 0 && IsSchemeChar(text[scheme_start - 1])) --scheme_start;
  const std::string scheme = Lower(text.substr(scheme_start, sep - scheme_start));
  const size_t start = sep + 3;
  size_t query_from = start;
  if (const size_t at = UserinfoEnd(text, start); at != std::string_view::npos) {
    const size_t colon = text.substr(start, at - start).find(':');
    if (colon != std::string_view::npos) {
      if (at > start + colon + 1) spans.emplace_back(start + colon + 1, at - start - colon - 1);
    } else if ((scheme == "nats" || scheme == "nats+tls") && at > start) {
      spans.emplace_back(start, at - start);  // nats://TOKEN@host
    }
    query_from = at + 1;
  }
  if (const size_t q = text.find('?', query_from); q != std::string_view::npos) {
    QuerySpans(text, q + 1, &spans);
  }
  return spans;
}

std::string RedactUrl(std::string_view text) {
  std::string out(text);
  const Spans spans = SecretSpans(text);
  for (auto it = spans.rbegin(); it != spans.rend(); ++it)
    out.replace(it->first, it->second, "***");
  return out;
}

std::string MaskUrlSecrets(std::string_view text) {
  std::string out(text);
  for (const auto& [pos, len] : SecretSpans(text)) out.replace(pos, len, len, 'x');
  return out;
}

std::vector<std::string> UrlSecrets(std::string_view text) {
  std::vector<std::string> out;
  for (const auto& [pos, len] : SecretSpans(text)) {
    std::string raw(text.substr(pos, len));
    std::string decoded = PercentDecode(raw);
    if (decoded != raw) out.push_back(std::move(decoded));
    out.push_back(std::move(raw));
  }
  return out;
}

std::string ScrubSecrets(std::string text, const std::vector<std::string>& secrets) {
  std::vector<const std::string*> longest_first;
  for (const std::string& s : secrets) {
    if (s.size() >= kMinScrubbedSecret) longest_first.push_back(&s);
  }
  std::sort(longest_first.begin(), longest_first.end(),
            [](const std::string* a, const std::string* b) { return a->size() > b->size(); });
  for (const std::string* secret : longest_first) {
    for (size_t pos = 0; (pos = text.find(*secret, pos)) != std::string::npos; pos += 3) {
      text.replace(pos, secret->size(), "***");
    }
  }
  return text;
}

}  // namespace courier
