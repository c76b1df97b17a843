// The Redis cache sink (hiredis; pipelined as the Streams sink, redis_pipeline.h):
//
//   redis-cache://[user:password@]host:port/PREFIX[?db=N&delete_on=TYPE,TYPE&ttl=SECONDS
//                                                   &tombstone_ttl=SECONDS]
//
// Outbox events: PREFIX:{aggregate_type}:{aggregate_id} holds the payload of the aggregate's
// newest event, or is deleted by an event of a `delete_on` type. A Lua script compares the
// event's version (Event::version: its outbox row id) with the last one applied, kept in
// courier:version:<key>, so an older event never overwrites a newer value, whatever the order of
// redeliveries.
//
// Changes of captured tables (Event::table_change): PREFIX:{table}:{primary key} holds the row's
// `after` (compact JSON, its values as the event rendered them) after an insert, update or
// read, and is deleted by a delete; a truncate deletes every key of its table. The same version
// check applies (the version is the commit LSN and the position in the transaction), with two
// additions: a delete leaves its version as a tombstone, for `tombstone_ttl` seconds (a week by
// default, 0: forever), so that a redelivered older insert cannot bring the row back; and a
// truncate leaves its version in courier:truncated:PREFIX:{table}, older than which no change of
// that table is applied. docs/table-cdc.md#cache-and-search-index says why a bounded tombstone
// is enough.
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "brokers/redis/redis_pipeline.h"
#include "brokers/table_change.h"
#include "core/encoding.h"
#include "core/url.h"

namespace courier {
namespace {

// Keeps KEYS[1] equal to the payload of the newest event (ARGV[1]: its version, a zero-padded
// decimal, so that string order is numeric order) unless a newer or the same version was
// applied already (KEYS[2] remembers it, also after a delete). ARGV[2] 'del' deletes the key;
// ARGV[4] > 0 sets a time to live in seconds on both keys. Returns 1 when applied, 0 when stale.
constexpr std::string_view kCacheScript = R"lua(
local applied = redis.call('GET', KEYS[2])
if applied and applied >= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[4])
if ARGV[2] == 'del' then
  redis.call('DEL', KEYS[1])
elseif ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[3])
end
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[1])
end
return 1
)lua";

// A change of a captured table. KEYS: the row, its version, its table's truncate marker.
// ARGV[1] the change's version (as kCacheScript); ARGV[2] 'set' or 'del'; ARGV[3] the row's
// JSON; ARGV[4] the time to live of the row and its version (0: none); ARGV[5] the life of a
// delete's tombstone (0: forever); ARGV[6..] the columns the update could not carry (JSON
// strings, as the row's keys are written): their values are taken over from the cached row.
// The merge is textual, member by member, so that no value is parsed and printed again
// (cjson would round a numeric to 14 digits). Returns 1 when applied, 0 when stale.
constexpr std::string_view kRowScript = R"lua(
local v = ARGV[1]
local applied = redis.call('GET', KEYS[2])
if applied and applied >= v then return 0 end
local truncated = redis.call('GET', KEYS[3])
if truncated and truncated >= v then return 0 end
local ttl = tonumber(ARGV[4])
if ARGV[2] == 'del' then
  redis.call('DEL', KEYS[1])
  local life = tonumber(ARGV[5])
  if life > 0 then
    redis.call('SET', KEYS[2], v, 'EX', life)
  else
    redis.call('SET', KEYS[2], v)
  end
  return 1
end
local row = ARGV[3]
if #ARGV > 5 then
  local cached = redis.call('GET', KEYS[1])
  if cached then
    local function string_end(s, j)
      j = j + 1
      while true do
        local k = string.find(s, '["\\]', j)
        if not k then return #s + 1 end
        if string.sub(s, k, k) == '"' then return k + 1 end
        j = k + 2
      end
    end
    local function value_end(s, j)
      local c = string.sub(s, j, j)
      if c == '"' then return string_end(s, j) end
      if c == '{' or c == '[' then
        local depth = 0
        while true do
          local k = string.find(s, '[][{}"]', j)
          if not k then return #s + 1 end
          local d = string.sub(s, k, k)
          if d == '"' then
            j = string_end(s, k)
          else
            if d == '{' or d == '[' then depth = depth + 1 else depth = depth - 1 end
            j = k + 1
            if depth == 0 then return j end
          end
        end
      end
      return string.find(s, '[,}%]%s]', j) or #s + 1
    end
    local function members(s)
      local out = {}
      local j = string.find(s, '{', 1, true)
      if not j then return out end
      j = j + 1
      while true do
        j = string.find(s, '[^%s,]', j)
        if not j or string.sub(s, j, j) ~= '"' then return out end
        local key_end = string_end(s, j)
        local key = string.sub(s, j, key_end - 1)
        j = string.find(s, '[^%s:]', key_end)
        if not j then return out end
        local e = value_end(s, j)
        out[key] = string.sub(s, j, e - 1)
        j = e
      end
    end
    local old = members(cached)
    local new = members(row)
    local extra = {}
    for i = 6, #ARGV do
      local column = ARGV[i]
      if new[column] == nil and old[column] ~= nil then
        table.insert(extra, column .. ':' .. old[column])
      end
    end
    if #extra > 0 then
      local body = string.sub(row, 1, #row - 1)
      if string.find(body, '[^%s{]') then body = body .. ',' end
      row = body .. table.concat(extra, ',') .. '}'
    end
  end
end
if ttl > 0 then
  redis.call('SET', KEYS[1], row, 'EX', ttl)
  redis.call('SET', KEYS[2], v, 'EX', ttl)
else
  redis.call('SET', KEYS[1], row)
  redis.call('SET', KEYS[2], v)
end
return 1
)lua";

// A truncate of a captured table. KEYS[1]: the table's truncate marker. ARGV[1] its version;
// ARGV[2] the pattern of the table's rows (PREFIX:table:*), ARGV[3] that of their versions.
// Deletes every row whose version is older (a row written by a newer change survives: a
// redelivered truncate comes after it) and the tombstones the marker now stands for. The keys
// are found by SCAN, so the script visits the whole database once: on a large shared Redis,
// give the cache its own database (?db=N). Returns 1 when applied, 0 when stale.
constexpr std::string_view kTruncateScript = R"lua(
local v = ARGV[1]
local marker = redis.call('GET', KEYS[1])
if marker and marker >= v then return 0 end
redis.call('SET', KEYS[1], v)
local function sweep(pattern, version_of)
  local cursor = '0'
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = page[1]
    for _, key in ipairs(page[2]) do
      local version_key = version_of(key)
      local applied = redis.call('GET', version_key)
      if not applied or applied < v then redis.call('DEL', key, version_key) end
    end
  until cursor == '0'
end
sweep(ARGV[2], function(key) return 'courier:version:' .. key end)
sweep(ARGV[3], function(key) return key end)
return 1
)lua";

class RedisCacheSink final : public RedisPipelineSink {
 public:
  using RedisPipelineSink::RedisPipelineSink;

  Status Configure() override {
    COURIER_RETURN_IF_ERROR(RedisPipelineSink::Configure());
    COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options_.url));
    if (url.path.empty() || url.path.find('{') != std::string::npos) {
      return InvalidArgumentError("redis-cache URL " + RedactUrl(options_.url) +
                                  " needs a plain key prefix: redis-cache://host:port/PREFIX");
    }
    return Status::Ok();
  }

 private:
  Status Setting(const std::string& key, const std::string& value) override {
    if (key == "delete_on") {
      std::stringstream ss(value);
      for (std::string type; std::getline(ss, type, ',');) {
        if (!type.empty()) delete_on_.insert(type);
      }
      return Status::Ok();
    }
    if (key == "ttl") {
      const std::optional<int64_t> n = ParseInt64(value);
      if (!n || *n < 0) {
        return InvalidArgumentError("redis-cache sink: ttl must be seconds (0: none), not '" +
                                    value + "'");
      }
      ttl_ = std::to_string(*n);
      return Status::Ok();
    }
    if (key == "tombstone_ttl") {
      const std::optional<int64_t> n = ParseInt64(value);
      if (!n || *n < 0) {
        return InvalidArgumentError(
            "redis-cache sink: tombstone_ttl must be seconds (0: forever), not '" + value + "'");
      }
      tombstone_ttl_ = std::to_string(*n);
      return Status::Ok();
    }
    return InvalidArgumentError("redis-cache sink: unknown parameter '" + key +
                                "' (known: db, delete_on, ttl, tombstone_ttl)");
  }

  Status Append(const Event& e) override {
    if (e.table_change) return AppendTableChange(e);
    if (e.version.empty()) {
      return RejectedError(
          "redis-cache: the event is no outbox row (a logical message), so it has no version to "
          "order it by; write it to the outbox table");
    }
    const std::string key = Key(e);
    const std::string version_key = "courier:version:" + key;
    const std::string version = e.version.ToString();
    const bool del = delete_on_.count(e.event_type) > 0;
    AppendArgv({"EVAL", kCacheScript, "2", key, version_key, version, del ? "del" : "set",
                del ? std::string_view() : std::string_view(e.payload), ttl_});
    return Status::Ok();
  }

  Status AppendTableChange(const Event& e) {
    COURIER_ASSIGN_OR_RETURN(TableChange change, ReadTableChange(e));
    const std::string version = e.version.ToString();
    const std::string table = endpoint_.stream + ":" + change.table;
    const std::string marker = "courier:truncated:" + table;
    if (change.kind == TableChange::Kind::kTruncate) {
      const std::string rows = EscapeGlob(table + ":") + "*";
      const std::string versions = EscapeGlob("courier:version:" + table + ":") + "*";
      AppendArgv({"EVAL", kTruncateScript, "1", marker, version, rows, versions});
      return Status::Ok();
    }
    const std::string key = table + ":" + change.key;
    const std::string version_key = "courier:version:" + key;
    const bool del = change.kind == TableChange::Kind::kDelete;
    std::vector<std::string> columns;  // as JSON strings: how the row's keys are written
    for (const std::string& c : change.unavailable) columns.push_back(nlohmann::json(c).dump());
    std::vector<std::string_view> args = {
        "EVAL",  kRowScript,          "3",          key,  version_key,   marker,
        version, del ? "del" : "set", change.after, ttl_, tombstone_ttl_};
    args.insert(args.end(), columns.begin(), columns.end());
    AppendArgv(args);
    return Status::Ok();
  }

  std::string What(const Event& e) const override {
    if (e.table_change && e.aggregate_id.empty()) {
      return "the " + e.event_type + " of " + endpoint_.stream + ":" + e.aggregate_type;
    }
    return "the cache update of " + Key(e);
  }

  std::string Key(const Event& e) const {
    return endpoint_.stream + ":" + e.aggregate_type + ":" + e.aggregate_id;
  }

  std::set<std::string> delete_on_;
  std::string ttl_ = "0";
  // A week: far longer than a relay is expected to stay down with events in flight.
  std::string tombstone_ttl_ = "604800";
};

}  // namespace

std::unique_ptr<Sink> MakeRedisCacheSink(const SinkOptions& options) {
  return std::make_unique<RedisCacheSink>(options);
}

}  // namespace courier
