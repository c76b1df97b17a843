#include "brokers/registry.h"

#include "core/url.h"

namespace courier {
namespace {

// One entry per broker. The order is the order of the lists in errors and help.
const std::vector<Broker>& Table() {
  // clang-format off
  static const std::vector<Broker> table = {
      // name, schemes, sink URL, make sink, tail URL, consume URL, make reader
      {"kafka", {"kafka"}, "kafka://host:port/topic", MakeKafkaSink,
       "kafka://host:port/TOPIC", "kafka://host:port/TOPIC", MakeKafkaReader},
      {"redis", {"redis"}, "redis://host:port/stream", MakeRedisSink,
       "redis://host:port/STREAM", "redis://host:port/STREAM", MakeRedisReader},
      {"redis-cache", {"redis-cache"}, "redis-cache://host:port/prefix", MakeRedisCacheSink},
      {"nats", {"nats", "nats+tls"}, "nats[+tls]://host:port/subject", MakeNatsSink,
       "nats[+tls]://host:port/SUBJECT", "nats[+tls]://host:port/SUBJECT", MakeNatsReader},
      {"amqp", {"amqp", "amqps"}, "amqp[s]://host:port/vhost/exchange", MakeAmqpSink,
       "amqp[s]://host:port/VHOST/EXCHANGE (new events), "
       "amqp[s]://host:port/VHOST/?queue=NAME (a queue, left as it is)",
       "amqp[s]://host:port/VHOST/?queue=NAME", MakeAmqpReader},
      {"http", {"http", "https"}, "http(s)://host/path", MakeHttpSink},
      {"file", {"file"}, "file:///path/events.jsonl", MakeFileSink,
       "file:///path", "", MakeFileReader},
      {"groonga", {"groonga", "groonga+https"}, "groonga[+https]://host:port/prefix",
       MakeGroongaSink},
  };
  // clang-format on
  return table;
}

// "a, b or c".
std::string JoinOr(const std::vector<std::string_view>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " or " : ", ";
    out += items[i];
  }
  return out;
}

}  // namespace

std::span<const Broker> Brokers() { return Table(); }

const Broker* FindBroker(std::string_view scheme) {
  for (const Broker& b : Table()) {
    for (std::string_view s : b.schemes) {
      if (s == scheme) return &b;
    }
  }
  return nullptr;
}

std::string SinkUsages() {
  std::vector<std::string_view> usages;
  for (const Broker& b : Table()) {
    if (b.make_sink != nullptr) usages.push_back(b.sink_usage);
  }
  return JoinOr(usages);
}

std::string TailUsages() {
  std::vector<std::string_view> usages;
  for (const Broker& b : Table()) {
    if (!b.tail_usage.empty()) usages.push_back(b.tail_usage);
  }
  return JoinOr(usages);
}

std::string GroupUsages() {
  std::vector<std::string_view> usages;
  for (const Broker& b : Table()) {
    if (!b.group_usage.empty()) usages.push_back(b.group_usage);
  }
  return JoinOr(usages);
}

Result<std::unique_ptr<Sink>> MakeSink(const SinkOptions& options) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options.url));
  const Broker* broker = FindBroker(url.scheme);
  if (broker == nullptr || broker->make_sink == nullptr) {
    return InvalidArgumentError("unknown sink scheme '" + url.scheme + "' in " +
                                RedactUrl(options.url) + "; expected " + SinkUsages());
  }
  return broker->make_sink(options);
}

Status CheckSink(const SinkOptions& options) {
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Sink> sink, MakeSink(options));
  return sink->Configure();
}

Result<std::unique_ptr<Reader>> MakeReader(const ReaderOptions& options, std::string_view command) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options.url));
  const Broker* broker = FindBroker(url.scheme);
  const bool group = !options.group.empty();
  if (broker == nullptr || broker->make_reader == nullptr ||
      (group ? broker->group_usage : broker->tail_usage).empty()) {
    if (group) {
      return InvalidArgumentError(std::string(command) + " reads " + GroupUsages() + ", not '" +
                                  url.scheme + "://'");
    }
    return InvalidArgumentError(std::string(command) + " cannot read '" + url.scheme +
                                "://' URLs; expected " + TailUsages());
  }
  return broker->make_reader(options);
}

}  // namespace courier
