#include "sources/pgoutput.h"

#include <cstdio>

namespace courier::pgoutput {
namespace {

// Reads big-endian integers and NUL-terminated strings, failing on truncation.
class Reader {
 public:
  explicit Reader(std::string_view buf) : buf_(buf) {}

  bool Byte(uint8_t* out) {
    if (pos_ + 1 > buf_.size()) return Fail();
    *out = static_cast<uint8_t>(buf_[pos_++]);
    return true;
  }
  template <typename T>
  bool Int(T* out) {
    if (pos_ + sizeof(T) > buf_.size()) return Fail();
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v = (v << 8) | static_cast<uint8_t>(buf_[pos_ + i]);
    pos_ += sizeof(T);
    *out = static_cast<T>(v);
    return true;
  }
  bool String(std::string* out) {
    const size_t end = buf_.find('\0', pos_);
    if (end == std::string_view::npos) return Fail();
    out->assign(buf_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return true;
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (pos_ + n > buf_.size()) return Fail();
    *out = buf_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool ok() const { return ok_; }

 private:
  bool Fail() {
    ok_ = false;
    return false;
  }
  std::string_view buf_;
  size_t pos_ = 0;
  bool ok_ = true;
};

Status Truncated(char kind) {
  return InternalError(std::string("truncated pgoutput message '") + kind + "'");
}

// PostgreSQL's microseconds since 2000 as Unix microseconds; false when out of range (no server
// sends such a time, but the sum must not overflow whatever the stream says).
bool PgTimeToUnix(int64_t pg_us, int64_t* unix_us) {
  return !__builtin_add_overflow(pg_us, kPgEpochOffsetUs, unix_us);
}

Status BadTime(char kind) {
  return InternalError(std::string("pgoutput message '") + kind + "' has a time out of range");
}

bool ReadTuple(Reader& r, std::vector<Value>* values) {
  int16_t n = 0;
  if (!r.Int(&n) || n < 0) return false;
  values->resize(static_cast<size_t>(n));
  for (Value& v : *values) {
    uint8_t kind = 0;
    if (!r.Byte(&kind)) return false;
    switch (kind) {
      case 'n':
        v.kind = Value::Kind::kNull;
        break;
      case 'u':
        v.kind = Value::Kind::kUnchangedToast;
        break;
      case 't':
      case 'b': {
        int32_t len = 0;
        if (!r.Int(&len) || len < 0 || !r.Bytes(static_cast<size_t>(len), &v.text)) return false;
        v.kind = Value::Kind::kText;
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

}  // namespace

std::string FormatLsn(Lsn lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32),
                static_cast<unsigned>(lsn & 0xffffffffu));
  return buf;
}

Result<Lsn> ParseLsn(std::string_view text) {
  unsigned hi = 0, lo = 0;
  const std::string s(text);
  if (std::sscanf(s.c_str(), "%X/%X", &hi, &lo) != 2) {
    return InvalidArgumentError("not an LSN: '" + s + "'");
  }
  return (static_cast<Lsn>(hi) << 32) | lo;
}

Result<CopyMessage> ParseCopyMessage(std::string_view buf) {
  CopyMessage m;
  if (buf.empty()) return InternalError("empty replication message");
  Reader r(buf.substr(1));
  int64_t send_time = 0;
  if (buf[0] == 'w') {
    m.kind = CopyMessage::Kind::kXLogData;
    if (!r.Int(&m.data.start) || !r.Int(&m.data.wal_end) || !r.Int(&send_time)) {
      return Truncated('w');
    }
    m.data.payload = buf.substr(1 + 24);
  } else if (buf[0] == 'k') {
    m.kind = CopyMessage::Kind::kKeepalive;
    uint8_t reply = 0;
    if (!r.Int(&m.keepalive.wal_end) || !r.Int(&send_time) || !r.Byte(&reply)) {
      return Truncated('k');
    }
    m.keepalive.reply_requested = reply != 0;
  }
  return m;
}

std::string StandbyStatusUpdate(Lsn received, Lsn flush, int64_t now_unix_us, bool reply) {
  std::string out(1 + 8 * 4 + 1, '\0');
  out[0] = 'r';
  auto put = [&out](size_t at, uint64_t v) {
    for (int i = 7; i >= 0; --i) {
      out[at + static_cast<size_t>(7 - i)] = static_cast<char>((v >> (8 * i)) & 0xff);
    }
  };
  put(1, received);
  put(9, flush);
  put(17, flush);  // applied
  put(25, static_cast<uint64_t>(now_unix_us - kPgEpochOffsetUs));
  out[33] = reply ? 1 : 0;
  return out;
}

Result<Message> ParseMessage(std::string_view payload) {
  Message m;
  COURIER_RETURN_IF_ERROR(ParseMessage(payload, &m));
  return m;
}

Status ParseMessage(std::string_view payload, Message* out) {
  // Every field back to its default, the vectors and strings keeping their capacity.
  Message& m = *out;
  m.kind = Message::Kind::kOther;
  m.final_lsn = m.commit_lsn = m.end_lsn = m.message_lsn = 0;
  m.commit_time_us = 0;
  m.xid = m.relation_id = m.type_oid = 0;
  m.relation.id = 0;
  m.relation.schema.clear();
  m.relation.name.clear();
  m.relation.replica_identity = 'd';
  m.relation.columns.clear();
  m.values.clear();
  m.old_kind = 0;
  m.old_values.clear();
  m.relation_ids.clear();
  m.truncate_cascade = m.truncate_restart_identity = m.transactional = false;
  m.type_schema.clear();
  m.type_name.clear();
  m.prefix.clear();
  m.content = {};
  if (payload.empty()) return InternalError("empty pgoutput message");
  const char kind = payload[0];
  Reader r(payload.substr(1));
  switch (kind) {
    case 'B': {
      int64_t ts = 0;
      m.kind = Message::Kind::kBegin;
      if (!r.Int(&m.final_lsn) || !r.Int(&ts) || !r.Int(&m.xid)) return Truncated(kind);
      if (!PgTimeToUnix(ts, &m.commit_time_us)) return BadTime(kind);
      return Status::Ok();
    }
    case 'C': {
      uint8_t flags = 0;
      int64_t ts = 0;
      m.kind = Message::Kind::kCommit;
      if (!r.Byte(&flags) || !r.Int(&m.commit_lsn) || !r.Int(&m.end_lsn) || !r.Int(&ts)) {
        return Truncated(kind);
      }
      if (!PgTimeToUnix(ts, &m.commit_time_us)) return BadTime(kind);
      return Status::Ok();
    }
    case 'R': {
      m.kind = Message::Kind::kRelation;
      uint8_t identity = 0;
      int16_t ncols = 0;
      if (!r.Int(&m.relation.id) || !r.String(&m.relation.schema) || !r.String(&m.relation.name) ||
          !r.Byte(&identity) || !r.Int(&ncols) || ncols < 0) {
        return Truncated(kind);
      }
      m.relation.replica_identity = static_cast<char>(identity);
      m.relation.columns.resize(static_cast<size_t>(ncols));
      for (Column& c : m.relation.columns) {
        uint8_t flags = 0;
        if (!r.Byte(&flags) || !r.String(&c.name) || !r.Int(&c.type_oid) ||
            !r.Int(&c.type_modifier)) {
          return Truncated(kind);
        }
        c.key = (flags & 1) != 0;
      }
      return Status::Ok();
    }
    case 'Y': {
      m.kind = Message::Kind::kType;
      if (!r.Int(&m.type_oid) || !r.String(&m.type_schema) || !r.String(&m.type_name)) {
        return Truncated(kind);
      }
      return Status::Ok();
    }
    case 'I': {
      m.kind = Message::Kind::kInsert;
      uint8_t marker = 0;
      if (!r.Int(&m.relation_id) || !r.Byte(&marker) || marker != 'N' || !ReadTuple(r, &m.values)) {
        return Truncated(kind);
      }
      return Status::Ok();
    }
    case 'U': {
      m.kind = Message::Kind::kUpdate;
      uint8_t marker = 0;
      if (!r.Int(&m.relation_id) || !r.Byte(&marker)) return Truncated(kind);
      if (marker == 'K' || marker == 'O') {
        m.old_kind = static_cast<char>(marker);
        if (!ReadTuple(r, &m.old_values) || !r.Byte(&marker)) return Truncated(kind);
      }
      if (marker != 'N' || !ReadTuple(r, &m.values)) return Truncated(kind);
      return Status::Ok();
    }
    case 'D': {
      m.kind = Message::Kind::kDelete;
      uint8_t marker = 0;
      if (!r.Int(&m.relation_id) || !r.Byte(&marker) || (marker != 'K' && marker != 'O') ||
          !ReadTuple(r, &m.old_values)) {
        return Truncated(kind);
      }
      m.old_kind = static_cast<char>(marker);
      return Status::Ok();
    }
    case 'T': {
      m.kind = Message::Kind::kTruncate;
      int32_t n = 0;
      uint8_t options = 0;
      if (!r.Int(&n) || n < 0 || !r.Byte(&options)) return Truncated(kind);
      m.truncate_cascade = (options & 1) != 0;
      m.truncate_restart_identity = (options & 2) != 0;
      // Bounded by what the message holds, not by what it claims.
      for (int32_t i = 0; i < n; ++i) {
        uint32_t id = 0;
        if (!r.Int(&id)) return Truncated(kind);
        m.relation_ids.push_back(id);
      }
      return Status::Ok();
    }
    case 'M': {
      m.kind = Message::Kind::kLogicalMessage;
      uint8_t flags = 0;
      int32_t len = 0;
      if (!r.Byte(&flags) || !r.Int(&m.message_lsn) || !r.String(&m.prefix) || !r.Int(&len) ||
          len < 0 || !r.Bytes(static_cast<size_t>(len), &m.content)) {
        return Truncated(kind);
      }
      m.transactional = (flags & 1) != 0;
      return Status::Ok();
    }
    default:
      m.kind = Message::Kind::kOther;
      return Status::Ok();
  }
}

namespace {

// Days from 1970-01-01 to the proleptic Gregorian date (year 0 = 1 BC), as PostgreSQL counts.
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

}  // namespace

std::optional<int64_t> ParseTimestamp(std::string_view text) {
  // By hand, not sscanf: one per CDC event, and it needs no copy of the text to end in a NUL.
  size_t pos = 0;
  auto digits = [&text, &pos](size_t min, size_t max, int* out) {
    size_t n = 0;
    int v = 0;
    for (; n < max && pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++n, ++pos) {
      v = v * 10 + (text[pos] - '0');
    }
    *out = v;
    return n >= min;
  };
  auto literal = [&text, &pos](std::string_view s) {
    if (text.substr(pos, s.size()) != s) return false;
    pos += s.size();
    return true;
  };
  // Years past 9999 have more digits (PostgreSQL goes to 294276); " BC" ends a year before 1.
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!digits(4, 6, &y) || !literal("-") || !digits(1, 2, &mo) || !literal("-") ||
      !digits(1, 2, &d) || !literal(" ") || !digits(1, 2, &h) || !literal(":") ||
      !digits(1, 2, &mi) || !literal(":") || !digits(1, 2, &sec)) {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 24 || mi > 59 || sec > 60) return std::nullopt;
  int64_t micros = 0;
  if (literal(".")) {
    int64_t scale = 100000;
    for (; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos) {
      micros += (text[pos] - '0') * scale;
      scale /= 10;
    }
  }
  int64_t offset_s = 0;
  if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    const int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    int oh = 0, om = 0, os = 0;
    if (!digits(1, 2, &oh)) return std::nullopt;
    if (literal(":") && !digits(1, 2, &om)) return std::nullopt;
    if (literal(":") && !digits(1, 2, &os)) return std::nullopt;
    offset_s = sign * (oh * 3600 + om * 60 + os);
  }
  const bool bc = literal(" BC");
  if (pos != text.size()) return std::nullopt;
  const int64_t year = bc ? 1 - static_cast<int64_t>(y) : y;
  const int64_t epoch_s =
      DaysFromCivil(year, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;  // |.| < 2^45
  int64_t us = 0;
  if (__builtin_mul_overflow(epoch_s, int64_t{1000000}, &us) ||
      __builtin_add_overflow(us, micros, &us)) {
    return std::nullopt;  // past what int64 microseconds hold (year ~294247)
  }
  return us;
}

}  // namespace courier::pgoutput
