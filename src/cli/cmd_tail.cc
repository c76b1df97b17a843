// `courier tail`: print the events arriving at a sink, one JSON line each.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "brokers/amqp/amqp.h"
#include "brokers/kafka/kafka_reader.h"
#include "brokers/nats/nats.h"
#include "brokers/redis/redis.h"
#include "cli/commands.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/url.h"

namespace courier::cli {
namespace {

int TailKafka(const TailFlags& f, const Url& url) {
  std::vector<std::string> topics;
  std::stringstream ss(url.path);
  for (std::string t; std::getline(ss, t, ',');) {
    if (!t.empty()) topics.push_back(t);
  }
  if (topics.empty() || url.path.find('{') != std::string::npos) {
    return Fail(
        InvalidArgumentError("tail needs a concrete topic: kafka://host:port/TOPIC[,TOPIC]"));
  }
  auto reader = KafkaReader::Open(url.hosts, topics, f.from_beginning || f.exit_at_end, url.query);
  if (!reader.ok()) return Fail(reader.status());
  // Like kcat: a topic that is not there is an error (a typo would otherwise print nothing,
  // forever), unless asked to wait for it. Either way the reader creates no topic.
  auto missing = (*reader)->MissingTopics();
  if (!missing.ok()) return Fail(missing.status());
  if (!missing->empty()) {
    std::string names;
    for (const std::string& t : *missing) names += (names.empty() ? "" : ", ") + t;
    if (!f.wait_for_topic) {
      return Fail(
          NotFoundError("no topic " + names + " on kafka://" + url.hosts +
                        " (tail creates none; --wait-for-topic waits until it is created)"));
    }
    log::Info("waiting for the topic to be created", {{"topics", names}});
    while (!missing->empty() && Clock::Real().SleepFor(Duration(500), StopRequest())) {
      missing = (*reader)->MissingTopics();
      if (!missing.ok()) return Fail(missing.status());
    }
    if (StopRequest().requested()) return 0;
    // Everything in a topic created after the start is new: read it from its beginning.
    reader = KafkaReader::Open(url.hosts, topics, /*from_beginning=*/true, url.query);
    if (!reader.ok()) return Fail(reader.status());
  }
  long long printed = 0;
  auto print = [&](const KafkaRecord& r) {
    const std::string extra = "{\"topic\":\"" + r.topic +
                              "\",\"partition\":" + std::to_string(r.partition) +
                              ",\"offset\":" + std::to_string(r.offset) + "}";
    std::printf("%s\n", EventToJsonLine(r.event, extra).c_str());
    std::fflush(stdout);
    ++printed;
  };
  if (f.exit_at_end) {
    auto records = (*reader)->ReadToEnd(std::chrono::seconds(60));
    if (!records.ok()) return Fail(records.status());
    for (const KafkaRecord& r : *records) {
      if (f.limit > 0 && printed >= f.limit) break;
      print(r);
    }
    return 0;
  }
  bool following = false;
  while (!StopRequest().requested() && (f.limit == 0 || printed < f.limit)) {
    auto r = (*reader)->Poll(Duration(200));
    if (!following && (*reader)->assigned_partitions() > 0) {
      log::Info("following",
                {{"topics", url.path}, {"partitions", (*reader)->assigned_partitions()}});
      following = true;
    }
    if (!r.ok()) {
      log::Warn("tail", {{"error", r.status().message()}});
      Clock::Real().SleepFor(Duration(500), StopRequest());
      continue;
    }
    if (r->has_value()) print(**r);
  }
  return 0;
}

int TailFile(const TailFlags& f, const Url& url) {
  const std::string path = "/" + url.path;
  std::ifstream in(path);
  if (!in) return Fail(InvalidArgumentError("cannot open " + path));
  if (!f.from_beginning && !f.exit_at_end) in.seekg(0, std::ios::end);
  long long printed = 0;
  std::string line;
  while (!StopRequest().requested() && (f.limit == 0 || printed < f.limit)) {
    if (std::getline(in, line)) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
      ++printed;
      continue;
    }
    if (f.exit_at_end) break;
    in.clear();
    Clock::Real().SleepFor(Duration(100), StopRequest());
  }
  return 0;
}

int TailRedis(const TailFlags& f) {
  auto endpoint = ParseRedisUrl(f.url);
  if (!endpoint.ok()) return Fail(endpoint.status());
  if (endpoint->stream.find('{') != std::string::npos || endpoint->stream.empty()) {
    return Fail(InvalidArgumentError("tail needs a concrete stream: redis://host:port/STREAM"));
  }
  // Replies wait up to the 200 ms block; the connection's own timeout must be longer.
  auto conn = ConnectRedis(*endpoint, Duration(5000));
  if (!conn.ok()) return Fail(conn.status());
  std::string after = f.from_beginning || f.exit_at_end ? "0" : "$";
  long long printed = 0;
  while (!StopRequest().requested() && (f.limit == 0 || printed < f.limit)) {
    auto entries = ReadRedisStream(conn->get(), endpoint->stream, after, Duration(200));
    if (!entries.ok()) return Fail(entries.status());
    if (entries->empty() && f.exit_at_end) break;
    for (const RedisEntry& e : *entries) {
      if (f.limit > 0 && printed >= f.limit) break;
      after = e.id;
      const std::string extra = "{\"stream\":\"" + endpoint->stream + "\",\"id\":\"" + e.id + "\"}";
      std::printf("%s\n", EventToJsonLine(e.event, extra).c_str());
      std::fflush(stdout);
      ++printed;
    }
  }
  return 0;
}

// Prints what a reader with Next(timeout) -> Result<optional<Event>> yields (NATS, RabbitMQ),
// one JSON line each with `extra`, until the limit, the end (--exit-at-end) or a stop.
template <typename Reader>
int PrintEvents(Reader& reader, const std::string& extra, const TailFlags& f) {
  long long printed = 0;
  while (!StopRequest().requested() && (f.limit == 0 || printed < f.limit)) {
    auto next = reader.Next(Duration(f.exit_at_end ? 1000 : 200));
    if (!next.ok()) return Fail(next.status());
    if (!next->has_value()) {
      if (f.exit_at_end) break;
      continue;
    }
    std::printf("%s\n", EventToJsonLine(**next, extra).c_str());
    std::fflush(stdout);
    ++printed;
  }
  return 0;
}

int TailNats(const TailFlags& f) {
  auto endpoint = ParseNatsUrl(f.url);
  if (!endpoint.ok()) return Fail(endpoint.status());
  if (endpoint->subject.find('{') != std::string::npos) {
    return Fail(InvalidArgumentError("tail needs a concrete subject: nats://host:port/SUBJECT"));
  }
  auto reader = NatsReader::Open(*endpoint, f.from_beginning || f.exit_at_end);
  if (!reader.ok()) return Fail(reader.status());
  return PrintEvents(**reader, "{\"subject\":\"" + endpoint->subject + "\"}", f);
}

int TailAmqp(const TailFlags& f) {
  auto endpoint = ParseAmqpUrl(f.url);
  if (!endpoint.ok()) return Fail(endpoint.status());
  if (endpoint->queue.empty() && (f.from_beginning || f.exit_at_end)) {
    return Fail(InvalidArgumentError(
        "an exchange keeps no history: --from-beginning and --exit-at-end need a queue to "
        "read, amqp://host:port/VHOST/?queue=NAME (its messages stay in it)"));
  }
  auto reader = AmqpReader::Open(*endpoint);
  if (!reader.ok()) return Fail(reader.status());
  const std::string extra = endpoint->queue.empty()
                                ? "{\"exchange\":\"" + endpoint->exchange + "\"}"
                                : "{\"queue\":\"" + endpoint->queue + "\"}";
  return PrintEvents(**reader, extra, f);
}

}  // namespace

CLI::App* AddTailCommand(CLI::App& app, TailFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "tail",
      "Print events arriving at a sink, one JSON line each (kafka://host:port/TOPIC, "
      "redis://host:port/STREAM, nats://host:port/SUBJECT, amqp://host:port/VHOST/EXCHANGE "
      "(new events) or amqp://host:port/VHOST/?queue=NAME (a queue, left as it is), "
      "file:///path).");
  cmd->add_option("url", f->url, "Sink URL with a concrete topic")->type_name("URL")->required();
  cmd->add_flag("--from-beginning", f->from_beginning, "Start at the oldest event, not new ones");
  cmd->add_flag("--exit-at-end", f->exit_at_end,
                "Print everything there now (from the beginning) and exit");
  cmd->add_option("--limit", f->limit, "Exit after this many events (0: no limit)")
      ->type_name("N")
      ->check(CLI::Range(0LL, std::numeric_limits<long long>::max()));
  cmd->add_flag("--wait-for-topic", f->wait_for_topic,
                "Kafka: a topic that does not exist yet is waited for (never created), "
                "instead of exit 2");
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunTail(const TailFlags& f) {
  auto url = ParseUrl(f.url);
  if (!url.ok()) return Fail(url.status());
  if (url->scheme == "kafka") return TailKafka(f, *url);
  if (url->scheme == "redis") return TailRedis(f);
  if (url->scheme == "nats" || url->scheme == "nats+tls") return TailNats(f);
  if (url->scheme == "amqp" || url->scheme == "amqps") return TailAmqp(f);
  if (url->scheme == "file") return TailFile(f, *url);
  return Fail(
      InvalidArgumentError("tail cannot read '" + url->scheme +
                           "://' URLs; expected kafka://host:port/TOPIC, redis://host:port/STREAM, "
                           "nats://host:port/SUBJECT, amqp://host:port/VHOST/EXCHANGE or "
                           "file:///path"));
}

}  // namespace courier::cli
