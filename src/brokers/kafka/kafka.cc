// Kafka sink: an idempotent librdkafka producer (acks=all), key = aggregate_id, headers
// event_id / event_type / aggregate_type plus the event's own headers.
//
// For an outbox with a lease (PostgreSQL) the producer is transactional: its transactional.id
// belongs to the outbox, init_transactions runs once per lease term (on a new producer), and
// each batch is one transaction. The new lease holder's init_transactions makes the broker
// fence the previous holder's producer: its produce requests and its commit are refused
// (PRODUCER_FENCED / INVALID_PRODUCER_EPOCH), and read_committed consumers never see its
// open transaction. A batch counts as acked only once its transaction committed.
//
// Order: the idempotent producer keeps per-partition order across its internal retries, and
// every event of one aggregate has the same key, hence the same partition.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <utility>

#include "brokers/kafka/kafka_common.h"
#include "brokers/sink.h"
#include "core/log.h"
#include "core/url.h"

namespace courier {

namespace {

// librdkafka's own log lines go through our structured log at debug level: what an operator
// must see arrives through the error callback (and is logged there, rate-limited).
void OnKafkaLog(const rd_kafka_t*, int /*level*/, const char* facility, const char* message) {
  log::Write(log::Level::kDebug, "librdkafka", {{"facility", facility}, {"detail", message}});
}

}  // namespace

Result<KafkaConf> MakeKafkaConf(const std::vector<std::pair<std::string, std::string>>& props) {
  KafkaConf conf(rd_kafka_conf_new());
  rd_kafka_conf_set_log_cb(conf.get(), &OnKafkaLog);
  char err[512];
  for (const auto& [key, value] : props) {
    if (rd_kafka_conf_set(conf.get(), key.c_str(), value.c_str(), err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
      // librdkafka quotes the value it refused: not when it is a secret.
      const std::string reason = IsSecretKey(key) ? ScrubSecrets(err, {value}) : err;
      return InvalidArgumentError("Kafka property '" + key + "': " + reason);
    }
  }
  return conf;
}

std::vector<std::pair<std::string, std::string>> KafkaProducerSettings(const std::string& bootstrap,
                                                                       Duration delivery_timeout) {
  return {
      {"bootstrap.servers", bootstrap},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"linger.ms", "5"},
      {"batch.num.messages", "10000"},
      {"queue.buffering.max.messages", "1000000"},
      {"message.timeout.ms", std::to_string(delivery_timeout.count())},
      {"reconnect.backoff.max.ms", "5000"},
  };
}

KafkaHeaders MakeEventHeaders(const Event& e) {
  KafkaHeaders headers(rd_kafka_headers_new(3 + e.headers.size()));
  auto add = [&](std::string_view name, std::string_view value) {
    rd_kafka_header_add(headers.get(), name.data(), static_cast<ssize_t>(name.size()), value.data(),
                        static_cast<ssize_t>(value.size()));
  };
  add("event_id", e.event_id);
  add("event_type", e.event_type);
  add("aggregate_type", e.aggregate_type);
  for (const auto& [k, v] : e.headers) add(k, v);
  return headers;
}

void FetchTopicMetadata(rd_kafka_t* producer, const std::string& topic, Duration timeout) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(producer, topic.c_str(), nullptr);
  if (rkt == nullptr) return;
  const rd_kafka_metadata_t* md = nullptr;
  if (rd_kafka_metadata(producer, 0, rkt, &md, static_cast<int>(timeout.count())) ==
      RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_topic_destroy(rkt);
}

bool IsPermanentKafkaError(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
      return true;
    default:
      return false;
  }
}

namespace {

class KafkaSink final : public Sink {
 public:
  explicit KafkaSink(SinkOptions options) : options_(std::move(options)) {}

  Status Configure() override {
    COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options_.url));
    if (url.hosts.empty()) {
      return InvalidArgumentError("Kafka sink URL " + RedactUrl(options_.url) +
                                  " has no broker; write kafka://host:port/topic");
    }
    topic_template_ = url.path.empty() ? "{aggregate_type}" : url.path;
    transactional_id_ = options_.transactional_id;
    std::vector<std::pair<std::string, std::string>> query;
    bool transactions_off = false;
    for (const auto& [key, value] : url.query) {
      if (key == "transactional") {
        if (value != "true" && value != "false") {
          return InvalidArgumentError("Kafka sink: transactional must be true or false, not '" +
                                      value + "'");
        }
        transactions_off = value == "false";
      } else if (key == "transactional.id") {
        transactional_id_ = value;  // the operator's name for this outbox's producer
      } else {
        query.emplace_back(key, value);
      }
    }
    if (transactions_off) transactional_id_.clear();
    std::vector<std::pair<std::string, std::string>> props =
        KafkaProducerSettings(url.hosts, options_.delivery_timeout);
    if (!transactional_id_.empty()) props.emplace_back("transactional.id", transactional_id_);
    // The URL's query sets any other librdkafka property (security.protocol, sasl.*, ...).
    for (const auto& kv : query) props.push_back(kv);
    props_ = props;
    // librdkafka checks properties together (acks against idempotence, TLS files, SASL) only
    // when a client is made: a trial one without brokers, so nothing is resolved or connected.
    std::erase_if(props, [](const auto& kv) {
      return kv.first == "bootstrap.servers" || kv.first == "metadata.broker.list";
    });
    COURIER_ASSIGN_OR_RETURN(KafkaConf trial, MakeKafkaConf(props));
    char err[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, trial.get(), err, sizeof err);
    if (rk == nullptr) return InvalidArgumentError(std::string("Kafka producer: ") + err);
    trial.release();  // owned by rk now
    rd_kafka_destroy(rk);
    return Status::Ok();
  }

  Status Open() override {
    COURIER_RETURN_IF_ERROR(Configure());
    COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf(props_));
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &KafkaSink::OnDelivery);
    rd_kafka_conf_set_error_cb(conf.get(), &KafkaSink::OnError);
    char err[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
    if (rk == nullptr) return InvalidArgumentError(std::string("Kafka producer: ") + err);
    conf.release();  // owned by rk now
    producer_.reset(rk);
    known_topics_.clear();
    initialized_ = false;
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    if (producer_ == nullptr) {
      Status st = Open();
      if (!st.ok()) return std::vector<Status>(batch.size(), st);
    }
    if (!transactional_id_.empty()) {
      if (Status st = BeginTransaction(stop); !st.ok()) {
        return std::vector<Status>(batch.size(), st);
      }
    }
    rd_kafka_t* rk = producer_.get();
    // Reports are matched to this batch by generation: one that arrives for an earlier,
    // abandoned batch (after a purge) is ignored instead of touching freed memory.
    ++generation_;
    results_.assign(batch.size(), RetriableError("no delivery report"));
    delivery_failed_ = false;
    std::vector<Status>& results = results_;
    pending_ = 0;
    // An aggregate whose event failed before leaving (too large, unknown topic...) sends no
    // later event in this batch: nothing may overtake it.
    HeldBack held;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Event& e = batch[i];
      if (held.Holds(e, &results[i])) continue;
      if (Status fenced = CheckFence(stop); !fenced.ok()) {
        std::fill(results.begin() + static_cast<ptrdiff_t>(i), results.end(), fenced);
        break;
      }
      const std::string topic = ExpandTemplate(topic_template_, e);
      WarmUpTopic(topic);
      KafkaHeaders headers = MakeEventHeaders(e);
      // The message's timestamp is the event's time (when its transaction wrote it), so that
      // consumers see event time, not when the relay got to it. 0 (none known, or before
      // 1970, which Kafka refuses) lets the producer stamp it.
      const int64_t timestamp_ms = e.created_at_us > 0 ? e.created_at_us / 1000 : 0;
      rd_kafka_resp_err_t err;
      while (true) {
        err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic.c_str()),
            RD_KAFKA_V_KEY(e.aggregate_id.data(), e.aggregate_id.size()),
            RD_KAFKA_V_VALUE(const_cast<char*>(e.payload.data()), e.payload.size()),
            RD_KAFKA_V_TIMESTAMP(timestamp_ms), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_OPAQUE(EncodeSlot(i)), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
        rd_kafka_poll(rk, 10);
      }
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        headers.release();  // owned by the message now
        ++pending_;
      } else {
        results[i] = Classify(err, topic);
        held.Failed(e);
      }
    }
    WaitForReports(stop);
    if (pending_ > 0) {
      // Given up (shutdown or fatal producer error): drop what is queued. The events stay in
      // the outbox and go out again later; their reports arrive as purge errors.
      rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      for (int i = 0; i < 100 && pending_ > 0; ++i) rd_kafka_poll(rk, 10);
    }
    if (Status fenced = CheckFence(stop); !fenced.ok()) {
      // What the broker acked stays acked; the rest is this relay's no more.
      for (Status& r : results) {
        if (!r.ok() && r.code() != StatusCode::kRejected) r = fenced;
      }
    }
    if (!transactional_id_.empty()) EndTransaction(stop);
    char fatal[256];
    if (producer_ != nullptr &&
        rd_kafka_fatal_error(rk, fatal, sizeof fatal) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      log::Error("Kafka producer hit a fatal error; recreating it", {{"error", fatal}});
      producer_.reset();
    }
    return std::move(results_);
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  void WaitForReports(const StopSignal& stop) {
    rd_kafka_t* rk = producer_.get();
    const TimePoint started = Clock::Real().Now();
    TimePoint next_warning = started + std::chrono::seconds(10);
    std::optional<TimePoint> stop_deadline;
    while (pending_ > 0) {
      // Flushing, not polling: the whole batch is produced already, and a flush sends each
      // partition's last messages at once instead of after linger.ms (which only helps
      // batching across calls). It serves the delivery reports as a poll does.
      rd_kafka_flush(rk, 50);
      const TimePoint now = Clock::Real().Now();
      if (stop.requested() && !stop_deadline) {
        stop_deadline = now + (stop.abandoned() ? Duration(0) : options_.shutdown_timeout);
      }
      if (stop_deadline && now >= *stop_deadline) {
        log::Warn("shutdown: giving up waiting for broker acks; the events stay in the outbox",
                  {{"pending", pending_}});
        return;
      }
      char fatal[256];
      if (rd_kafka_fatal_error(rk, fatal, sizeof fatal) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
      if (now >= next_warning) {
        const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - started);
        log::Warn("waiting for Kafka acks; is the broker reachable?",
                  {{"pending", pending_},
                   {"waited_s", waited.count()},
                   {"sink", Describe()},
                   {"last_error", last_error_}});
        next_warning = now + std::chrono::seconds(30);
      }
    }
  }

  // The first batch to each topic goes out at once (FetchTopicMetadata).
  void WarmUpTopic(const std::string& topic) {
    if (known_topics_.insert(topic).second) FetchTopicMetadata(producer_.get(), topic);
  }

  // A new producer and init_transactions once per lease term: the broker then fences every
  // older producer of this transactional.id (the previous holder, frozen or not). Then begins
  // the batch's transaction.
  Status BeginTransaction(const StopSignal& stop) {
    COURIER_RETURN_IF_ERROR(CheckFence(stop));
    if (initialized_ && stop.term() != term_) {
      producer_.reset();  // the old term's producer; its open transaction is the broker's now
      COURIER_RETURN_IF_ERROR(Open());
    }
    if (!initialized_) {
      COURIER_RETURN_IF_ERROR(Transact(
          "init", [this](int ms) { return rd_kafka_init_transactions(producer_.get(), ms); }, stop,
          /*grace=*/false));
      initialized_ = true;
      term_ = stop.term();
    }
    COURIER_RETURN_IF_ERROR(CheckFence(stop));
    return TransactionStatus(rd_kafka_begin_transaction(producer_.get()), "begin");
  }

  // Commits the batch's transaction when every event produced was delivered; otherwise aborts
  // it, and what the broker acked of it is not acked any more. A fenced relay does neither: its
  // producer is dropped, and the broker aborts its transaction when the new holder's
  // init_transactions arrives (or when transaction.timeout.ms passes).
  void EndTransaction(const StopSignal& stop) {
    Status outcome = CheckFence(stop);
    char reason[256];
    if (outcome.ok() && rd_kafka_fatal_error(producer_.get(), reason, sizeof reason) !=
                            RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Refused produce requests (INVALID_PRODUCER_EPOCH...) make the producer fatally fenced.
      outcome =
          TransactionStatus(rd_kafka_error_new(RD_KAFKA_RESP_ERR__FATAL, "%s", reason), "produce");
    }
    // Events refused before they left (too large...) are not in the transaction: they are
    // parked or sent again on their own, and the rest of the batch commits.
    if (outcome.ok() && !delivery_failed_ && pending_ == 0) {
      outcome = Transact(
          "commit", [this](int ms) { return rd_kafka_commit_transaction(producer_.get(), ms); },
          stop, /*grace=*/true);
      if (outcome.ok()) return;
    }
    if (outcome.code() != StatusCode::kFenced && producer_ != nullptr) {
      if (outcome.ok()) {
        outcome = RetriableError("Kafka transaction aborted: not every event was delivered");
      }
      const Status aborted = Transact(
          "abort", [this](int ms) { return rd_kafka_abort_transaction(producer_.get(), ms); }, stop,
          /*grace=*/true);
      if (aborted.code() == StatusCode::kFenced) outcome = aborted;
      if (!aborted.ok()) producer_.reset();  // a fresh producer starts clean
    }
    if (outcome.code() == StatusCode::kFenced) {
      producer_.reset();
      for (Status& r : results_) {
        if (r.code() != StatusCode::kRejected) r = outcome;
      }
      return;
    }
    for (Status& r : results_) {
      if (r.ok()) r = outcome;
    }
  }

  // Runs a blocking transactional call (init, commit, abort) in slices of a second, serving the
  // producer's callbacks in between: while the broker is away its errors are logged, and a
  // stop is seen (at once, or after the shutdown grace when `grace`). librdkafka documents a
  // call that failed with a retriable error (a timeout) as one to call again.
  Status Transact(const char* step, const std::function<rd_kafka_error_t*(int)>& call,
                  const StopSignal& stop, bool grace) {
    const TimePoint deadline = Clock::Real().Now() + Duration(TransactionTimeoutMs());
    std::optional<TimePoint> stop_deadline;
    while (true) {
      rd_kafka_error_t* error = call(1000);
      if (error == nullptr || !rd_kafka_error_is_retriable(error)) {
        return TransactionStatus(error, step);
      }
      rd_kafka_poll(producer_.get(), 0);
      const TimePoint now = Clock::Real().Now();
      if (stop.requested() && !stop_deadline) {
        stop_deadline =
            now + (grace && !stop.abandoned() ? options_.shutdown_timeout : Duration(0));
      }
      if (now >= deadline || (stop_deadline && now >= *stop_deadline)) {
        return TransactionStatus(error, step);
      }
      rd_kafka_error_destroy(error);
    }
  }

  int TransactionTimeoutMs() const {
    return static_cast<int>(options_.delivery_timeout.count() > 0
                                ? std::min<int64_t>(options_.delivery_timeout.count(), 30000)
                                : 30000);
  }

  // kFenced when the broker fenced this producer (another holder of the outbox's
  // transactional.id initialised after it); kRetriable otherwise (the producer is recreated
  // when the error is fatal).
  Status TransactionStatus(rd_kafka_error_t* error, const char* step) {
    if (error == nullptr) return Status::Ok();
    const rd_kafka_resp_err_t code = rd_kafka_error_code(error);
    std::string message = std::string("Kafka transaction ") + step + " (transactional.id " +
                          transactional_id_ + "): " + rd_kafka_error_string(error);
    const bool fatal = rd_kafka_error_is_fatal(error) || code == RD_KAFKA_RESP_ERR__FATAL;
    rd_kafka_error_destroy(error);
    char reason[256];
    const rd_kafka_resp_err_t cause =
        fatal ? rd_kafka_fatal_error(producer_.get(), reason, sizeof reason) : code;
    if (IsFencedKafkaError(code) || IsFencedKafkaError(cause)) {
      log::Error(
          "the broker fenced this relay's Kafka producer: another relay of the outbox "
          "initialised its transactions",
          {{"transactional_id", transactional_id_}, {"error", message}});
      producer_.reset();
      return FencedError(std::move(message));
    }
    if (fatal) producer_.reset();
    return RetriableError(std::move(message));
  }

  static bool IsFencedKafkaError(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR__FENCED || err == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
           err == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
  }

  static Status Classify(rd_kafka_resp_err_t err, const std::string& topic) {
    std::string message = std::string("Kafka: ") + rd_kafka_err2str(err) + " (topic " + topic + ")";
    if (IsPermanentKafkaError(err)) return RejectedError(std::move(message));
    return RetriableError(std::move(message));
  }

  // A message's opaque: the batch generation (high 32 bits) and its index in the batch.
  void* EncodeSlot(size_t index) const {
    return reinterpret_cast<void*>((static_cast<uintptr_t>(generation_) << 32) | index);
  }

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto* self = static_cast<KafkaSink*>(opaque);
    const auto slot = reinterpret_cast<uintptr_t>(msg->_private);
    if ((slot >> 32) != self->generation_) return;  // from an abandoned batch
    const size_t index = slot & 0xFFFFFFFFu;
    if (index >= self->results_.size()) return;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      self->results_[index] = Status::Ok();
    } else {
      self->results_[index] = Classify(msg->err, rd_kafka_topic_name(msg->rkt));
      self->delivery_failed_ = true;
    }
    --self->pending_;
  }

  static void OnError(rd_kafka_t*, int err, const char* reason, void* opaque) {
    auto* self = static_cast<KafkaSink*>(opaque);
    self->last_error_ = reason;  // read on the same thread: callbacks run inside poll
    const auto code = static_cast<rd_kafka_resp_err_t>(err);
    const TimePoint now = Clock::Real().Now();
    if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || now >= self->next_error_log_) {
      log::Warn("Kafka client error; retrying with backoff",
                {{"error", reason}, {"sink", self->Describe()}});
      self->next_error_log_ = now + std::chrono::seconds(10);
    }
  }

  SinkOptions options_;
  std::string topic_template_;
  std::vector<std::pair<std::string, std::string>> props_;  // the producer's, set by Configure
  KafkaHandle producer_;
  std::string transactional_id_;        // empty: no transactions
  bool initialized_ = false;            // init_transactions done on producer_
  uint64_t term_ = 0;                   // the lease term producer_ was initialised in
  std::set<std::string> known_topics_;  // topics whose metadata this producer has fetched
  // The batch being published; written by OnDelivery, which librdkafka runs inside
  // rd_kafka_poll on the publishing thread, so no lock is needed.
  std::vector<Status> results_;
  uint32_t generation_ = 0;
  int64_t pending_ = 0;
  bool delivery_failed_ = false;  // a message of this batch got a failed delivery report
  std::string last_error_;
  TimePoint next_error_log_{};
};

}  // namespace

std::unique_ptr<Sink> MakeKafkaSink(const SinkOptions& options) {
  return std::make_unique<KafkaSink>(options);
}

}  // namespace courier
