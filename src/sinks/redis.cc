// Redis Streams sink (hiredis): one XADD per event, pipelined in order on one connection.
// An event is acked when Redis replies with its entry id. The entry's fields carry the
// envelope; `event_id` is the consumers' dedup key.
//
//   redis://[user:password@]host:port[/STREAM-TEMPLATE][?db=N&maxlen=N]
//
// STREAM-TEMPLATE may use {aggregate_type} and {event_type} (default {aggregate_type});
// `maxlen` trims each stream approximately (XADD MAXLEN ~ N).
#include "sinks/redis.h"

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstring>

#include "core/encoding.h"
#include "core/log.h"
#include "core/url.h"
#include "sinks/sink.h"

namespace courier {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// Errors that go away by themselves (the server is loading, out of memory until keys expire,
// a replica promoted...); any other error reply is about the command or the key and will
// not change on retry.
bool IsRetriableReplyError(std::string_view error) {
  for (std::string_view prefix : {"LOADING", "OOM", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN",
                                  "CLUSTERDOWN", "NOREPLICAS", "MISCONF"}) {
    if (error.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

class RedisStreamSink final : public Sink {
 public:
  explicit RedisStreamSink(SinkOptions options) : options_(std::move(options)) {}

  Status Open() override {
    ASSIGN_OR_RETURN(endpoint_, ParseRedisUrl(options_.url));
    for (const auto& [key, value] : endpoint_.query) {
      if (key == "maxlen") {
        maxlen_ = value;
        long long n = 0;
        if (std::from_chars(value.data(), value.data() + value.size(), n).ec != std::errc{} ||
            n < 1) {
          return InvalidArgumentError("redis sink: maxlen must be a positive number, not '" +
                                      value + "'");
        }
      } else if (key != "db") {
        return InvalidArgumentError("redis sink: unknown parameter '" + key +
                                    "' (known: db, maxlen)");
      }
    }
    // The server may be away now; Publish connects (and reconnects) as needed.
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal&) override {
    std::vector<Status> results(batch.size());
    if (!conn_) {
      auto conn = ConnectRedis(endpoint_, options_.delivery_timeout);
      if (!conn.ok()) {
        std::fill(results.begin(), results.end(), conn.status());
        return results;
      }
      conn_ = std::move(conn).value();
    }
    for (const Event& e : batch) AppendXadd(e);
    for (size_t i = 0; i < batch.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(conn_.get(), &raw) != REDIS_OK) {
        // The connection broke: this reply and the ones after it are unknown.
        const Status lost = RetriableError("redis connection lost: " + std::string(conn_->errstr));
        for (size_t j = i; j < batch.size(); ++j) results[j] = lost;
        conn_.reset();
        break;
      }
      Reply reply(static_cast<redisReply*>(raw));
      if (reply->type == REDIS_REPLY_ERROR) {
        const std::string error(reply->str, reply->len);
        results[i] = IsRetriableReplyError(error)
                         ? RetriableError("redis: " + error)
                         : RejectedError("redis refused XADD to " +
                                         ExpandTemplate(endpoint_.stream, batch[i]) + ": " + error);
      } else {
        results[i] = Status::Ok();
      }
    }
    return results;
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  void AppendXadd(const Event& e) {
    const std::string stream = ExpandTemplate(endpoint_.stream, e);
    const std::string created = std::to_string(e.created_at_us);
    const std::string headers = e.headers.empty() ? "" : HeadersToJson(e.headers);
    std::vector<const char*> argv = {"XADD", stream.c_str()};
    std::vector<size_t> lens = {4, stream.size()};
    if (!maxlen_.empty()) {
      argv.insert(argv.end(), {"MAXLEN", "~", maxlen_.c_str()});
      lens.insert(lens.end(), {6, 1, maxlen_.size()});
    }
    auto field = [&](const char* name, const std::string& value) {
      argv.push_back(name);
      lens.push_back(std::strlen(name));
      argv.push_back(value.data());
      lens.push_back(value.size());
    };
    argv.push_back("*");
    lens.push_back(1);
    field("event_id", e.event_id);
    field("aggregate_type", e.aggregate_type);
    field("aggregate_id", e.aggregate_id);
    field("event_type", e.event_type);
    field("created_at_us", created);
    if (!headers.empty()) field("headers", headers);
    field("payload", e.payload);
    redisAppendCommandArgv(conn_.get(), static_cast<int>(argv.size()), argv.data(), lens.data());
  }

  SinkOptions options_;
  RedisEndpoint endpoint_;
  std::string maxlen_;
  RedisConn conn_;
};

}  // namespace

Result<RedisEndpoint> ParseRedisUrl(const std::string& text) {
  ASSIGN_OR_RETURN(Url url, ParseUrl(text));
  RedisEndpoint e;
  e.user = url.user;
  e.password = url.password;
  e.query = url.query;
  const std::string hostport = url.hosts;
  const size_t colon = hostport.rfind(':');
  e.host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  if (e.host.empty()) {
    return InvalidArgumentError("redis URL " + RedactUrl(text) +
                                " names no host; write redis://host:port/stream");
  }
  if (colon != std::string::npos) {
    const std::string port = hostport.substr(colon + 1);
    if (std::from_chars(port.data(), port.data() + port.size(), e.port).ec != std::errc{} ||
        e.port <= 0 || e.port > 65535) {
      return InvalidArgumentError("redis URL " + RedactUrl(text) + " has a bad port '" + port +
                                  "'");
    }
  }
  e.stream = url.path.empty() ? "{aggregate_type}" : url.path;
  for (const auto& [key, value] : url.query) {
    if (key == "db") {
      if (std::from_chars(value.data(), value.data() + value.size(), e.db).ec != std::errc{}) {
        return InvalidArgumentError("redis URL: db must be a number, not '" + value + "'");
      }
    }
  }
  return e;
}

Result<RedisConn> ConnectRedis(const RedisEndpoint& e, Duration timeout) {
  const auto ms = timeout.count() > 0 ? timeout.count() : 10000;
  const timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  const timeval connect_tv{5, 0};
  RedisConn conn(redisConnectWithTimeout(e.host.c_str(), e.port, connect_tv));
  const std::string where = e.host + ":" + std::to_string(e.port);
  if (!conn) return InternalError("hiredis could not allocate a connection");
  if (conn->err != 0)
    return RetriableError("cannot connect to redis " + where + ": " + conn->errstr);
  // Waiting for a reply longer than the delivery timeout (or 10 s) counts as a broken link.
  redisSetTimeout(conn.get(), tv);
  auto command = [&](std::vector<std::string> args) -> Status {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply reply(static_cast<redisReply*>(
        redisCommandArgv(conn.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!reply) return RetriableError("redis " + where + ": " + std::string(conn->errstr));
    if (reply->type == REDIS_REPLY_ERROR) {
      return InvalidArgumentError("redis " + where + " refused " + args[0] + ": " +
                                  std::string(reply->str, reply->len));
    }
    return Status::Ok();
  };
  if (!e.password.empty()) {
    RETURN_IF_ERROR(e.user.empty() ? command({"AUTH", e.password})
                                   : command({"AUTH", e.user, e.password}));
  }
  if (e.db != 0) RETURN_IF_ERROR(command({"SELECT", std::to_string(e.db)}));
  return conn;
}

void RedisConnDeleter::operator()(redisContext* c) const { redisFree(c); }

Result<std::vector<RedisEntry>> ReadRedisStream(redisContext* conn, const std::string& stream,
                                                const std::string& after_id, Duration block,
                                                int count) {
  const std::string count_text = std::to_string(count);
  const std::string block_text = std::to_string(block.count());
  const char* argv[] = {"XREAD",   "COUNT",        count_text.c_str(), "BLOCK", block_text.c_str(),
                        "STREAMS", stream.c_str(), after_id.c_str()};
  Reply reply(static_cast<redisReply*>(redisCommandArgv(conn, 8, argv, nullptr)));
  if (!reply) return RetriableError("redis: " + std::string(conn->errstr));
  if (reply->type == REDIS_REPLY_ERROR) {
    return InvalidArgumentError("redis refused XREAD: " + std::string(reply->str, reply->len));
  }
  std::vector<RedisEntry> out;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) return out;  // timed out
  const redisReply* entries = reply->element[0]->element[1];
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* entry = entries->element[i];
    RedisEntry r;
    r.id.assign(entry->element[0]->str, entry->element[0]->len);
    const redisReply* fields = entry->element[1];
    for (size_t f = 0; f + 1 < fields->elements; f += 2) {
      const std::string_view key(fields->element[f]->str, fields->element[f]->len);
      const std::string value(fields->element[f + 1]->str, fields->element[f + 1]->len);
      Event& e = r.event;
      if (key == "event_id") e.event_id = value;
      if (key == "aggregate_type") e.aggregate_type = value;
      if (key == "aggregate_id") e.aggregate_id = value;
      if (key == "event_type") e.event_type = value;
      if (key == "payload") e.payload = value;
      if (key == "created_at_us") e.created_at_us = std::atoll(value.c_str());
      if (key == "headers") {
        auto headers = HeadersFromJson(value);
        if (headers.ok()) e.headers = std::move(headers).value();
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::unique_ptr<Sink> MakeRedisSink(const SinkOptions& options) {
  return std::make_unique<RedisStreamSink>(options);
}

}  // namespace courier
