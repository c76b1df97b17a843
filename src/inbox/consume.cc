#include "inbox/consume.h"

#include <amqp.h>
#include <hiredis/hiredis.h>
#include <nats/nats.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <optional>
#include <sstream>

#include "brokers/amqp/amqp.h"
#include "brokers/http/http.h"
#include "brokers/kafka/kafka_reader.h"
#include "brokers/nats/nats.h"
#include "brokers/redis/redis.h"
#include "core/backoff.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/subprocess.h"
#include "core/url.h"
#include "courier/inbox.h"
#include "inbox/inbox_db.h"
#include "sources/source.h"

namespace courier {
namespace {

// One message taken from the broker, acknowledged once its event is handled or parked.
struct Delivery {
  Event event;
  std::string topic;  // Kafka topic, or the Redis entry id
  int32_t partition = 0;
  int64_t offset = 0;             // Kafka offset; AMQP delivery tag
  uint64_t generation = 0;        // AMQP: the connection the tag belongs to
  std::shared_ptr<void> message;  // NATS: the message to acknowledge
};

class MessageSource {
 public:
  virtual ~MessageSource() = default;
  virtual Result<std::optional<Delivery>> Next(Duration timeout) = 0;
  virtual Status Ack(const Delivery& d) = 0;
};

// A Kafka consumer group named after the consumer; offsets are committed only after the
// event's transaction committed, one by one.
class KafkaMessages final : public MessageSource {
 public:
  Status Open(const Url& url, const std::string& group) {
    std::vector<std::pair<std::string, std::string>> props = {
        {"bootstrap.servers", url.hosts},
        {"group.id", group},
        {"enable.auto.commit", "false"},
        {"auto.offset.reset", "earliest"},
        // A restarted consumer gets its partitions within seconds: the group hands a stopped
        // member's partitions on after this long (the dev broker, after a member left, also
        // waits this long less a second for the others; librdkafka's 45 s made a restart sit
        // idle ~43 s). The URL's query may set both.
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1000"},
    };
    props.insert(props.end(), url.query.begin(), url.query.end());
    COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf(props));
    char err[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err);
    if (rk == nullptr) return InvalidArgumentError(std::string("Kafka consumer: ") + err);
    conf.release();
    consumer_.reset(rk);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
    std::stringstream ss(url.path);
    for (std::string t; std::getline(ss, t, ',');) {
      if (!t.empty()) rd_kafka_topic_partition_list_add(topics, t.c_str(), RD_KAFKA_PARTITION_UA);
    }
    const rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    const int count = topics->cnt;
    rd_kafka_topic_partition_list_destroy(topics);
    if (count == 0 || url.path.find('{') != std::string::npos) {
      return InvalidArgumentError("consume needs concrete topics: kafka://host:port/TOPIC[,TOPIC]");
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return InvalidArgumentError(std::string("Kafka subscribe: ") + rd_kafka_err2str(e));
    }
    return Status::Ok();
  }

  ~KafkaMessages() override {
    if (consumer_) rd_kafka_consumer_close(consumer_.get());
  }

  Result<std::optional<Delivery>> Next(Duration timeout) override {
    rd_kafka_message_t* msg =
        rd_kafka_consumer_poll(consumer_.get(), static_cast<int>(timeout.count()));
    if (msg == nullptr) return std::optional<Delivery>();
    Delivery d;
    Status st;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        st = RetriableError(std::string("Kafka: ") + rd_kafka_message_errstr(msg));
      }
      rd_kafka_message_destroy(msg);
      if (!st.ok()) return st;
      return std::optional<Delivery>();
    }
    d.event = EventFromKafkaMessage(msg);
    d.topic = rd_kafka_topic_name(msg->rkt);
    d.partition = msg->partition;
    d.offset = msg->offset;
    rd_kafka_message_destroy(msg);
    return std::optional<Delivery>(std::move(d));
  }

  Status Ack(const Delivery& d) override {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, d.topic.c_str(), d.partition)->offset = d.offset + 1;
    const rd_kafka_resp_err_t e = rd_kafka_commit(consumer_.get(), list, /*async=*/0);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return RetriableError(std::string("Kafka offset commit: ") + rd_kafka_err2str(e));
    }
    return Status::Ok();
  }

 private:
  KafkaHandle consumer_;
};

// A Redis Streams consumer group named after the consumer; each process reads as its own
// group member, takes over entries other members left pending for `claim_idle`, and XACKs
// after the commit.
class RedisMessages final : public MessageSource {
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

  Result<std::optional<Delivery>> Next(Duration timeout) override {
    if (buffer_.empty()) COURIER_RETURN_IF_ERROR(Fill(timeout));
    if (buffer_.empty()) return std::optional<Delivery>();
    Delivery d = std::move(buffer_.front());
    buffer_.pop_front();
    return std::optional<Delivery>(std::move(d));
  }

  Status Ack(const Delivery& d) override {
    COURIER_RETURN_IF_ERROR(Connect());
    auto* reply = static_cast<redisReply*>(redisCommand(
        conn_.get(), "XACK %s %s %s", endpoint_.stream.c_str(), group_.c_str(), d.topic.c_str()));
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
      Delivery d;
      d.topic = std::move(e.id);
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
  std::deque<Delivery> buffer_;
};

// A JetStream durable pull consumer named after the consumer; a message not acknowledged
// within `claim_idle` (AckWait) is delivered again, to this or another instance.
class NatsMessages final : public MessageSource {
 public:
  ~NatsMessages() override {
    buffer_.clear();
    if (sub_ != nullptr) natsSubscription_Destroy(sub_);
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (conn_ != nullptr) natsConnection_Destroy(conn_);
  }

  Status Open(const std::string& url, const std::string& durable, Duration ack_wait) {
    COURIER_ASSIGN_OR_RETURN(NatsEndpoint e, ParseNatsUrl(url));
    if (e.subject.find('{') != std::string::npos) {
      return InvalidArgumentError("consume needs a concrete subject: nats://host:port/SUBJECT");
    }
    COURIER_ASSIGN_OR_RETURN(conn_, ConnectNats(e));
    subject_ = e.subject;
    durable_ = durable;
    ack_wait_ = ack_wait;
    return Status::Ok();
  }

  // Subscribes once the server is there (the connection keeps trying in the background).
  Status Subscribe() {
    if (sub_ != nullptr) return Status::Ok();
    natsStatus s = js_ == nullptr ? natsConnection_JetStream(&js_, conn_, nullptr) : NATS_OK;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.AckWait = static_cast<int64_t>(ack_wait_.count()) * 1000000;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (s == NATS_OK) {
      s = js_PullSubscribe(&sub_, js_, subject_.c_str(), durable_.c_str(), nullptr, &so, &code);
    }
    if (s != NATS_OK) {
      sub_ = nullptr;
      return RetriableError("nats: cannot consume " + subject_ + " as '" + durable_ +
                            "': " + natsStatus_GetText(s) + " (is the server up, with a stream?)");
    }
    return Status::Ok();
  }

  Result<std::optional<Delivery>> Next(Duration timeout) override {
    COURIER_RETURN_IF_ERROR(Subscribe());
    if (buffer_.empty()) {
      natsMsgList list{};
      jsErrCode code = static_cast<jsErrCode>(0);
      const natsStatus s =
          natsSubscription_Fetch(&list, sub_, 100, static_cast<int64_t>(timeout.count()), &code);
      if (s == NATS_TIMEOUT) return std::optional<Delivery>();
      if (s != NATS_OK) return RetriableError(std::string("nats: fetch: ") + natsStatus_GetText(s));
      for (int i = 0; i < list.Count; ++i) {
        Delivery d;
        d.event = EventFromNatsMsg(list.Msgs[i]);
        d.message = std::shared_ptr<void>(
            list.Msgs[i], [](void* m) { natsMsg_Destroy(static_cast<natsMsg*>(m)); });
        list.Msgs[i] = nullptr;
        buffer_.push_back(std::move(d));
      }
      natsMsgList_Destroy(&list);
    }
    if (buffer_.empty()) return std::optional<Delivery>();
    Delivery d = std::move(buffer_.front());
    buffer_.pop_front();
    return std::optional<Delivery>(std::move(d));
  }

  Status Ack(const Delivery& d) override {
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s = natsMsg_AckSync(static_cast<natsMsg*>(d.message.get()), nullptr, &code);
    if (s != NATS_OK) return RetriableError(std::string("nats: ack: ") + natsStatus_GetText(s));
    return Status::Ok();
  }

 private:
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  natsSubscription* sub_ = nullptr;
  std::string subject_;
  std::string durable_;
  Duration ack_wait_{30000};
  std::deque<Delivery> buffer_;
};

// A RabbitMQ queue consumed with manual acknowledgements (up to 100 unacknowledged); what a
// lost connection had not acknowledged the broker requeues.
class AmqpMessages final : public MessageSource {
 public:
  Status Open(const std::string& url) {
    COURIER_ASSIGN_OR_RETURN(endpoint_, ParseAmqpUrl(url));
    if (endpoint_.queue.empty()) {
      return InvalidArgumentError(
          "consume reads a RabbitMQ queue: amqp://host:port/VHOST/?queue=NAME");
    }
    Status st = Connect();
    if (st.code() == StatusCode::kInvalidArgument) return st;
    return Status::Ok();  // an unreachable broker is retried by Next
  }

  Result<std::optional<Delivery>> Next(Duration timeout) override {
    COURIER_RETURN_IF_ERROR(Connect());
    amqp_maybe_release_buffers(session_->conn());
    amqp_envelope_t envelope;
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    const amqp_rpc_reply_t r = amqp_consume_message(session_->conn(), &envelope, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
      return std::optional<Delivery>();
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      session_.reset();
      return RetriableError("amqp: consuming from " + endpoint_.queue + " failed");
    }
    Delivery d;
    d.event = EventFromAmqpMessage(envelope.message);
    d.offset = static_cast<int64_t>(envelope.delivery_tag);
    d.generation = generation_;
    amqp_destroy_envelope(&envelope);
    return std::optional<Delivery>(std::move(d));
  }

  Status Ack(const Delivery& d) override {
    if (session_ == nullptr || d.generation != generation_) {
      return RetriableError("amqp: the connection that got the message is gone (requeued)");
    }
    if (amqp_basic_ack(session_->conn(), static_cast<amqp_channel_t>(session_->channel()),
                       static_cast<uint64_t>(d.offset), 0) != AMQP_STATUS_OK) {
      session_.reset();
      return RetriableError("amqp: ack failed");
    }
    return Status::Ok();
  }

 private:
  Status Connect() {
    if (session_ != nullptr) return Status::Ok();
    COURIER_ASSIGN_OR_RETURN(auto session, AmqpSession::Connect(endpoint_, Duration(5000)));
    const auto channel = static_cast<amqp_channel_t>(session->channel());
    amqp_basic_qos(session->conn(), channel, 0, 100, 0);
    COURIER_RETURN_IF_ERROR(session->RpcStatus("basic.qos"));
    amqp_bytes_t queue{endpoint_.queue.size(), const_cast<char*>(endpoint_.queue.data())};
    amqp_basic_consume(session->conn(), channel, queue, amqp_empty_bytes, 0, /*no_ack=*/0, 0,
                       amqp_empty_table);
    Status st = session->RpcStatus("consume from " + endpoint_.queue);
    if (st.code() == StatusCode::kNotFound) {
      return InvalidArgumentError("amqp: no queue named '" + endpoint_.queue + "' in vhost '" +
                                  endpoint_.vhost + "'");
    }
    COURIER_RETURN_IF_ERROR(st);
    session_ = std::move(session);
    ++generation_;
    return Status::Ok();
  }

  AmqpEndpoint endpoint_;
  std::unique_ptr<AmqpSession> session_;
  uint64_t generation_ = 0;
};

// Runs the handler command with the event as a JSON line on stdin. An exit code named
// permanent is a refusal (kRejected); any other failure is retried.
Status RunCommand(const ConsumeOptions& o, const Event& e) {
  char path[] = "/tmp/courier-event-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return InternalError("cannot create a temp file for the handler's input");
  const std::string line = EventToJsonLine(e) + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  Status st;
  if (!written) {
    st = InternalError("cannot write the handler's input");
  } else {
    auto child = Subprocess::Spawn({"/bin/sh", "-c", o.exec}, "", "", path);
    if (!child.ok()) {
      st = child.status();
    } else if (auto code = child->Wait(o.handler_timeout); !code) {
      st = RetriableError("handler still running after " +
                          std::to_string(o.handler_timeout.count()) + " ms; killed");
    } else if (*code != 0) {
      const bool permanent = std::find(o.permanent_exit_codes.begin(), o.permanent_exit_codes.end(),
                                       *code) != o.permanent_exit_codes.end();
      const std::string what = "handler exited with " + std::to_string(*code);
      st = permanent ? RejectedError(what + " (a permanent failure)") : RetriableError(what);
    }
  }
  ::unlink(path);
  return st;
}

// A database error that retrying cannot fix: the inbox or parked table is missing (run
// migrate). Anything else (the server away, restarting, a lock timeout) is waited out.
bool PermanentDbError(const Status& st) { return st.code() == StatusCode::kNotFound; }

}  // namespace

Status ValidateHandler(const ConsumeOptions& o) {
  if (o.consumer.empty()) return InvalidArgumentError("--consumer NAME is required");
  if (o.to_url.empty() == o.exec.empty()) {
    return InvalidArgumentError("give the handler as --to http(s)://... or --exec COMMAND (one)");
  }
  if (o.max_attempts < 0) {
    return InvalidArgumentError("--max-attempts must be 0 (no limit) or more");
  }
  for (int code : o.permanent_exit_codes) {
    if (code < 1 || code > 255) {
      return InvalidArgumentError("--permanent-exit-codes takes exit codes from 1 to 255, not " +
                                  std::to_string(code));
    }
  }
  if (!o.to_url.empty()) COURIER_RETURN_IF_ERROR(InitCurl());
  return Status::Ok();
}

Status CallHandler(const ConsumeOptions& o, const Event& e) {
  return o.to_url.empty() ? RunCommand(o, e) : PostEvent(o.to_url, e, o.handler_timeout);
}

Result<ParkedRetry> RetryParked(const ConsumeOptions& o, InboxDb& db, const ParkedEvent& p) {
  COURIER_ASSIGN_OR_RETURN(const Event e, EventFromJsonLine(p.event));
  const Inbox inbox(o.consumer, o.inbox_table);
  Status handler_status;
  bool called = false;
  // The claim, the handler and the parked row's removal commit together.
  auto ran = db.Process(inbox, e.event_id, [&]() -> Status {
    called = true;
    handler_status = CallHandler(o, e);
    COURIER_RETURN_IF_ERROR(handler_status);
    return db.DeleteParked(o.parked_table, o.consumer, p.id).status();
  });
  if (ran.ok()) {
    if (*ran) return ParkedRetry{.handled = true};
    // Handled since (a redelivery after the cause was fixed): the row only goes.
    COURIER_RETURN_IF_ERROR(db.DeleteParked(o.parked_table, o.consumer, p.id).status());
    return ParkedRetry{.handled = false};
  }
  if (!called || handler_status.ok()) return ran.status();  // the database's failure
  COURIER_RETURN_IF_ERROR(db.UpdateParked(o.parked_table, p.id, handler_status.message()));
  return ParkedRetry{.handled = false, .failure = handler_status};
}

Status RunConsumer(const ConsumeOptions& o, const StopSignal& stop) {
  COURIER_RETURN_IF_ERROR(ValidateHandler(o));
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(o.db_url));
  COURIER_ASSIGN_OR_RETURN(Url from, ParseUrl(o.from_url));
  std::unique_ptr<MessageSource> source;
  if (from.scheme == "kafka") {
    auto kafka = std::make_unique<KafkaMessages>();
    COURIER_RETURN_IF_ERROR(kafka->Open(from, o.consumer));
    source = std::move(kafka);
  } else if (from.scheme == "redis") {
    auto redis = std::make_unique<RedisMessages>();
    COURIER_RETURN_IF_ERROR(redis->Open(o.from_url, o.consumer, o.claim_idle));
    source = std::move(redis);
  } else if (from.scheme == "nats" || from.scheme == "nats+tls") {
    auto nats = std::make_unique<NatsMessages>();
    COURIER_RETURN_IF_ERROR(nats->Open(o.from_url, o.consumer, o.claim_idle));
    source = std::move(nats);
  } else if (from.scheme == "amqp" || from.scheme == "amqps") {
    auto amqp = std::make_unique<AmqpMessages>();
    COURIER_RETURN_IF_ERROR(amqp->Open(o.from_url));
    source = std::move(amqp);
  } else {
    return InvalidArgumentError(
        "consume reads kafka://host:port/TOPIC, redis://host:port/STREAM, "
        "nats[+tls]://host:port/SUBJECT or amqp[s]://host:port/VHOST/?queue=NAME, not '" +
        from.scheme + "://'");
  }
  InboxDb db(loc);
  COURIER_RETURN_IF_ERROR(db.Connect());
  const Inbox inbox(o.consumer, o.inbox_table);
  const std::string handler_name = o.to_url.empty() ? "exec" : RedactUrl(o.to_url);
  log::Info("consumer starting", {{"from", RedactUrl(o.from_url)},
                                  {"db", RedactUrl(o.db_url)},
                                  {"consumer", o.consumer},
                                  {"handler", handler_name}});
  Clock& clock = o.clock != nullptr ? *o.clock : Clock::Real();
  Backoff source_backoff(o.backoff_initial, o.backoff_max, &clock);
  TimePoint next_prune = clock.Now();
  int64_t handled = 0, duplicates = 0, parked = 0;
  Status fatal;
  while (!stop.requested() && fatal.ok()) {
    if (o.retention.count() > 0 && clock.Now() >= next_prune) {
      auto pruned = db.Prune(inbox, o.retention);
      if (!pruned.ok()) log::Warn("inbox prune failed", {{"error", pruned.status().message()}});
      next_prune = clock.Now() + std::chrono::seconds(60);
    }
    auto next = source->Next(Duration(500));
    if (!next.ok()) {
      log::Warn("reading failed; retrying", {{"error", next.status().message()}});
      source_backoff.Wait(stop);
      continue;
    }
    source_backoff.Reset();
    if (!next->has_value()) continue;
    const Delivery& d = **next;
    const Event& e = d.event;
    // One backoff for the event, like the relay's: transient failures of the handler and of
    // the database are retried until they pass, the delay doubling up to --backoff-max.
    Backoff backoff(o.backoff_initial, o.backoff_max, &clock);
    int attempts = 0;  // calls of the handler that failed
    std::optional<Status> park_reason;
    if (e.event_id.empty()) park_reason = RejectedError("the message carries no event_id");
    bool done = false;
    while (!done && !stop.requested()) {
      if (!park_reason) {
        Status handler_status;
        bool called = false;
        Result<bool> ran = db.Process(inbox, e.event_id, [&] {
          called = true;
          handler_status = CallHandler(o, e);
          return handler_status;
        });
        if (ran.ok()) {
          ReachFaultPoint(o.fault_points, "consume-after-commit");
          if (*ran) {
            ++handled;
          } else {
            ++duplicates;
          }
          log::Debug(*ran ? "handled" : "duplicate skipped", {{"event_id", e.event_id}});
          done = true;
          break;
        }
        if (!called || handler_status.ok()) {
          // The inbox's database failed (the claim, or the commit after the handler): not
          // the handler's failure, so nothing is parked for it. The handler may be called
          // again for this event once the database is back (its claim did not commit).
          if (PermanentDbError(ran.status())) {
            fatal = ran.status();
            break;
          }
          log::Warn("inbox database unavailable; retrying",
                    {{"event_id", e.event_id}, {"error", ran.status().message()}});
          db.Reset();
          backoff.Wait(stop);
          continue;
        }
        ++attempts;
        const bool permanent = handler_status.code() == StatusCode::kRejected;
        if (!permanent && (o.max_attempts == 0 || attempts < o.max_attempts)) {
          log::Warn("handler failed; retrying", {{"event_id", e.event_id},
                                                 {"attempt", attempts},
                                                 {"error", handler_status.message()}});
          backoff.Wait(stop);
          continue;
        }
        park_reason = handler_status;
      }
      // Parked: the reason is kept, the message acknowledged, the next ones go on.
      Status st = db.Park(o.parked_table, o.consumer, e, park_reason->message(), attempts);
      if (!st.ok()) {
        if (PermanentDbError(st)) {
          fatal = st;
          break;
        }
        log::Warn("cannot park the event; retrying",
                  {{"event_id", e.event_id}, {"error", st.message()}});
        db.Reset();
        backoff.Wait(stop);
        continue;
      }
      ++parked;
      log::Error(
          "event parked",
          {{"event_id", e.event_id}, {"attempts", attempts}, {"error", park_reason->message()}});
      done = true;
    }
    if (!done) break;  // stopping: the message stays unacknowledged and comes again
    if (Status st = source->Ack(d); !st.ok()) {
      // Redelivered later and skipped by the inbox.
      log::Warn("acknowledgement failed", {{"event_id", e.event_id}, {"error", st.message()}});
    }
  }
  log::Info("consumer stopped",
            {{"handled", handled}, {"duplicates", duplicates}, {"parked", parked}});
  // The message in hand stays unacknowledged and comes again.
  return fatal;
}

}  // namespace courier
