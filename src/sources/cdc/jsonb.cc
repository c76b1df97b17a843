// jsonb's text form (jsonb.h), following PostgreSQL 15's json lexer (src/common/jsonapi.c),
// jsonb's object normalization (jsonb_util.c) and its output (jsonb.c, escape_json in json.c).
#include "sources/cdc/jsonb.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/encoding.h"

namespace courier::cdc {
namespace {

// numeric's limits (numeric.c): at most 16383 digits after the point, and a weight of at most
// 32767 base-10000 digits before it.
constexpr size_t kMaxDisplayScale = 16383;
constexpr size_t kMaxIntegerDigits = 4 * 32768;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

void AppendUtf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// A recursive-descent reader of one JSON value, writing its jsonb text. Depth is bounded by
// kMaxJsonDepth, so the recursion is too.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool Document(std::string* out) {
    SkipSpace();
    if (!Value(out, 0)) return false;
    SkipSpace();
    return pos_ == in_.size();
  }

 private:
  void SkipSpace() {
    while (pos_ < in_.size() &&
           (in_[pos_] == ' ' || in_[pos_] == '\t' || in_[pos_] == '\n' || in_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Eat(char c) {
    SkipSpace();
    if (pos_ < in_.size() && in_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool Value(std::string* out, size_t depth) {
    SkipSpace();
    if (pos_ >= in_.size()) return false;
    const char c = in_[pos_];
    if (c == '{' || c == '[') {
      if (depth >= kMaxJsonDepth) return false;
      return c == '{' ? Object(out, depth + 1) : Array(out, depth + 1);
    }
    if (c == '"') {
      std::string s;
      if (!String(&s)) return false;
      AppendJsonString(out, s);
      return true;
    }
    if (c == '-' || IsDigit(c)) return Number(out);
    for (std::string_view word : {"true", "false", "null"}) {
      if (in_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        // A literal runs into no further letters or digits ("truex" is one bad token).
        if (pos_ < in_.size() &&
            (std::isalnum(static_cast<unsigned char>(in_[pos_])) || in_[pos_] == '_' ||
             static_cast<unsigned char>(in_[pos_]) >= 0x80)) {
          return false;
        }
        out->append(word);
        return true;
      }
    }
    return false;
  }

  bool Array(std::string* out, size_t depth) {
    ++pos_;
    out->push_back('[');
    if (Eat(']')) {
      out->push_back(']');
      return true;
    }
    for (bool first = true;; first = false) {
      if (!first) out->append(", ");
      if (!Value(out, depth)) return false;
      if (Eat(']')) break;
      if (!Eat(',')) return false;
    }
    out->push_back(']');
    return true;
  }

  bool Object(std::string* out, size_t depth) {
    ++pos_;
    std::vector<std::pair<std::string, std::string>> pairs;  // key (raw), value (jsonb text)
    if (!Eat('}')) {
      while (true) {
        SkipSpace();
        std::string key;
        if (pos_ >= in_.size() || in_[pos_] != '"' || !String(&key)) return false;
        if (!Eat(':')) return false;
        std::string value;
        if (!Value(&value, depth)) return false;
        pairs.emplace_back(std::move(key), std::move(value));
        if (Eat('}')) break;
        if (!Eat(',')) return false;
      }
    }
    // jsonb's order: shorter keys first, then bytewise; of equal keys the last one is kept
    // (a stable sort keeps input order among equals, so keep the last of each run).
    std::stable_sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) {
      if (a.first.size() != b.first.size()) return a.first.size() < b.first.size();
      return a.first < b.first;
    });
    out->push_back('{');
    bool first = true;
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (i + 1 < pairs.size() && pairs[i + 1].first == pairs[i].first) continue;
      if (!first) out->append(", ");
      first = false;
      AppendJsonString(out, pairs[i].first);
      out->append(": ");
      out->append(pairs[i].second);
    }
    out->push_back('}');
    return true;
  }

  bool Hex4(uint32_t* cp) {
    if (pos_ + 4 > in_.size()) return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = in_[pos_++];
      v <<= 4;
      if (IsDigit(h)) {
        v |= h - '0';
      } else if (h >= 'a' && h <= 'f') {
        v |= h - 'a' + 10;
      } else if (h >= 'A' && h <= 'F') {
        v |= h - 'A' + 10;
      } else {
        return false;
      }
    }
    *cp = v;
    return true;
  }

  // A string token (at its opening quote), unescaped into `s`.
  bool String(std::string* s) {
    ++pos_;
    while (pos_ < in_.size()) {
      const char c = in_[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (static_cast<unsigned char>(c) >= 0x80) {
        // Not UTF-8 (a SQL_ASCII database): U+FFFD already here, so that keys sort as written.
        const size_t n = Utf8SequenceLength(in_, pos_);
        s->append(n == 0 ? std::string_view("\xef\xbf\xbd") : in_.substr(pos_, n));
        pos_ += n == 0 ? 1 : n;
        continue;
      }
      if (c != '\\') {
        s->push_back(c);
        ++pos_;
        continue;
      }
      if (++pos_ >= in_.size()) return false;
      const char e = in_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          s->push_back(e);
          break;
        case 'b':
          s->push_back('\b');
          break;
        case 'f':
          s->push_back('\f');
          break;
        case 'n':
          s->push_back('\n');
          break;
        case 'r':
          s->push_back('\r');
          break;
        case 't':
          s->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return false;  // a low surrogate first
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t low = 0;
            if (in_.substr(pos_, 2) != "\\u") return false;
            pos_ += 2;
            if (!Hex4(&low) || low < 0xdc00 || low > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          if (cp == 0) return false;  // jsonb cannot hold \u0000
          AppendUtf8(s, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  bool Number(std::string* out) {
    // JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    const size_t start = pos_;
    if (in_[pos_] == '-') ++pos_;
    if (pos_ >= in_.size() || !IsDigit(in_[pos_])) return false;
    if (in_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < in_.size() && IsDigit(in_[pos_])) ++pos_;
    }
    if (pos_ < in_.size() && in_[pos_] == '.') {
      ++pos_;
      if (pos_ >= in_.size() || !IsDigit(in_[pos_])) return false;
      while (pos_ < in_.size() && IsDigit(in_[pos_])) ++pos_;
    }
    if (pos_ < in_.size() && (in_[pos_] == 'e' || in_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < in_.size() && (in_[pos_] == '+' || in_[pos_] == '-')) ++pos_;
      if (pos_ >= in_.size() || !IsDigit(in_[pos_])) return false;
      while (pos_ < in_.size() && IsDigit(in_[pos_])) ++pos_;
    }
    // The token ends at a delimiter ("1x" and "01" are single bad tokens to PostgreSQL).
    if (pos_ < in_.size() &&
        (std::isalnum(static_cast<unsigned char>(in_[pos_])) || in_[pos_] == '_' ||
         in_[pos_] == '.' || static_cast<unsigned char>(in_[pos_]) >= 0x80)) {
      return false;
    }
    auto n = NumericText(in_.substr(start, pos_ - start));
    if (!n) return false;
    out->append(*n);
    return true;
  }

  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

std::string JsonString(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  AppendJsonString(&out, text);
  return out;
}

std::optional<std::string> NumericText(std::string_view text) {
  // numeric_in: leading/trailing spaces, a sign, digits with at most one point, an exponent.
  size_t i = 0;
  while (i < text.size() && text[i] == ' ') ++i;
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  bool negative = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) negative = text[i++] == '-';
  std::string digits;  // all significant digits, integer part then fraction
  int64_t frac = 0;    // digits after the point
  bool point = false, any = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (IsDigit(c)) {
      any = true;
      if (point) ++frac;
      digits.push_back(c);
    } else if (c == '.' && !point) {
      point = true;
    } else {
      break;
    }
  }
  if (!any) return std::nullopt;
  int64_t exponent = 0;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool exp_negative = false;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) exp_negative = text[i++] == '-';
    if (i >= text.size() || !IsDigit(text[i])) return std::nullopt;
    for (; i < text.size() && IsDigit(text[i]); ++i) {
      exponent = exponent * 10 + (text[i] - '0');
      if (exponent > 1'000'000'000) return std::nullopt;  // numeric_in: overflow
    }
    if (exp_negative) exponent = -exponent;
  }
  if (i != text.size()) return std::nullopt;
  // value = digits * 10^(exponent - frac); the display scale is the input's fraction digits
  // less the exponent, never negative.
  const int64_t scale = std::max<int64_t>(0, frac - exponent);
  if (scale > static_cast<int64_t>(kMaxDisplayScale)) return std::nullopt;
  const int64_t shift = exponent - frac;  // digits * 10^shift
  const size_t first = std::min(digits.find_first_not_of('0'), digits.size());
  std::string significant = digits.substr(first);
  const bool zero = significant.empty();
  std::string integer, fraction;
  if (!zero) {
    if (shift >= 0) {
      if (significant.size() + shift > kMaxIntegerDigits) return std::nullopt;
      integer = significant + std::string(shift, '0');
    } else {
      const size_t f = static_cast<size_t>(-shift);
      if (f >= significant.size()) {
        fraction = std::string(f - significant.size(), '0') + significant;
      } else {
        integer = significant.substr(0, significant.size() - f);
        fraction = significant.substr(significant.size() - f);
      }
    }
  }
  // The fraction is written to exactly `scale` digits: its value has at most that many.
  fraction.resize(static_cast<size_t>(scale), '0');
  std::string out;
  if (negative && !zero) out.push_back('-');
  out += integer.empty() ? "0" : integer;
  if (scale > 0) out += "." + fraction;
  return out;
}

std::optional<std::string> JsonbText(std::string_view json) {
  std::string out;
  if (!Reader(json).Document(&out)) return std::nullopt;
  return out;
}

}  // namespace courier::cdc
