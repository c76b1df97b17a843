// CommandLog (include/courier/command_log.h): one idempotent producer shared by every caller,
// a thread that serves its delivery reports, and per Append a slot the report fills in.
//
// The producer's settings, URL form, headers and topic templates are the relay's Kafka sink's
// (brokers/kafka): what a command handler writes is read by every courier consumer as if the
// relay had published it.
#include "courier/command_log.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "brokers/kafka/kafka_common.h"
#include "brokers/sink.h"
#include "core/clock.h"
#include "core/event.h"
#include "core/log.h"
#include "core/url.h"
#include "core/uuid.h"

namespace courier {

namespace {

// What one Append waits for: filled in by the delivery report, which wakes that Append alone
// (one condition for all woke every waiting caller on each report: 64 concurrent callers
// appended at half the rate of one).
struct Slot {
  std::condition_variable reported;
  bool done = false;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
};

}  // namespace

struct CommandLog::Impl {
  CommandLogOptions options;
  std::string topic_template;
  KafkaHandle producer;
  std::thread poller;
  std::atomic<bool> stopping{false};

  std::mutex mu;
  uint64_t next_slot = 1;              // guarded by mu
  std::map<uint64_t, Slot> slots;      // guarded by mu; an Append that gave up erased its slot
  std::set<std::string> known_topics;  // guarded by mu
  std::string last_error;              // guarded by mu: the client's latest error, for messages

  Status TimedOut(const std::string& where, const std::string& last) const {
    return RetriableError("command log: no acknowledgement from Kafka within " +
                          std::to_string(options.timeout.count()) +
                          " ms (is the broker up?); the event may still be written: send it "
                          "again with the same event_id" +
                          where + (last.empty() ? "" : "; last error: " + last));
  }

  // librdkafka runs the callbacks inside rd_kafka_poll, on the poller thread.
  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    const auto id = reinterpret_cast<uintptr_t>(msg->_private);
    std::lock_guard lock(self->mu);
    auto it = self->slots.find(id);
    if (it == self->slots.end()) return;  // its Append stopped waiting
    Slot& slot = it->second;
    slot.done = true;
    slot.err = msg->err;
    slot.topic = rd_kafka_topic_name(msg->rkt);
    slot.partition = msg->partition;
    slot.offset = msg->offset;
    slot.reported.notify_one();
  }

  static void OnError(rd_kafka_t*, int err, const char* reason, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    {
      std::lock_guard lock(self->mu);
      self->last_error = reason;
    }
    if (static_cast<rd_kafka_resp_err_t>(err) == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
      log::Warn("command log: every Kafka broker is down; appends fail after their timeout",
                {{"error", reason}});
    }
  }
};

CommandLog::CommandLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CommandLog::~CommandLog() {
  // What was acknowledged is the broker's; what is still in flight had no answer from Append
  // (or a timeout): nothing to wait for beyond a short flush.
  rd_kafka_flush(impl_->producer.get(), 1000);
  impl_->stopping = true;
  impl_->poller.join();
  impl_->producer.reset();  // before the slots and the mutex its callbacks would touch
}

Result<std::unique_ptr<CommandLog>> CommandLog::Open(const CommandLogOptions& options) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options.url));
  if (url.scheme != "kafka") {
    return InvalidArgumentError("command log URL " + RedactUrl(options.url) +
                                " is not kafka://host:port/topic");
  }
  if (url.hosts.empty()) {
    return InvalidArgumentError("command log URL " + RedactUrl(options.url) +
                                " has no broker; write kafka://host:port/topic");
  }
  if (options.timeout <= std::chrono::milliseconds(0)) {
    return InvalidArgumentError("command log timeout must be positive: an append never hangs");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->topic_template = url.path.empty() ? "{aggregate_type}" : url.path;
  // librdkafka itself fails a message it could not deliver within the timeout (a delivery
  // report with _MSG_TIMED_OUT), so a slot is always answered; the wait in Append has its own
  // deadline as well.
  auto props = KafkaProducerSettings(url.hosts, options.timeout);
  // A command waits for its ack: send at once rather than linger for a fuller batch.
  props.emplace_back("linger.ms", "0");
  // ...and without Nagle's delay of small writes, which would hold each lone request back
  // until the previous one is acknowledged at the TCP level.
  props.emplace_back("socket.nagle.disable", "true");
  for (const auto& kv : url.query) props.push_back(kv);
  COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf(props));
  rd_kafka_conf_set_opaque(conf.get(), impl.get());
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &Impl::OnDelivery);
  rd_kafka_conf_set_error_cb(conf.get(), &Impl::OnError);
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
  if (rk == nullptr) return InvalidArgumentError(std::string("command log producer: ") + err);
  conf.release();  // owned by rk now
  impl->producer.reset(rk);
  Impl* raw = impl.get();
  impl->poller = std::thread([raw] {
    while (!raw->stopping) rd_kafka_poll(raw->producer.get(), 100);
  });
  return std::unique_ptr<CommandLog>(new CommandLog(std::move(impl)));
}

std::string CommandLog::NewEventId() { return NewUuidV7(); }

Result<LogPosition> CommandLog::Append(const CommandEvent& command) {
  if (command.stream_type.empty() || command.stream_id.empty() || command.event_type.empty()) {
    return InvalidArgumentError(
        "command log: an event needs stream_type, stream_id and event_type");
  }
  Impl& impl = *impl_;
  const TimePoint deadline = Clock::Real().Now() + impl.options.timeout;
  Event e;
  e.event_id = command.event_id.empty() ? NewUuidV7() : command.event_id;
  e.aggregate_type = command.stream_type;
  e.aggregate_id = command.stream_id;
  e.event_type = command.event_type;
  e.payload = command.payload;
  e.headers = command.headers;
  e.created_at_us = UnixMicrosNow();
  const std::string topic = ExpandTemplate(impl.topic_template, e);
  rd_kafka_t* rk = impl.producer.get();

  bool warm_up = false;
  uint64_t id = 0;
  {
    std::lock_guard lock(impl.mu);
    warm_up = impl.known_topics.insert(topic).second;
    id = impl.next_slot++;
    impl.slots.try_emplace(id);
  }
  auto forget = [&] {
    std::lock_guard lock(impl.mu);
    impl.slots.erase(id);
  };
  if (warm_up) {
    FetchTopicMetadata(rk, topic, std::min<Duration>(Duration(5000), impl.options.timeout / 2));
  }

  KafkaHeaders headers = MakeEventHeaders(e);
  rd_kafka_resp_err_t err;
  while (true) {
    err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_KEY(e.aggregate_id.data(), e.aggregate_id.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(e.payload.data()), e.payload.size()),
        RD_KAFKA_V_TIMESTAMP(e.created_at_us / 1000), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(headers.get()),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(id))), RD_KAFKA_V_END);
    // A full local queue drains as the poller serves reports; wait for room until the deadline.
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || Clock::Real().Now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::string where = " (topic " + topic + ", event_id " + e.event_id + ")";
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    forget();
    std::string message =
        std::string("command log: Kafka refused the event: ") + rd_kafka_err2str(err) + where;
    if (IsPermanentKafkaError(err)) return RejectedError(std::move(message));
    return RetriableError(std::move(message));
  }
  headers.release();  // owned by the message now

  rd_kafka_resp_err_t slot_err;
  LogPosition position;
  {
    std::unique_lock lock(impl.mu);
    Slot& slot = impl.slots.at(id);
    // librdkafka answers by the timeout itself; a second more covers its timer's granularity.
    const bool answered = slot.reported.wait_until(lock, deadline + std::chrono::seconds(1),
                                                   [&] { return slot.done; });
    slot_err = slot.err;
    position = LogPosition{slot.topic, slot.partition, slot.offset, e.event_id};
    impl.slots.erase(id);
    if (!answered) return impl.TimedOut(where, impl.last_error);
  }
  if (slot_err == RD_KAFKA_RESP_ERR_NO_ERROR) return position;
  std::string message = std::string("command log: ") + rd_kafka_err2str(slot_err) + where;
  char fatal[256];
  if (rd_kafka_fatal_error(rk, fatal, sizeof fatal) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return FatalError(message + "; the producer hit a fatal error (" + fatal +
                      "): open a new CommandLog");
  }
  if (IsPermanentKafkaError(slot_err)) return RejectedError(std::move(message));
  if (slot_err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT) {
    std::lock_guard lock(impl.mu);
    return impl.TimedOut(where, impl.last_error);
  }
  return RetriableError(std::move(message));
}

}  // namespace courier
