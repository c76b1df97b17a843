#include "sources/source.h"

#include "core/url.h"

namespace courier {

Result<SourceLocation> ParseSourceUrl(const std::string& url) {
  const size_t sep = url.find("://");
  const std::string scheme = sep == std::string::npos ? "" : url.substr(0, sep);
  if (scheme == "postgres" || scheme == "postgresql") {
    // Refused here, before libpq splits a bad user or password and echoes the pieces.
    COURIER_RETURN_IF_ERROR(ParseUrl(url).status());
    return SourceLocation{SourceLocation::Kind::kPostgres, url};
  }
  if (scheme == "sqlite") {
    std::string path = PercentDecode(url.substr(sep + 3));
    if (path.empty()) {
      return InvalidArgumentError("'" + url + "' names no file; write sqlite:///path/to/app.db");
    }
    return SourceLocation{SourceLocation::Kind::kSqlite, path};
  }
  return InvalidArgumentError("unknown source '" + RedactUrl(url) +
                              "'; expected postgres://user@host:port/db or sqlite:///path/app.db");
}

Result<std::unique_ptr<Source>> MakeSource(const SourceOptions& options) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(options.url));
  if (loc.kind == SourceLocation::Kind::kPostgres) {
    COURIER_RETURN_IF_ERROR(CheckTableNames(options.tables));
    if (options.tables.event_store() && !options.cdc.enabled) {
      return MakeEventStorePollSource(options, loc.target);
    }
    if (options.cdc.enabled) return MakePostgresCdcSource(options, loc.target);
    return MakePostgresPollSource(options, loc.target);
  }
  if (options.tables.event_store()) {
    return InvalidArgumentError(
        "relay --event-store publishes a PostgreSQL event store; a SQLite one is read with "
        "courier::EventStore::ReadAll");
  }
  if (options.cdc.enabled) {
    return InvalidArgumentError(
        "--mode cdc reads PostgreSQL's write-ahead log; a SQLite outbox is polled (--mode poll)");
  }
  return MakeSqlitePollSource(options, loc.target);
}

std::string StableHash(std::string_view text) {
  // FNV-1a, 64 bits, folded to 32.
  uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  const auto folded = static_cast<uint32_t>(h ^ (h >> 32));
  static const char* kHex = "0123456789abcdef";
  std::string out(8, '0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(7 - i)] = kHex[(folded >> (4 * i)) & 0xf];
  return out;
}

std::string DerivedName(const std::string& name, const std::string& suffix) {
  const size_t dot = name.rfind('.');
  const std::string schema = dot == std::string::npos ? "" : name.substr(0, dot + 1);
  const std::string base = dot == std::string::npos ? name : name.substr(dot + 1);
  if (base.size() + suffix.size() <= kMaxIdentifier) return name + suffix;
  const std::string tag = "_" + StableHash(base);
  size_t keep = kMaxIdentifier - suffix.size() - tag.size();
  // Never cut a UTF-8 character in two: the server refuses invalid text.
  while (keep > 0 && (static_cast<unsigned char>(base[keep]) & 0xc0) == 0x80) --keep;
  return schema + base.substr(0, keep) + tag + suffix;
}

Status CheckTableNames(const TableNames& tables) {
  for (const std::string* name : {&tables.outbox, &tables.dead_letter, &tables.inbox}) {
    const size_t dot = name->rfind('.');
    for (const std::string& part : {dot == std::string::npos ? std::string() : name->substr(0, dot),
                                    dot == std::string::npos ? *name : name->substr(dot + 1)}) {
      if (part.size() > kMaxIdentifier) {
        return InvalidArgumentError("table name '" + *name + "' is too long: '" +
                                    part.substr(0, 20) + "...' has " + std::to_string(part.size()) +
                                    " bytes and PostgreSQL keeps 63; choose a shorter name");
      }
    }
  }
  return Status::Ok();
}

TableNames EventStoreTables(const std::string& events) {
  TableNames t;
  t.outbox = events;
  t.outbox_format = TableNames::OutboxFormat::kEventStore;
  return t;
}

std::string ShardCondition(const std::string& alias, int index, int count) {
  return "((hashtext(" + alias + ".aggregate_id) & 2147483647)::int8 * " + std::to_string(count) +
         " / 2147483648) = " + std::to_string(index);
}

}  // namespace courier
