// A Sink publishes a batch of events and reports, per event, whether the destination
// durably accepted it. The relay checkpoints only what a sink reported as acked.
//
// Thread-safety: a Sink is used by one relay thread.
#pragma once

#include <memory>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier {

struct SinkOptions {
  std::string url;
  // How long one event may wait for its ack before it counts as failed (and is retried by the
  // relay later). Zero: wait until acked, however long the destination is away.
  Duration delivery_timeout{0};
  // After a stop request, how long to keep waiting for in-flight acks.
  Duration shutdown_timeout{10000};
  // Kafka: publish each batch in one transaction of this transactional.id, so that the broker
  // fences an older holder of the outbox's lease (Relay::Create derives it per outbox; the
  // URL's transactional.id overrides it, transactional=false turns transactions off). Empty:
  // an idempotent producer without transactions (no lease to fence, e.g. a SQLite outbox).
  std::string transactional_id;
};

class Sink {
 public:
  virtual ~Sink() = default;
  // Checks the URL and each of its parameters without I/O (nothing connects, no file is
  // created): kInvalidArgument naming what is wrong and how to fix it. Open() begins with it;
  // the relay's start-up and `courier config check` call it through CheckSink, so a setting
  // the sink would refuse is refused by both, before anything connects.
  virtual Status Configure() = 0;
  // Configure(), then creates clients; kInvalidArgument for a bad URL or property.
  virtual Status Open() = 0;
  // Publishes `batch` keeping per-aggregate order and returns one Status per event: ok means
  // durably acked; kRejected means refused for good (the relay parks it as a dead letter);
  // anything else means not acked (the relay will send it again later).
  // Once an event fails, refused or not, as far as the sink knows before handing the next one
  // of its aggregate to the destination, no later event of that aggregate in the batch is
  // handed over (HeldBack): under the park policy they are held behind the refused one and
  // must not reach anyone before it. What a pipelining sink sent before the refusal came back
  // is out (docs/operations.md#dead-letters).
  virtual std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) = 0;
  // The URL without secrets, for logs and dead-letter rows.
  virtual std::string Describe() const = 0;
};

// The fence check every sink makes right before each hand-off to its client library (each
// produce, XADD, publish, POST, write, pipeline flush): kFenced once the relay's lease is gone
// (lost, or its deadline passed while the process was frozen), so a relay that resumes after
// its lease ran out sends nothing more. What was handed off before cannot be recalled.
inline Status CheckFence(const StopSignal& stop) {
  if (stop.abandoned()) return FencedError("not sent: this relay's outbox lease ran out");
  return Status::Ok();
}

// The aggregates of a batch with a failed event, whose later events a sink does not send.
class HeldBack {
 public:
  // True when an earlier event of `e`'s aggregate failed; then `*result` says it was not sent.
  bool Holds(const Event& e, Status* result) const {
    if (failed_.empty() || failed_.count({e.aggregate_type, e.aggregate_id}) == 0) return false;
    *result = RetriableError("not sent: an earlier event of its aggregate failed");
    return true;
  }
  void Failed(const Event& e) { failed_.emplace(e.aggregate_type, e.aggregate_id); }

 private:
  std::set<std::pair<std::string, std::string>> failed_;
};

// The sink of the URL's broker, found in the registry by scheme (brokers/registry.h):
// kafka://host:port[,host:port]/topic-template[?librdkafka.property=value&...]
// redis://[user:password@]host:port/stream-template[?db=N&maxlen=N]
// redis-cache://[user:password@]host:port/prefix[?db=N&delete_on=Type,Type&ttl=SECONDS]
// nats://host:port[,host:port]/subject-template (JetStream)
// amqp://[user:password@]host:port/vhost/exchange[?routing_key=template] (RabbitMQ)
// http(s)://host:port/path-template (webhook: one POST per event)
// file:///path/events.jsonl
// groonga[+https]://host:port[/prefix][?tombstone_ttl=SECONDS] (search index of captured tables)
Result<std::unique_ptr<Sink>> MakeSink(const SinkOptions& options);

// MakeSink(options), then Configure(): everything the sink refuses that is known without I/O
// (what `courier config check` and the relay's start-up check).
Status CheckSink(const SinkOptions& options);

// Replaces {aggregate_type} and {event_type} in `tmpl`.
std::string ExpandTemplate(std::string_view tmpl, const Event& event);

// One per broker, each in its folder; the registry names them.
std::unique_ptr<Sink> MakeKafkaSink(const SinkOptions& options);
std::unique_ptr<Sink> MakeFileSink(const SinkOptions& options);
// The absolute path a file:// sink URL names, as the file sink and its reader check it: no
// host (file://relative.jsonl names the host 'relative.jsonl'), a path, no parameter.
Result<std::string> FileSinkPath(const std::string& url);
std::unique_ptr<Sink> MakeRedisSink(const SinkOptions& options);
std::unique_ptr<Sink> MakeRedisCacheSink(const SinkOptions& options);
std::unique_ptr<Sink> MakeHttpSink(const SinkOptions& options);
std::unique_ptr<Sink> MakeNatsSink(const SinkOptions& options);
std::unique_ptr<Sink> MakeAmqpSink(const SinkOptions& options);
std::unique_ptr<Sink> MakeGroongaSink(const SinkOptions& options);
// Several sinks as one: an event is acked when every sink acked it (brokers/fanout/fanout.cc).
std::unique_ptr<Sink> MakeFanOutSink(std::vector<std::unique_ptr<Sink>> sinks);

}  // namespace courier
