// Redis Streams' readers (brokers/reader.h): a consumer group for `courier consume`, and
// XREAD from the oldest entry or from new ones for `courier tail` and the tests' checks.
//
// Thread-safety: one thread.
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <deque>

#include "brokers/reader.h"
#include "brokers/redis/redis.h"

namespace courier {
namespace {

// A Redis Streams consumer group named after the consumer; each process reads as its own
// group member, takes over entries other members left pending for `claim_idle`, and XACKs
// after the commit.
class RedisGroupReader final : public Reader {
 public:
  Status Open(const std::string& url, const std::string& group, Duration claim_idle) {
    COURIER_ASSIGN_OR_RETURN(endpoint_, ParseRedisUrl(url));
    if (endpoint_.stream.find('{') != std::string::npos) {
      return InvalidArgumentError("consume needs a concrete stream: redis://host:port/STREAM");
    }
    group_ = group;
    member_ = group + "-" + std::to_string(::getpid());
    claim_idle_ = claim_idle;
    return Status::Ok();
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    if (buffer_.empty()) COURIER_RETURN_IF_ERROR(Fill(timeout));
    if (buffer_.empty()) return std::optional<Message>();
    Message d = std::move(buffer_.front());
    buffer_.pop_front();
    return std::optional<Message>(std::move(d));
  }

  Status Ack(const Message& d) override {
    COURIER_RETURN_IF_ERROR(Connect());
    auto* reply = static_cast<redisReply*>(redisCommand(
        conn_.get(), "XACK %s %s %s", endpoint_.stream.c_str(), group_.c_str(), d.id.c_str()));
    if (reply == nullptr) {
      conn_.reset();
      return RetriableError("redis XACK: connection lost");
    }
    freeReplyObject(reply);
    return Status::Ok();
  }

 private:
  Status Connect() {
    if (conn_) return Status::Ok();
    // Replies wait up to the XREADGROUP block; the connection's own timeout must be longer.
    COURIER_ASSIGN_OR_RETURN(conn_, ConnectRedis(endpoint_, Duration(10000)));
    auto* reply = static_cast<redisReply*>(redisCommand(
        conn_.get(), "XGROUP CREATE %s %s 0 MKSTREAM", endpoint_.stream.c_str(), group_.c_str()));
    if (reply == nullptr) {
      conn_.reset();
      return RetriableError("redis XGROUP CREATE: connection lost");
    }
    const bool exists = reply->type == REDIS_REPLY_ERROR &&
                        std::string_view(reply->str, reply->len).substr(0, 9) == "BUSYGROUP";
    const bool failed = reply->type == REDIS_REPLY_ERROR && !exists;
    const std::string error = failed ? std::string(reply->str, reply->len) : "";
    freeReplyObject(reply);
    if (failed) return InvalidArgumentError("redis refused XGROUP CREATE: " + error);
    return Status::Ok();
  }

  Status Fill(Duration timeout) {
    Status st = Connect();
    if (!st.ok()) return st;
    // Entries a dead member read and never acknowledged come first.
    auto claimed =
        ReadRedisEntries(conn_.get(), {"XAUTOCLAIM", endpoint_.stream, group_, member_,
                                       std::to_string(claim_idle_.count()), "0-0", "COUNT", "100"});
    if (claimed.ok() && claimed->empty()) {
      claimed = ReadRedisEntries(
          conn_.get(), {"XREADGROUP", "GROUP", group_, member_, "COUNT", "100", "BLOCK",
                        std::to_string(timeout.count()), "STREAMS", endpoint_.stream, ">"});
    }
    if (!claimed.ok()) {
      conn_.reset();
      return claimed.status();
    }
    for (RedisEntry& e : *claimed) {
      Message d;
      d.topic = endpoint_.stream;
      d.id = std::move(e.id);
      d.event = std::move(e.event);
      buffer_.push_back(std::move(d));
    }
    return Status::Ok();
  }

  RedisEndpoint endpoint_;
  RedisConn conn_;
  std::string group_;
  std::string member_;
  Duration claim_idle_{30000};
  std::deque<Message> buffer_;
};

// A stream read with XREAD, no group: from its oldest entry or only entries added after the
// first read.
class RedisTailReader final : public Reader {
 public:
  Status Open(const ReaderOptions& o) {
    COURIER_ASSIGN_OR_RETURN(endpoint_, ParseRedisUrl(o.url));
    if (endpoint_.stream.find('{') != std::string::npos || endpoint_.stream.empty()) {
      return InvalidArgumentError("tail needs a concrete stream: redis://host:port/STREAM");
    }
    // Replies wait up to the read's block; the connection's own timeout must be longer.
    COURIER_ASSIGN_OR_RETURN(conn_, ConnectRedis(endpoint_, Duration(5000)));
    after_ = o.from_beginning || o.to_end ? "0" : "$";
    return Status::Ok();
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    if (buffer_.empty()) {
      COURIER_ASSIGN_OR_RETURN(std::vector<RedisEntry> entries,
                               ReadRedisStream(conn_.get(), endpoint_.stream, after_, timeout));
      for (RedisEntry& e : entries) {
        after_ = e.id;
        Message m;
        m.where = "{\"stream\":\"" + endpoint_.stream + "\",\"id\":\"" + e.id + "\"}";
        m.topic = endpoint_.stream;
        m.id = std::move(e.id);
        m.event = std::move(e.event);
        buffer_.push_back(std::move(m));
      }
    }
    if (buffer_.empty()) return std::optional<Message>();
    Message m = std::move(buffer_.front());
    buffer_.pop_front();
    return std::optional<Message>(std::move(m));
  }

  Status Ack(const Message&) override { return Status::Ok(); }

 private:
  RedisEndpoint endpoint_;
  RedisConn conn_;
  std::string after_;  // the last entry's id, "0" (the beginning) or "$" (new ones)
  std::deque<Message> buffer_;
};

}  // namespace

Result<std::unique_ptr<Reader>> MakeRedisReader(const ReaderOptions& options) {
  if (options.group.empty()) {
    auto reader = std::make_unique<RedisTailReader>();
    COURIER_RETURN_IF_ERROR(reader->Open(options));
    return std::unique_ptr<Reader>(std::move(reader));
  }
  auto reader = std::make_unique<RedisGroupReader>();
  COURIER_RETURN_IF_ERROR(reader->Open(options.url, options.group, options.claim_idle));
  return std::unique_ptr<Reader>(std::move(reader));
}

}  // namespace courier
