// The base of the Redis sinks (redis.cc: Streams; redis_cache.cc: the cache): one command per
// event, pipelined in order on one connection, each event acked by its reply.
//
// Thread-safety: a sink is used by one relay thread.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "brokers/redis/redis.h"
#include "brokers/sink.h"

namespace courier {

// Pipelines one command per event on one connection, in order, and reads the replies: an
// event is acked by a reply that is not an error.
class RedisPipelineSink : public Sink {
 public:
  explicit RedisPipelineSink(SinkOptions options) : options_(std::move(options)) {}

  Status Configure() override;
  // The server may be away now; Publish connects (and reconnects) as needed.
  Status Open() override { return Configure(); }
  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override;
  std::string Describe() const override;

 protected:
  // A URL parameter other than db; kInvalidArgument for an unknown one.
  virtual Status Setting(const std::string& key, const std::string& value) = 0;
  // Appends the event's command to the pipeline; or, not ok, the event's result unsent.
  virtual Status Append(const Event& e) = 0;
  // The command and key, for error messages.
  virtual std::string What(const Event& e) const = 0;

  void AppendArgv(const std::vector<std::string_view>& args);

  // Without a delivery timeout, how long a reply may take before the link counts as broken.
  static constexpr Duration kReplyTimeout{10000};

  SinkOptions options_;
  RedisEndpoint endpoint_;
  RedisConn conn_;
};

}  // namespace courier
