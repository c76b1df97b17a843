// `courier audit` of a redis-cache sink that mirrors captured tables (docs/table-cdc.md): the
// truth is each table itself. Every row of a captured table (its column list and row filter
// applied) must be under PREFIX:{table}:{key} with the value the sink writes, the row as JSON:
// a missing key is lost, a different value stale, and a key of the table's prefix without a row
// a ghost. Values are compared as JSON (the sink's compact rendering against PostgreSQL's
// to_json of the row, whose values to_jsonb renders alike). --repair writes the row's value
// under a lost or stale key and deletes a ghost key.
#include <hiredis/hiredis.h>

#include <nlohmann/json.hpp>
#include <unordered_set>

#include "audit/audit.h"
#include "brokers/redis/redis.h"
#include "core/postgres.h"
#include "core/url.h"
#include "sources/cdc/capture_setup.h"

namespace courier {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

Result<Reply> Command(redisContext* conn, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  Reply r(static_cast<redisReply*>(
      redisCommandArgv(conn, static_cast<int>(argv.size()), argv.data(), lens.data())));
  if (r == nullptr) return RetriableError(std::string("redis: ") + conn->errstr);
  if (r->type == REDIS_REPLY_ERROR) return RetriableError("redis: " + std::string(r->str));
  return r;
}

bool SameJson(const std::string& a, const std::string& b) {
  if (a == b) return true;
  const nlohmann::json ja = nlohmann::json::parse(a, nullptr, false);
  const nlohmann::json jb = nlohmann::json::parse(b, nullptr, false);
  return !ja.is_discarded() && !jb.is_discarded() && ja == jb;
}

// The SQL reading one captured table as the cache holds it: each row's key (as the capture
// writes aggregate_id: one column's text, or a JSON array of several) and its JSON.
Result<std::string> TableSql(PGconn* conn, const cdc::CaptureSpec& spec, std::string* type) {
  COURIER_ASSIGN_OR_RETURN(
      PgResult names,
      PgExec(conn,
             "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid ="
             " c.relnamespace WHERE c.oid = to_regclass($1)",
             {spec.table}));
  if (PQntuples(names.get()) != 1) {
    return NotFoundError("captured table " + spec.table + " does not exist");
  }
  const std::string schema = PQgetvalue(names.get(), 0, 0);
  const std::string table = PQgetvalue(names.get(), 0, 1);
  *type = schema == "public" ? table : schema + "." + table;
  COURIER_ASSIGN_OR_RETURN(
      PgResult keys,
      PgExec(conn,
             "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
             " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass($1) AND"
             " i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
             {spec.table}));
  if (PQntuples(keys.get()) == 0) {
    return InvalidArgumentError("captured table " + spec.table + " has no primary key");
  }
  std::string key;
  if (PQntuples(keys.get()) == 1) {
    key = "to_jsonb(x." + QuoteIdent(PQgetvalue(keys.get(), 0, 0)) + ") #>> '{}'";
  } else {
    key = "'[' || concat_ws(','";
    for (int i = 0; i < PQntuples(keys.get()); ++i) {
      key += ", to_jsonb(x." + QuoteIdent(PQgetvalue(keys.get(), i, 0)) + ")::text";
    }
    key += ") || ']'";
  }
  const std::string columns =
      spec.columns.empty() ? "*" : spec.columns.substr(1, spec.columns.size() - 2);
  return "SELECT " + key + ", to_json(x)::text FROM (SELECT " + columns + " FROM " + spec.table +
         (spec.where.empty() ? "" : " WHERE " + spec.where) + ") x";
}

}  // namespace

bool IsCacheSink(const std::string& sink_url) {
  auto url = ParseUrl(sink_url);
  return url.ok() && url->scheme == "redis-cache";
}

Result<AuditReport> RunCacheAudit(const AuditOptions& options, bool repair, int64_t* repaired) {
  AuditReport report;
  report.sink = RedactUrl(options.sink_url);
  if (options.capture.empty()) {
    return InvalidArgumentError(
        "a redis-cache sink is audited against the tables it mirrors: --capture "
        "'public.products' (as given to the relay)");
  }
  COURIER_ASSIGN_OR_RETURN(std::vector<cdc::CaptureSpec> specs,
                           cdc::ParseCaptureList(options.capture));
  COURIER_ASSIGN_OR_RETURN(SourceLocation where, ParseSourceUrl(options.source_url));
  if (where.kind != SourceLocation::Kind::kPostgres) {
    return InvalidArgumentError("captured tables are PostgreSQL's; --source must be postgres://");
  }
  COURIER_ASSIGN_OR_RETURN(RedisEndpoint endpoint, ParseRedisUrl(options.sink_url));
  COURIER_ASSIGN_OR_RETURN(PgConn pg, PgConnect(where.target));
  COURIER_ASSIGN_OR_RETURN(RedisConn redis, ConnectRedis(endpoint, Duration(10000)));
  std::string tables;
  for (const cdc::CaptureSpec& spec : specs) {
    tables += (tables.empty() ? "" : ", ") + spec.table;
  }
  report.truth = "the rows of " + tables + " in " + RedactUrl(options.source_url);
  Verdict& v = report.verdict;
  auto fix = [&](const std::vector<std::string>& args) -> Status {
    if (!repair) return Status::Ok();
    COURIER_RETURN_IF_ERROR(Command(redis.get(), args).status());
    ++*repaired;
    return Status::Ok();
  };
  for (const cdc::CaptureSpec& spec : specs) {
    std::string type;
    COURIER_ASSIGN_OR_RETURN(std::string sql, TableSql(pg.get(), spec, &type));
    COURIER_ASSIGN_OR_RETURN(PgResult rows, PgExec(pg.get(), sql));
    const std::string prefix = endpoint.stream + ":" + type + ":";
    report.read_from.push_back(prefix + "*");
    std::unordered_set<std::string> keys;
    for (int i = 0; i < PQntuples(rows.get()); ++i) {
      const std::string key = prefix + PQgetvalue(rows.get(), i, 0);
      const std::string row = PQgetvalue(rows.get(), i, 1);
      keys.insert(key);
      ++report.published;
      COURIER_ASSIGN_OR_RETURN(Reply got, Command(redis.get(), {"GET", key}));
      if (got->type != REDIS_REPLY_STRING) {
        ++v.lost;
        v.lost_ids.push_back(key);
        COURIER_RETURN_IF_ERROR(fix({"SET", key, row}));
        continue;
      }
      ++v.delivered;
      if (!SameJson(std::string(got->str, got->len), row)) {
        report.stale.push_back(key);
        COURIER_RETURN_IF_ERROR(fix({"SET", key, row}));
      }
    }
    // Keys of the table's prefix without a row; read in SCAN's pages.
    std::unordered_set<std::string> scanned;  // SCAN may give a key twice
    std::string cursor = "0";
    do {
      COURIER_ASSIGN_OR_RETURN(
          Reply page, Command(redis.get(), {"SCAN", cursor, "MATCH", EscapeGlob(prefix) + "*",
                                            "COUNT", "1000"}));
      if (page->type != REDIS_REPLY_ARRAY || page->elements != 2) {
        return RetriableError("redis: SCAN answered with no page");
      }
      cursor.assign(page->element[0]->str, page->element[0]->len);
      const redisReply* found = page->element[1];
      for (size_t k = 0; k < found->elements; ++k) {
        const std::string key(found->element[k]->str, found->element[k]->len);
        if (!scanned.insert(key).second) continue;
        ++report.read;
        if (keys.count(key) > 0) continue;
        ++v.ghosts;
        v.ghost_ids.push_back(key);
        COURIER_RETURN_IF_ERROR(fix({"DEL", key}));
      }
    } while (cursor != "0");
  }
  v.committed = report.published;
  return report;
}

}  // namespace courier
