// The broker registry: every scheme finds its broker's sink (and reader, where the broker can
// be read), and an unknown scheme is one error that lists the known ones.
#include "brokers/registry.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "support/matchers.h"

namespace courier {
namespace {

const char* const kSinkList =
    "kafka://host:port/topic, redis://host:port/stream, redis-cache://host:port/prefix, "
    "nats[+tls]://host:port/subject, amqp[s]://host:port/vhost/exchange, http(s)://host/path or "
    "file:///path/events.jsonl";

TEST(Registry, EverySchemeResolvesToItsBroker) {
  const std::pair<const char*, const char*> schemes[] = {
      {"kafka", "kafka"}, {"redis", "redis"},   {"redis-cache", "redis-cache"},
      {"nats", "nats"},   {"nats+tls", "nats"}, {"amqp", "amqp"},
      {"amqps", "amqp"},  {"http", "http"},     {"https", "http"},
      {"file", "file"}};
  for (const auto& [scheme, name] : schemes) {
    const Broker* b = FindBroker(scheme);
    ASSERT_NE(b, nullptr) << scheme;
    EXPECT_EQ(b->name, name) << scheme;
  }
  std::set<std::string> listed;
  for (const Broker& b : Brokers()) {
    EXPECT_NE(b.make_sink, nullptr) << b.name;
    EXPECT_FALSE(b.sink_usage.empty()) << b.name;
    EXPECT_EQ(b.make_reader == nullptr, b.reader_usage.empty()) << b.name;
    for (std::string_view s : b.schemes) {
      EXPECT_TRUE(listed.insert(std::string(s)).second) << "two brokers answer to " << s;
      EXPECT_EQ(FindBroker(s), &b) << s;
    }
  }
  EXPECT_EQ(listed.size(), std::size(schemes));
  EXPECT_EQ(FindBroker("mqtt"), nullptr);
}

TEST(Registry, EverySinkUrlMakesItsSinkWithoutConnecting) {
  for (const char* url :
       {"kafka://127.0.0.1:1/t", "redis://127.0.0.1:1/s", "redis-cache://127.0.0.1:1/p",
        "nats://127.0.0.1:1/s", "nats+tls://127.0.0.1:1/s", "amqp://127.0.0.1:1/%2F/x",
        "amqps://127.0.0.1:1/%2F/x", "http://127.0.0.1:1/hook", "https://127.0.0.1:1/hook",
        "file:///tmp/courier-registry-test.jsonl"}) {
    auto sink = MakeSink(SinkOptions{.url = url});
    ASSERT_OK(sink);
    EXPECT_FALSE((*sink)->Describe().empty()) << url;
  }
}

TEST(Registry, ReadableBrokersAreKafkaRedisNatsAndAmqp) {
  std::set<std::string> readable;
  for (const Broker& b : Brokers()) {
    if (b.make_reader != nullptr) readable.insert(std::string(b.name));
  }
  EXPECT_EQ(readable, (std::set<std::string>{"amqp", "kafka", "nats", "redis"}));
  EXPECT_EQ(ReaderUsages(),
            "kafka://host:port/TOPIC, redis://host:port/STREAM, nats[+tls]://host:port/SUBJECT "
            "or amqp[s]://host:port/VHOST/?queue=NAME");
}

TEST(Registry, UnknownSinkSchemeIsOneErrorListingTheKnownOnes) {
  auto sink = MakeSink(SinkOptions{.url = "mqtt://h/x"});
  EXPECT_STATUS(sink, StatusCode::kInvalidArgument);
  EXPECT_EQ(sink.status().message(),
            "unknown sink scheme 'mqtt' in mqtt://h/x; expected " + std::string(kSinkList));
  EXPECT_EQ(SinkUsages(), kSinkList);
  EXPECT_STATUS(CheckSink(SinkOptions{.url = "mqtt://h/x"}), StatusCode::kInvalidArgument);
}

TEST(Registry, UnknownReaderSchemeIsOneErrorListingTheReadableOnes) {
  for (const char* url : {"mqtt://h/x", "file:///tmp/x.jsonl", "https://h/hook"}) {
    auto reader = MakeReader(ReaderOptions{.url = url, .group = "g"}, "consume");
    EXPECT_STATUS(reader, StatusCode::kInvalidArgument);
    const std::string scheme = std::string(url).substr(0, std::string(url).find(':'));
    EXPECT_EQ(reader.status().message(),
              "consume reads " + ReaderUsages() + ", not '" + scheme + "://'");
  }
}

// What a reader refuses in its URL it refuses before connecting (the ports are closed).
TEST(Registry, ReadersRefuseTemplatesAndMissingQueuesWithoutConnecting) {
  const std::pair<const char*, const char*> cases[] = {
      {"kafka://127.0.0.1:1/{aggregate_type}", "consume needs concrete topics"},
      {"redis://127.0.0.1:1/{aggregate_type}", "consume needs a concrete stream"},
      {"nats://127.0.0.1:1/{aggregate_type}", "consume needs a concrete subject"},
      {"amqp://127.0.0.1:1/%2F/x", "consume reads a RabbitMQ queue"}};
  for (const auto& [url, error] : cases) {
    auto reader = MakeReader(ReaderOptions{.url = url, .group = "g"}, "consume");
    EXPECT_STATUS(reader, StatusCode::kInvalidArgument);
    EXPECT_EQ(reader.status().message().rfind(error, 0), 0u) << reader.status().message();
  }
}

}  // namespace
}  // namespace courier
