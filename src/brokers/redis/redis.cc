// Redis sinks (hiredis), one command per event pipelined in order on one connection, acked by
// its reply:
//
//   redis://[user:password@]host:port[/STREAM-TEMPLATE][?db=N&maxlen=N]
//     Redis Streams: XADD; the entry's fields carry the envelope, `event_id` is the consumers'
//     dedup key. STREAM-TEMPLATE may use {aggregate_type} and {event_type} (default
//     {aggregate_type}); `maxlen` trims each stream approximately (XADD MAXLEN ~ N).
//
//   redis-cache://[user:password@]host:port/PREFIX[?db=N&delete_on=TYPE,TYPE&ttl=SECONDS]
//     Cache sync: PREFIX:{aggregate_type}:{aggregate_id} holds the payload of the aggregate's
//     newest event, or is deleted by an event of a `delete_on` type. A Lua script compares
//     the event's version (Event::version: its outbox row id) with the last one applied, kept in
//     courier:version:<key>, so an older event never overwrites a newer value, whatever the
//     order of redeliveries.
#include "brokers/redis/redis.h"

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

// Pipelines one command per event on one connection, in order, and reads the replies: an
// event is acked by a reply that is not an error.
class RedisPipelineSink : public Sink {
 public:
  explicit RedisPipelineSink(SinkOptions options) : options_(std::move(options)) {}

  Status Configure() override {
    COURIER_ASSIGN_OR_RETURN(endpoint_, ParseRedisUrl(options_.url));
    for (const auto& [key, value] : endpoint_.query) {
      if (key == "db") continue;
      COURIER_RETURN_IF_ERROR(Setting(key, value));
    }
    return Status::Ok();
  }

  Status Open() override {
    // The server may be away now; Publish connects (and reconnects) as needed.
    return Configure();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
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

  std::string Describe() const override { return RedactUrl(options_.url); }

 protected:
  // A URL parameter other than db; kInvalidArgument for an unknown one.
  virtual Status Setting(const std::string& key, const std::string& value) = 0;
  // Appends the event's command to the pipeline; or, not ok, the event's result unsent.
  virtual Status Append(const Event& e) = 0;
  // The command and key, for error messages.
  virtual std::string What(const Event& e) const = 0;

  void AppendArgv(const std::vector<std::string_view>& args) {
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

  // Without a delivery timeout, how long a reply may take before the link counts as broken.
  static constexpr Duration kReplyTimeout{10000};

  SinkOptions options_;
  RedisEndpoint endpoint_;
  RedisConn conn_;
};

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
    return InvalidArgumentError("redis-cache sink: unknown parameter '" + key +
                                "' (known: db, delete_on, ttl)");
  }

  Status Append(const Event& e) override {
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

  std::string What(const Event& e) const override { return "the cache update of " + Key(e); }

  std::string Key(const Event& e) const {
    return endpoint_.stream + ":" + e.aggregate_type + ":" + e.aggregate_id;
  }

  std::set<std::string> delete_on_;
  std::string ttl_ = "0";
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

std::unique_ptr<Sink> MakeRedisCacheSink(const SinkOptions& options) {
  return std::make_unique<RedisCacheSink>(options);
}

}  // namespace courier
