// Endpoint URLs: scheme://[user[:password]@]hosts[/path][?key=value&...].
// `hosts` is kept whole ("h1:9092,h2:9092"); path and query values are percent-decoded.
//
// Secrets: a URL's password, a NATS token (the user of a nats:// URL without a password) and
// the value of any query parameter (or libpq "key=value" setting) whose name looks secret
// (IsSecretKey) are found by one function, SecretSpans; RedactUrl, MaskUrlSecrets and
// UrlSecrets are built on it, so every place that shows, hides or scrubs them agrees.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstddef>
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

// kInvalidArgument (with the URL redacted and how to fix it) when the text is no URL, when a
// user or password holds a character that must be percent-encoded ('@', '/', '?', '#', or a
// '%' not followed by two hex digits), or when a query parameter has no value.
Result<Url> ParseUrl(std::string_view text);

// True for names of settings that carry secrets: anything with password, passwd, pwd, secret,
// token, credential, key.pem, oauthbearer.config, jaas.config or api key in it (any case).
bool IsSecretKey(std::string_view name);

// Where the secrets are in `text` (a URL, possibly after a "--flag=" prefix, or a libpq
// "key=value ..." string), as [offset, length) ranges in order. A user or password may hold
// unencoded reserved characters: the user part runs to the LAST '@' of the URL (unless that '@'
// is plainly inside a query value after a well-formed host list), so a password that was not
// percent-encoded is still found whole.
std::vector<std::pair<size_t, size_t>> SecretSpans(std::string_view text);

// The text with each secret replaced by "***": safe to log.
std::string RedactUrl(std::string_view text);

// The text with each secret's characters replaced by 'x', same length (for argv in place).
std::string MaskUrlSecrets(std::string_view text);

// The secrets of `text` as they are written and percent-decoded, for scrubbing them out of
// error messages that libraries build from pieces of the URL.
std::vector<std::string> UrlSecrets(std::string_view text);

// `text` with every occurrence of each secret (longest first) replaced by "***". Secrets
// shorter than kMinScrubbedSecret characters are left alone: they would match everywhere.
inline constexpr size_t kMinScrubbedSecret = 4;
std::string ScrubSecrets(std::string text, const std::vector<std::string>& secrets);

std::string PercentDecode(std::string_view text);

}  // namespace courier
