// Redis endpoints shared by the Redis Streams sink and its reader (`courier tail`).
//
// Thread-safety: a connection belongs to one thread at a time (hiredis's rule).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

struct redisContext;

namespace courier {

struct RedisEndpoint {
  std::string host;
  int port = 6379;
  std::string user;
  std::string password;
  int db = 0;
  std::string stream;  // the URL's path: a stream name or template
  std::vector<std::pair<std::string, std::string>> query;
};

// redis://[user:password@]host[:port][/stream][?db=N...]
Result<RedisEndpoint> ParseRedisUrl(const std::string& url);

struct RedisConnDeleter {
  void operator()(redisContext* c) const;
};
using RedisConn = std::unique_ptr<redisContext, RedisConnDeleter>;

// Connects (5 s connect timeout), authenticates and selects the database. Replies slower
// than `timeout` (10 s when zero) break the connection. Unreachable is kRetriable.
Result<RedisConn> ConnectRedis(const RedisEndpoint& endpoint, Duration timeout);

// One entry of a stream as the sink wrote it.
struct RedisEntry {
  std::string id;  // the stream entry id, "1700000000000-0"
  Event event;
};

// Runs a command that answers with stream entries (XREAD, XREADGROUP, XAUTOCLAIM) and
// returns them; an empty list when it timed out.
Result<std::vector<RedisEntry>> ReadRedisEntries(redisContext* conn,
                                                 const std::vector<std::string>& args);

// Entries of `stream` after `after_id` ("0" for the beginning, "$" for new ones only), waiting
// up to `block` for some to arrive; at most `count`.
Result<std::vector<RedisEntry>> ReadRedisStream(redisContext* conn, const std::string& stream,
                                                const std::string& after_id, Duration block,
                                                int count = 1000);

// `text` with the glob characters of SCAN's MATCH escaped.
std::string EscapeGlob(std::string_view text);

}  // namespace courier
