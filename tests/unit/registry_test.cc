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
    "nats[+tls]://host:port/subject, amqp[s]://host:port/vhost/exchange, http(s)://host/path, "
    "file:///path/events.jsonl or groonga[+https]://host:port/prefix";

TEST(Registry, EverySchemeResolvesToItsBroker) {
  const std::pair<const char*, const char*> schemes[] = {
      {"kafka", "kafka"}, {"redis", "redis"},     {"redis-cache", "redis-cache"},
      {"nats", "nats"},   {"nats+tls", "nats"},   {"amqp", "amqp"},
      {"amqps", "amqp"},  {"http", "http"},       {"https", "http"},
      {"file", "file"},   {"groonga", "groonga"}, {"groonga+https", "groonga"}};
  for (const auto& [scheme, name] : schemes) {
    const Broker* b = FindBroker(scheme);
    ASSERT_NE(b, nullptr) << scheme;
    EXPECT_EQ(b->name, name) << scheme;
  }
  std::set<std::string> listed;
  for (const Broker& b : Brokers()) {
    EXPECT_NE(b.make_sink, nullptr) << b.name;
    EXPECT_FALSE(b.sink_usage.empty()) << b.name;
    EXPECT_EQ(b.make_reader == nullptr, b.tail_usage.empty() && b.group_usage.empty()) << b.name;
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

TEST(Registry, ConsumeReadsKafkaRedisNatsAndAmqpAndTailTheFileToo) {
  std::set<std::string> groups, tails;
  for (const Broker& b : Brokers()) {
    if (!b.group_usage.empty()) groups.insert(std::string(b.name));
    if (!b.tail_usage.empty()) tails.insert(std::string(b.name));
  }
  EXPECT_EQ(groups, (std::set<std::string>{"amqp", "kafka", "nats", "redis"}));
  EXPECT_EQ(tails, (std::set<std::string>{"amqp", "file", "kafka", "nats", "redis"}));
  EXPECT_EQ(GroupUsages(),
            "kafka://host:port/TOPIC, redis://host:port/STREAM, nats[+tls]://host:port/SUBJECT "
            "or amqp[s]://host:port/VHOST/?queue=NAME");
  EXPECT_EQ(TailUsages(),
            "kafka://host:port/TOPIC, redis://host:port/STREAM, nats[+tls]://host:port/SUBJECT, "
            "amqp[s]://host:port/VHOST/EXCHANGE (new events), "
            "amqp[s]://host:port/VHOST/?queue=NAME (a queue, left as it is) or file:///path");
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
              "consume reads " + GroupUsages() + ", not '" + scheme + "://'");
  }
}

TEST(Registry, UnknownTailSchemeIsOneErrorListingTheTailableOnes) {
  for (const char* url : {"mqtt://h/x", "redis-cache://h/p", "https://h/hook"}) {
    auto reader = MakeReader(ReaderOptions{.url = url}, "tail");
    EXPECT_STATUS(reader, StatusCode::kInvalidArgument);
    const std::string scheme = std::string(url).substr(0, std::string(url).find(':'));
    EXPECT_EQ(reader.status().message(),
              "tail cannot read '" + scheme + "://' URLs; expected " + TailUsages());
  }
}

// What a reader refuses in its URL it refuses before connecting (the ports are closed).
TEST(Registry, TailReadersRefuseTemplatesAndHistoryOfAnExchangeWithoutConnecting) {
  const std::pair<const char*, const char*> cases[] = {
      {"kafka://127.0.0.1:1/{aggregate_type}", "tail needs a concrete topic"},
      {"redis://127.0.0.1:1/{aggregate_type}", "tail needs a concrete stream"},
      {"nats://127.0.0.1:1/{aggregate_type}", "tail needs a concrete subject"},
      {"amqp://127.0.0.1:1/%2F/x", "an exchange keeps no history"},
      {"file:///nonexistent/courier-registry-test.jsonl",
       "cannot open /nonexistent/courier-registry-test.jsonl"}};
  for (const auto& [url, error] : cases) {
    auto reader = MakeReader(ReaderOptions{.url = url, .from_beginning = true}, "tail");
    EXPECT_STATUS(reader, StatusCode::kInvalidArgument);
    EXPECT_EQ(reader.status().message().rfind(error, 0), 0u) << reader.status().message();
  }
}

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
