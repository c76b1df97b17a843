// RenderColumn (change.h): a column's text as pgoutput sends it, under the replication
// connection's settings (DateStyle=ISO, TimeZone=UTC, IntervalStyle=postgres, bytea_output=hex,
// extra_float_digits=3), into the JSON PostgreSQL 15's to_jsonb writes for the same value.
//
// to_jsonb (jsonb.c, datum_to_jsonb) sorts a type into a category: numbers go through
// numeric_in (so a float's exponent is spelled out and NaN/Infinity become strings), booleans,
// json/jsonb nested as jsonb, date/timestamp/timestamptz in XSD form (a 'T', the offset as
// +HH:MM), arrays element by element, and everything else as the output function's text in a
// JSON string. The categories here follow it by type OID; a type not known by OID (domains,
// enums, composites, extension types) is written as a string.
#include <cstdint>
#include <string>
#include <string_view>

#include "sources/cdc/change.h"
#include "sources/cdc/jsonb.h"

namespace courier::cdc {
namespace {

enum class Kind { kString, kBool, kNumber, kJson, kDate, kTimestamp, kTimestampTz };

// PostgreSQL's builtin type OIDs (pg_type.dat) that to_jsonb does not write as strings.
Kind ScalarKind(uint32_t oid) {
  switch (oid) {
    case 16:  // bool
      return Kind::kBool;
    case 20:    // int8
    case 21:    // int2
    case 23:    // int4
    case 700:   // float4
    case 701:   // float8
    case 1700:  // numeric
      return Kind::kNumber;
    case 114:   // json
    case 3802:  // jsonb
      return Kind::kJson;
    case 1082:
      return Kind::kDate;
    case 1114:
      return Kind::kTimestamp;
    case 1184:
      return Kind::kTimestampTz;
    default:
      return Kind::kString;
  }
}

// The element type of PostgreSQL's builtin array types, by the array's OID; nullopt when `oid`
// is not one.
std::optional<uint32_t> ArrayElement(uint32_t oid) {
  switch (oid) {
    case 1000:
      return 16;  // bool
    case 1001:
      return 17;  // bytea
    case 1002:
      return 18;  // char
    case 1003:
      return 19;  // name
    case 1005:
      return 21;  // int2
    case 1007:
      return 23;  // int4
    case 1008:
      return 24;  // regproc
    case 1009:
      return 25;  // text
    case 1010:
      return 27;  // tid
    case 1011:
      return 28;  // xid
    case 1012:
      return 29;  // cid
    case 1014:
      return 1042;  // bpchar
    case 1015:
      return 1043;  // varchar
    case 1016:
      return 20;  // int8
    case 1017:
      return 600;  // point
    case 1018:
      return 601;  // lseg
    case 1019:
      return 602;  // path
    case 1020:
      return 603;  // box (';' between elements)
    case 1021:
      return 700;  // float4
    case 1022:
      return 701;  // float8
    case 1027:
      return 604;  // polygon
    case 1028:
      return 26;  // oid
    case 1034:
      return 1033;  // aclitem
    case 1040:
      return 829;  // macaddr
    case 1041:
      return 869;  // inet
    case 651:
      return 650;  // cidr
    case 775:
      return 774;  // macaddr8
    case 791:
      return 790;  // money
    case 143:
      return 142;  // xml
    case 199:
      return 114;  // json
    case 3807:
      return 3802;  // jsonb
    case 1115:
      return 1114;  // timestamp
    case 1182:
      return 1082;  // date
    case 1183:
      return 1083;  // time
    case 1185:
      return 1184;  // timestamptz
    case 1187:
      return 1186;  // interval
    case 1231:
      return 1700;  // numeric
    case 1270:
      return 1266;  // timetz
    case 1561:
      return 1560;  // bit
    case 1563:
      return 1562;  // varbit
    case 2951:
      return 2950;  // uuid
    case 3221:
      return 3220;  // pg_lsn
    case 4073:
      return 4072;  // jsonpath
    case 3643:
      return 3614;  // tsvector
    case 3645:
      return 3615;  // tsquery
    case 629:
      return 628;  // line
    case 719:
      return 718;  // circle
    case 1263:
      return 2275;  // cstring
    case 2210:
      return 2205;  // regclass
    case 2211:
      return 2206;  // regtype
    case 3905:
      return 3904;  // int4range
    case 3907:
      return 3906;  // numrange
    case 3909:
      return 3908;  // tsrange
    case 3911:
      return 3910;  // tstzrange
    case 3913:
      return 3912;  // daterange
    case 3927:
      return 3926;  // int8range
    case 2949:
      return 2970;  // txid_snapshot
    case 5039:
      return 5038;  // pg_snapshot
    case 271:
      return 5069;  // xid8
    default:
      return std::nullopt;
  }
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// `n` (at least `min`) digits at text[*i], advancing past them.
bool Digits(std::string_view text, size_t* i, size_t min, size_t max = 1000) {
  size_t n = 0;
  while (*i < text.size() && IsDigit(text[*i]) && n < max) ++*i, ++n;
  return n >= min;
}
bool Char(std::string_view text, size_t* i, char c) {
  if (*i < text.size() && text[*i] == c) {
    ++*i;
    return true;
  }
  return false;
}

// "YYYY-MM-DD" (the year may be longer) at text[*i].
bool DatePart(std::string_view text, size_t* i) {
  return Digits(text, i, 4) && Char(text, i, '-') && Digits(text, i, 2, 2) && Char(text, i, '-') &&
         Digits(text, i, 2, 2);
}

std::optional<std::string> Date(std::string_view text) {
  if (text == "infinity" || text == "-infinity") return JsonString(text);
  size_t i = 0;
  if (!DatePart(text, &i)) return std::nullopt;
  const std::string_view rest = text.substr(i);
  if (!rest.empty() && rest != " BC") return std::nullopt;
  return JsonString(text);  // to_jsonb's XSD date is ISO's
}

// "2026-11-26 22:18:23.123456+00" (ISO) → "2026-11-26T22:18:23.123456+00:00" (XSD): the
// offset always has minutes, and seconds when it has them; " BC" stays at the end.
std::optional<std::string> Timestamp(std::string_view text, bool with_zone) {
  if (text == "infinity" || text == "-infinity") return JsonString(text);
  size_t i = 0;
  if (!DatePart(text, &i)) return std::nullopt;
  const size_t space = i;
  if (!Char(text, &i, ' ') || !Digits(text, &i, 2, 2) || !Char(text, &i, ':') ||
      !Digits(text, &i, 2, 2) || !Char(text, &i, ':') || !Digits(text, &i, 2, 2)) {
    return std::nullopt;
  }
  if (Char(text, &i, '.') && !Digits(text, &i, 1)) return std::nullopt;
  std::string out(text.substr(0, i));
  out[space] = 'T';
  if (with_zone) {
    if (i >= text.size() || (text[i] != '+' && text[i] != '-')) return std::nullopt;
    out.push_back(text[i++]);
    const size_t hours = i;
    if (!Digits(text, &i, 2, 2)) return std::nullopt;
    out.append(text.substr(hours, 2));
    for (int part = 0; part < 2; ++part) {
      const size_t at = i;
      if (!Char(text, &i, ':')) {
        if (part == 0) out.append(":00");
        break;
      }
      if (!Digits(text, &i, 2, 2)) return std::nullopt;
      out.append(text.substr(at, 3));
    }
  }
  const std::string_view rest = text.substr(i);
  if (!rest.empty() && rest != " BC") return std::nullopt;
  out.append(rest);
  return JsonString(out);
}

std::optional<std::string> Scalar(Kind kind, std::string_view text) {
  switch (kind) {
    case Kind::kString:
      return JsonString(text);
    case Kind::kBool:
      if (text == "t") return "true";
      if (text == "f") return "false";
      return std::nullopt;
    case Kind::kNumber:
      // datum_to_jsonb: an output with an 'N' or 'n' in it (NaN, Infinity) is a string.
      if (text.find_first_of("Nn") != std::string_view::npos) {
        if (text == "NaN" || text == "Infinity" || text == "-Infinity") return JsonString(text);
        return std::nullopt;
      }
      return NumericText(text);
    case Kind::kJson:
      return JsonbText(text);
    case Kind::kDate:
      return Date(text);
    case Kind::kTimestamp:
      return Timestamp(text, false);
    case Kind::kTimestampTz:
      return Timestamp(text, true);
  }
  return std::nullopt;
}

// array_out's text: an optional "[1:2][0:3]=" of bounds, then {..} nested once per dimension,
// elements separated by `delim`, NULL unquoted, other elements bare or in double quotes with
// \" and \\ escapes. Nesting is bounded by PostgreSQL's MAXDIM, so the recursion is too.
class ArrayReader {
 public:
  static constexpr int kMaxDimensions = 6;

  ArrayReader(std::string_view text, Kind element, char delim)
      : in_(text), element_(element), delim_(delim) {}

  std::optional<std::string> Read() {
    if (!in_.empty() && in_[0] == '[') {
      const size_t eq = in_.find('=');
      if (eq == std::string_view::npos || !Bounds(in_.substr(0, eq))) return std::nullopt;
      pos_ = eq + 1;
    }
    std::string out;
    if (!Level(&out, 1) || pos_ != in_.size()) return std::nullopt;
    return out;
  }

 private:
  static bool Bounds(std::string_view b) {
    size_t i = 0;
    int dims = 0;
    while (i < b.size()) {
      if (++dims > kMaxDimensions || !Char(b, &i, '[')) return false;
      Char(b, &i, '-');
      if (!Digits(b, &i, 1) || !Char(b, &i, ':')) return false;
      Char(b, &i, '-');
      if (!Digits(b, &i, 1) || !Char(b, &i, ']')) return false;
    }
    return dims > 0;
  }

  bool Level(std::string* out, int depth) {
    if (depth > kMaxDimensions || !Char(in_, &pos_, '{')) return false;
    out->push_back('[');
    if (Char(in_, &pos_, '}')) {
      out->push_back(']');
      return true;
    }
    for (bool first = true;; first = false) {
      if (!first) out->append(", ");
      if (pos_ < in_.size() && in_[pos_] == '{') {
        if (!Level(out, depth + 1)) return false;
      } else if (!Element(out)) {
        return false;
      }
      if (Char(in_, &pos_, '}')) break;
      if (!Char(in_, &pos_, delim_)) return false;
    }
    out->push_back(']');
    return true;
  }

  bool Element(std::string* out) {
    std::string text;
    bool quoted = false;
    if (Char(in_, &pos_, '"')) {
      quoted = true;
      while (true) {
        if (pos_ >= in_.size()) return false;
        const char c = in_[pos_++];
        if (c == '"') break;
        if (c == '\\') {
          if (pos_ >= in_.size()) return false;
          text.push_back(in_[pos_++]);
        } else {
          text.push_back(c);
        }
      }
    } else {
      while (pos_ < in_.size() && in_[pos_] != delim_ && in_[pos_] != '}') {
        const char c = in_[pos_++];
        if (c == '{' || c == '"') return false;
        if (c == '\\') {
          if (pos_ >= in_.size()) return false;
          text.push_back(in_[pos_++]);
        } else {
          text.push_back(c);
        }
      }
      if (text.empty()) return false;
    }
    if (!quoted && text.size() == 4 && (text[0] | 0x20) == 'n' && (text[1] | 0x20) == 'u' &&
        (text[2] | 0x20) == 'l' && (text[3] | 0x20) == 'l') {
      out->append("null");
      return true;
    }
    auto value = Scalar(element_, text);
    if (!value) return false;
    out->append(*value);
    return true;
  }

  std::string_view in_;
  size_t pos_ = 0;
  Kind element_;
  char delim_;
};

}  // namespace

std::string RenderColumn(uint32_t type_oid, std::string_view text) {
  std::optional<std::string> json;
  if (auto element = ArrayElement(type_oid)) {
    json = ArrayReader(text, ScalarKind(*element), type_oid == 1020 ? ';' : ',').Read();
  } else {
    json = Scalar(ScalarKind(type_oid), text);
  }
  // A text its type's output function would not write (a mislabelled column, a damaged
  // stream) is kept whole as a string rather than guessed at: the JSON stays valid.
  return json ? std::move(*json) : JsonString(text);
}

}  // namespace courier::cdc
