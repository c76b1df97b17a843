#include "sources/source.h"

#include "core/url.h"

namespace courier {

Result<SourceLocation> ParseSourceUrl(const std::string& url) {
  const size_t sep = url.find("://");
  const std::string scheme = sep == std::string::npos ? "" : url.substr(0, sep);
  if (scheme == "postgres" || scheme == "postgresql") {
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
  ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(options.url));
  if (loc.kind == SourceLocation::Kind::kPostgres) {
    if (options.cdc.enabled) return MakePostgresCdcSource(options, loc.target);
    return MakePostgresPollSource(options, loc.target);
  }
  if (options.cdc.enabled) {
    return InvalidArgumentError(
        "--mode cdc reads PostgreSQL's write-ahead log; a SQLite outbox is polled (--mode poll)");
  }
  return MakeSqlitePollSource(options, loc.target);
}

std::string ShardCondition(const std::string& alias, int index, int count) {
  return "((hashtext(" + alias + ".aggregate_id) & 2147483647)::int8 * " + std::to_string(count) +
         " / 2147483648) = " + std::to_string(index);
}

}  // namespace courier
