// Redis sinks (hiredis), one command per event pipelined in order on one connection, acked by
// its reply:
//
//   redis://[user:password@]host:port[/STREAM-TEMPLATE][?db=N&maxlen=N]
//     Redis Streams: XADD; the entry's fields carry the envelope, `event_id` is the consumers'
//     dedup key. STREAM-TEMPLATE may use {aggregate_type} and {event_type} (default
//     {aggregate_type}); `maxlen` trims each stream approximately (XADD MAXLEN ~ N).
//
// The cache sink (redis-cache://) is in redis_cache.cc.
#include "brokers/redis/redis.h"

#include "brokers/redis/redis_pipeline.h"

#include <hiredis/hiredis.h>
#include <poll.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include "brokers/sink.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/url.h"

namespace courier {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// Runs one command given as binary-safe arguments; null when the connection broke.
Reply Command(redisContext* conn, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return Reply(static_cast<redisReply*>(
      redisCommandArgv(conn, static_cast<int>(argv.size()), argv.data(), lens.data())));
}

// The next reply of a pipeline, as redisGetReply, but waiting in slices of 100 ms so that a
// stop request is seen: kCancelled once `stop` was abandoned or asked `shutdown` ago,
// kRetriable when nothing came for `timeout` or the connection broke. After an error the
// connection is out of step with its replies and must be dropped.
Result<Reply> NextReply(redisContext* c, Duration timeout, Duration shutdown,
                        const StopSignal& stop) {
  void* raw = nullptr;
  auto broken = [&] { return RetriableError("redis connection lost: " + std::string(c->errstr)); };
  if (redisGetReplyFromReader(c, &raw) != REDIS_OK) return broken();
  if (raw != nullptr) return Reply(static_cast<redisReply*>(raw));
  for (int done = 0; !done;) {
    if (redisBufferWrite(c, &done) != REDIS_OK) return broken();
  }
  const TimePoint start = Clock::Real().Now();
  std::optional<TimePoint> stopping;
  while (true) {
    const TimePoint now = Clock::Real().Now();
    if (now - start >= timeout) {
      return RetriableError("redis: no reply within " + std::to_string(timeout.count()) + " ms");
    }
    if (stop.requested() && !stopping) stopping = now;
    if (stop.abandoned() || (stopping && now - *stopping >= shutdown)) {
      return CancelledError("redis: stopped while waiting for a reply");
    }
    pollfd p{c->fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR)
      return RetriableError("redis: poll: " + std::string(strerror(errno)));
    if (ready <= 0) continue;
    if (redisBufferRead(c) != REDIS_OK) return broken();
    if (redisGetReplyFromReader(c, &raw) != REDIS_OK) return broken();
    if (raw != nullptr) return Reply(static_cast<redisReply*>(raw));
  }
}

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

}  // namespace

Status RedisPipelineSink::Configure() {
  COURIER_ASSIGN_OR_RETURN(endpoint_, ParseRedisUrl(options_.url));
  for (const auto& [key, value] : endpoint_.query) {
    if (key == "db") continue;
    COURIER_RETURN_IF_ERROR(Setting(key, value));
  }
  return Status::Ok();
}

std::string RedisPipelineSink::Describe() const { return RedactUrl(options_.url); }

void RedisPipelineSink::AppendArgv(const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  redisAppendCommandArgv(conn_.get(), static_cast<int>(argv.size()), argv.data(), lens.data());
}

std::vector<Status> RedisPipelineSink::Publish(std::span<const Event> batch,
                                               const StopSignal& stop) {
  std::vector<Status> results(batch.size());
  if (Status fenced = CheckFence(stop); !fenced.ok()) {
    std::fill(results.begin(), results.end(), fenced);
    return results;
  }
  if (!conn_) {
    auto conn = ConnectRedis(endpoint_, options_.delivery_timeout);
    if (!conn.ok()) {
      std::fill(results.begin(), results.end(), conn.status());
      return results;
    }
    conn_ = std::move(conn).value();
  }
  std::vector<bool> sent(batch.size());
  HeldBack held;  // a command refused before it was sent holds back its aggregate
  for (size_t i = 0; i < batch.size(); ++i) {
    if (held.Holds(batch[i], &results[i])) continue;
    results[i] = Append(batch[i]);
    sent[i] = results[i].ok();
    if (!sent[i]) held.Failed(batch[i]);
  }
  const Duration timeout =
      options_.delivery_timeout.count() > 0 ? options_.delivery_timeout : kReplyTimeout;
  // The commands are only buffered so far: the first read below writes them. A relay whose
  // lease ran out meanwhile (frozen while connecting) drops the buffer with the connection.
  if (Status fenced = CheckFence(stop); !fenced.ok()) {
    conn_.reset();
    std::fill(results.begin(), results.end(), fenced);
    return results;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!sent[i]) continue;
    auto next = NextReply(conn_.get(), timeout, options_.shutdown_timeout, stop);
    if (!next.ok()) {
      // This reply and the ones after it are unknown.
      for (size_t j = i; j < batch.size(); ++j) {
        if (sent[j]) results[j] = next.status();
      }
      conn_.reset();
      break;
    }
    Reply reply = std::move(next).value();
    if (reply->type == REDIS_REPLY_ERROR) {
      const std::string error(reply->str, reply->len);
      results[i] = IsRetriableReplyError(error)
                       ? RetriableError("redis: " + error)
                       : RejectedError("redis refused " + What(batch[i]) + ": " + error);
    }
  }
  return results;
}

namespace {

class RedisStreamSink final : public RedisPipelineSink {
 public:
  using RedisPipelineSink::RedisPipelineSink;

 private:
  Status Setting(const std::string& key, const std::string& value) override {
    if (key != "maxlen") {
      return InvalidArgumentError("redis sink: unknown parameter '" + key +
                                  "' (known: db, maxlen)");
    }
    const std::optional<int64_t> n = ParseInt64(value);
    if (!n || *n < 1) {
      return InvalidArgumentError("redis sink: maxlen must be a positive number, not '" + value +
                                  "'");
    }
    maxlen_ = value;
    return Status::Ok();
  }

  Status Append(const Event& e) override {
    const std::string stream = ExpandTemplate(endpoint_.stream, e);
    const std::string created = std::to_string(e.created_at_us);
    const std::string headers = e.headers.empty() ? "" : HeadersToJson(e.headers);
    std::vector<std::string_view> args = {"XADD", stream};
    if (!maxlen_.empty()) args.insert(args.end(), {"MAXLEN", "~", maxlen_});
    args.insert(args.end(),
                {"*", "event_id", e.event_id, "aggregate_type", e.aggregate_type, "aggregate_id",
                 e.aggregate_id, "event_type", e.event_type, "created_at_us", created});
    if (!headers.empty()) args.insert(args.end(), {"headers", headers});
    args.insert(args.end(), {"payload", e.payload});
    AppendArgv(args);
    return Status::Ok();
  }

  std::string What(const Event& e) const override {
    return "XADD to " + ExpandTemplate(endpoint_.stream, e);
  }

  std::string maxlen_;
};

}  // namespace

Result<RedisEndpoint> ParseRedisUrl(const std::string& text) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(text));
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
    const std::optional<int64_t> n = ParseInt64(port);
    e.port = n && *n > 0 && *n <= 65535 ? static_cast<int>(*n) : 0;
    if (e.port == 0) {
      return InvalidArgumentError("redis URL " + RedactUrl(text) + " has a bad port '" + port +
                                  "'");
    }
  }
  e.stream = url.path.empty() ? "{aggregate_type}" : url.path;
  for (const auto& [key, value] : url.query) {
    if (key == "db") {
      const std::optional<int64_t> n = ParseInt64(value);
      if (!n || *n < 0 || *n > std::numeric_limits<int>::max()) {
        return InvalidArgumentError("redis URL: db must be a database number from 0, not '" +
                                    value + "'");
      }
      e.db = static_cast<int>(*n);
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
    Reply reply = Command(conn.get(), args);
    if (!reply) return RetriableError("redis " + where + ": " + std::string(conn->errstr));
    if (reply->type == REDIS_REPLY_ERROR) {
      return InvalidArgumentError("redis " + where + " refused " + args[0] + ": " +
                                  std::string(reply->str, reply->len));
    }
    return Status::Ok();
  };
  if (!e.password.empty()) {
    COURIER_RETURN_IF_ERROR(e.user.empty() ? command({"AUTH", e.password})
                                           : command({"AUTH", e.user, e.password}));
  }
  if (e.db != 0) COURIER_RETURN_IF_ERROR(command({"SELECT", std::to_string(e.db)}));
  return conn;
}

std::string EscapeGlob(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

void RedisConnDeleter::operator()(redisContext* c) const { redisFree(c); }

namespace {

// Entries as XREAD, XREADGROUP and XAUTOCLAIM return them: [[id, [field, value, ...]], ...].
std::vector<RedisEntry> ParseEntries(const redisReply* entries) {
  std::vector<RedisEntry> out;
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* entry = entries->element[i];
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2) continue;  // deleted since
    RedisEntry r;
    r.id.assign(entry->element[0]->str, entry->element[0]->len);
    const redisReply* fields = entry->element[1];
    for (size_t f = 0; fields->type == REDIS_REPLY_ARRAY && f + 1 < fields->elements; f += 2) {
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

}  // namespace

Result<std::vector<RedisEntry>> ReadRedisEntries(redisContext* conn,
                                                 const std::vector<std::string>& args) {
  Reply reply = Command(conn, args);
  if (!reply) return RetriableError("redis: " + std::string(conn->errstr));
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string error(reply->str, reply->len);
    if (IsRetriableReplyError(error)) return RetriableError("redis: " + error);
    return InvalidArgumentError("redis refused " + args[0] + ": " + error);
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) return std::vector<RedisEntry>();
  if (args[0] == "XAUTOCLAIM") {  // [next cursor, entries, deleted ids]
    return reply->elements >= 2 ? ParseEntries(reply->element[1]) : std::vector<RedisEntry>();
  }
  // XREAD / XREADGROUP: [[stream, entries]] (one stream).
  const redisReply* stream = reply->element[0];
  if (stream->type != REDIS_REPLY_ARRAY || stream->elements < 2) return std::vector<RedisEntry>();
  return ParseEntries(stream->element[1]);
}

Result<std::vector<RedisEntry>> ReadRedisStream(redisContext* conn, const std::string& stream,
                                                const std::string& after_id, Duration block,
                                                int count) {
  return ReadRedisEntries(conn, {"XREAD", "COUNT", std::to_string(count), "BLOCK",
                                 std::to_string(block.count()), "STREAMS", stream, after_id});
}

std::unique_ptr<Sink> MakeRedisSink(const SinkOptions& options) {
  return std::make_unique<RedisStreamSink>(options);
}

}  // namespace courier
