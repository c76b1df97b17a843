// RabbitMQ sink (librabbitmq, AMQP 0-9-1): persistent messages published in order on one
// channel in confirm mode, with the mandatory flag. An event is acked when the broker
// confirms it (basic.ack: for a durable queue, written to disk) and was not returned as
// unroutable.
//
//   amqp[s]://[user:password@]host[:port]/VHOST/EXCHANGE[?routing_key=TEMPLATE]
//
// amqps:// is TLS (port 5671 by default; cacert, cert, key and verify as in brokers/tls.h).
// VHOST is percent-encoded ("%2F" is "/"); the exchange must exist (checked at start);
// TEMPLATE may use {aggregate_type} and {event_type} (default {aggregate_type}). Each message
// carries message_id = event_id (the consumers' dedup key), type = event_type, timestamp,
// delivery_mode 2, and headers event_id, event_type, aggregate_type, aggregate_id,
// created_at_us plus the event's own headers; the body is the payload.
//
// Errors: an unroutable message (no queue bound for its routing key), a nack, a lost
// connection or a channel closed by the broker (missing exchange, no permission) are
// retriable; a message the broker refuses by itself (larger than max_message_size: the
// broker closes the channel with PRECONDITION_FAILED) is rejected. Which message closed the
// channel is found by sending the unconfirmed ones again one at a time.
#include "brokers/amqp/amqp.h"

#include <amqp.h>
#include <sys/time.h>

#include <cerrno>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "brokers/amqp/amqp_wire.h"
#include "brokers/sink.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/url.h"

namespace courier {
namespace {

constexpr int kHeartbeatSeconds = 20;
// A connection idle this long may have been closed by the broker for missed heartbeats
// (librabbitmq only sends them inside its calls): it is replaced before the next batch.
constexpr Duration kMaxIdle{kHeartbeatSeconds * 1000 / 2};

class AmqpSink final : public Sink {
 public:
  explicit AmqpSink(SinkOptions options) : options_(std::move(options)) {}

  Status Configure() override {
    COURIER_ASSIGN_OR_RETURN(endpoint_, ParseAmqpUrl(options_.url));
    if (!endpoint_.queue.empty()) {
      return InvalidArgumentError(
          "amqp sink: 'queue' is for courier tail; the sink publishes to "
          "the exchange with routing_key");
    }
    return Status::Ok();
  }

  Status Open() override {
    COURIER_RETURN_IF_ERROR(Configure());
    // When the broker answers now, settings it refuses are start-up errors; when it is away,
    // Publish connects later.
    auto session = AmqpSession::Connect(endpoint_, ConnectTimeout(), kHeartbeatSeconds);
    if (!session.ok()) {
      if (IsAmqpSetupError(session.status())) {
        return InvalidArgumentError(session.status().message());
      }
      log::Warn("RabbitMQ not reachable yet; will retry",
                {{"sink", Describe()}, {"error", session.status().message()}});
      return Status::Ok();
    }
    Status st = CheckExchange(**session);
    if (st.code() == StatusCode::kNotFound) return InvalidArgumentError(st.message());
    if (st.ok()) st = ConfirmMode(**session);
    if (st.ok()) {
      session_ = std::move(session).value();
      last_io_ = Clock::Real().Now();
    }
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    std::vector<Status> results(batch.size(), RetriableError("no confirm from RabbitMQ yet"));
    std::vector<size_t> sending(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) sending[i] = i;
    const TimePoint start = Clock::Real().Now();
    const Outcome outcome = PublishAndConfirm(batch, sending, &results, stop, start);
    if (outcome.channel_code != AMQP_PRECONDITION_FAILED) return results;
    // The broker refused one of the unconfirmed messages for good (and dropped those after it
    // on the closed channel); find it by sending them again one by one. Order holds: each is
    // confirmed before the next goes out, and nothing more of a refused one's aggregate goes.
    HeldBack held;
    for (size_t i : outcome.unconfirmed) {
      if (held.Holds(batch[i], &results[i])) continue;
      const Outcome one = PublishAndConfirm(batch, {i}, &results, stop, start);
      if (one.channel_code == AMQP_PRECONDITION_FAILED) {
        results[i] = RejectedError("amqp: the broker refused the message: " + one.reason);
        held.Failed(batch[i]);
      } else if (!one.unconfirmed.empty()) {
        break;  // anything else: the rest goes out again with the next attempt
      }
    }
    return results;
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  // A broker that accepts the connection and never answers holds the login this long; no
  // longer than the delivery timeout, which bounds a whole attempt.
  Duration ConnectTimeout() const {
    const Duration most{5000};
    const Duration delivery = options_.delivery_timeout;
    return delivery.count() > 0 && delivery < most ? delivery : most;
  }

  struct Outcome {
    int channel_code = 0;  // set when the broker closed the channel
    std::string reason;
    std::vector<size_t> unconfirmed;  // in publish order
  };

  Status CheckExchange(AmqpSession& s) {
    if (endpoint_.exchange.empty()) return Status::Ok();
    amqp_exchange_declare(s.conn(), static_cast<amqp_channel_t>(s.channel()),
                          Bytes(endpoint_.exchange), amqp_cstring_bytes("topic"), /*passive=*/1, 0,
                          0, 0, amqp_empty_table);
    Status st = s.RpcStatus("exchange.declare");
    if (st.code() == StatusCode::kNotFound) {
      return NotFoundError(ExchangeMissing());
    }
    return st;
  }

  std::string ExchangeMissing() const {
    return "amqp: exchange '" + endpoint_.exchange + "' does not exist in vhost '" +
           endpoint_.vhost +
           "'; declare it (rabbitmqadmin declare exchange name=" + endpoint_.exchange +
           " type=topic durable=true)";
  }

  Status EnsureSession() {
    if (session_ != nullptr && Clock::Real().Now() - last_io_ > kMaxIdle) {
      session_.reset();
    }
    if (session_ != nullptr) return Status::Ok();
    COURIER_ASSIGN_OR_RETURN(auto session,
                             AmqpSession::Connect(endpoint_, ConnectTimeout(), kHeartbeatSeconds));
    COURIER_RETURN_IF_ERROR(ConfirmMode(*session));
    session_ = std::move(session);
    return Status::Ok();
  }

  Status ConfirmMode(AmqpSession& s) {
    amqp_confirm_select(s.conn(), static_cast<amqp_channel_t>(s.channel()));
    COURIER_RETURN_IF_ERROR(s.RpcStatus("confirm.select"));
    next_tag_ = 1;
    return Status::Ok();
  }

  // Publishes batch[sending...] in order and waits for their confirms, filling `results`.
  Outcome PublishAndConfirm(std::span<const Event> batch, const std::vector<size_t>& sending,
                            std::vector<Status>* results, const StopSignal& stop, TimePoint start) {
    Outcome out;
    if (Status st = EnsureSession(); !st.ok()) {
      for (size_t i : sending) (*results)[i] = st;
      out.unconfirmed = sending;
      return out;
    }
    pending_.clear();
    returned_.clear();
    by_id_.clear();
    const amqp_channel_t channel = static_cast<amqp_channel_t>(session_->channel());
    for (size_t n = 0; n < sending.size(); ++n) {
      const size_t i = sending[n];
      const Event& e = batch[i];
      const std::string routing_key = ExpandTemplate(endpoint_.routing_key, e);
      std::vector<amqp_table_entry_t> entries;
      const std::string created = std::to_string(e.created_at_us);
      // The table points into these strings: every key and value outlives the publish.
      auto add = [&entries](amqp_bytes_t k, const std::string& v) {
        amqp_table_entry_t entry;
        entry.key = k;
        entry.value.kind = AMQP_FIELD_KIND_UTF8;
        entry.value.value.bytes = Bytes(v);
        entries.push_back(entry);
      };
      add(amqp_cstring_bytes("event_id"), e.event_id);
      add(amqp_cstring_bytes("event_type"), e.event_type);
      add(amqp_cstring_bytes("aggregate_type"), e.aggregate_type);
      add(amqp_cstring_bytes("aggregate_id"), e.aggregate_id);
      add(amqp_cstring_bytes("created_at_us"), created);
      for (const auto& [k, v] : e.headers) add(Bytes(k), v);
      amqp_basic_properties_t props{};
      props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                     AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
                     AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
      props.content_type = amqp_cstring_bytes(
          nlohmann::json::accept(e.payload) ? "application/json" : "application/octet-stream");
      props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
      props.message_id = Bytes(e.event_id);
      props.type = Bytes(e.event_type);
      props.timestamp = static_cast<uint64_t>(e.created_at_us / 1000000);
      props.app_id = amqp_cstring_bytes("courier");
      props.headers.num_entries = static_cast<int>(entries.size());
      props.headers.entries = entries.data();
      if (Status fenced = CheckFence(stop); !fenced.ok()) {
        // Nothing more goes out; what was published and not confirmed stays unconfirmed.
        for (size_t m = n; m < sending.size(); ++m) (*results)[sending[m]] = fenced;
        break;
      }
      errno = 0;
      const int rc = amqp_basic_publish(session_->conn(), channel, Bytes(endpoint_.exchange),
                                        Bytes(routing_key), /*mandatory=*/1, /*immediate=*/0,
                                        &props, Bytes(e.payload));
      if (rc != AMQP_STATUS_OK) {
        Lost("publish failed: " + AmqpError(rc), sending, results, &out);
        return out;
      }
      last_io_ = Clock::Real().Now();
      pending_.emplace(next_tag_++, i);
      by_id_.emplace(e.event_id, i);
      // Take in the confirms that arrived meanwhile, so neither side's buffers fill.
      if (n % 256 == 255 && !Drain(Duration(0), sending, results, &out)) return out;
    }
    while (!pending_.empty()) {
      const TimePoint now = Clock::Real().Now();
      if (options_.delivery_timeout.count() > 0 && now - start > options_.delivery_timeout) break;
      if (stop.abandoned() || (stop.requested() && now - start > options_.shutdown_timeout)) break;
      if (!Drain(Duration(100), sending, results, &out)) return out;
    }
    for (const auto& [tag, i] : pending_) out.unconfirmed.push_back(i);
    pending_.clear();
    amqp_maybe_release_buffers(session_->conn());
    return out;
  }

  // Waits up to `wait` for a frame, then reads those already arrived. False when the channel
  // or connection is gone (`out` says why; the unconfirmed messages keep retriable results).
  bool Drain(Duration wait, const std::vector<size_t>& sending, std::vector<Status>* results,
             Outcome* out) {
    while (true) {
      amqp_frame_t frame;
      const timeval tv = ToTimeval(wait);
      errno = 0;
      const int rc = amqp_simple_wait_frame_noblock(session_->conn(), &frame, &tv);
      if (rc == AMQP_STATUS_TIMEOUT) return true;
      if (rc != AMQP_STATUS_OK) {
        Lost("connection lost: " + AmqpError(rc), sending, results, out);
        return false;
      }
      last_io_ = Clock::Real().Now();
      wait = Duration(0);
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      const amqp_method_t& method = frame.payload.method;
      switch (method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          const auto* ack = static_cast<amqp_basic_ack_t*>(method.decoded);
          Resolve(ack->delivery_tag, ack->multiple != 0, true, results);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          const auto* nack = static_cast<amqp_basic_nack_t*>(method.decoded);
          Resolve(nack->delivery_tag, nack->multiple != 0, false, results);
          break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
          const auto* ret = static_cast<amqp_basic_return_t*>(method.decoded);
          const std::string why = std::to_string(ret->reply_code) + " " + Text(ret->reply_text);
          const std::string key = Text(ret->routing_key);
          amqp_message_t message;
          const amqp_rpc_reply_t r =
              amqp_read_message(session_->conn(), frame.channel, &message, 0);
          if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            Lost("reading a returned message failed", sending, results, out);
            return false;
          }
          if (message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
            auto it = by_id_.find(Text(message.properties.message_id));
            if (it != by_id_.end()) {
              returned_[it->second] =
                  endpoint_.exchange.empty()
                      ? "amqp: no queue named '" + key + "' (" + why + ")"
                      : "amqp: no queue is bound to exchange '" + endpoint_.exchange +
                            "' for routing key '" + key + "' (" + why +
                            "); bind one, or give the exchange an alternate-exchange";
            }
          }
          amqp_destroy_message(&message);
          break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* close = static_cast<amqp_channel_close_t*>(method.decoded);
          out->channel_code = close->reply_code;
          out->reason = ServerError(method);
          amqp_channel_close_ok_t ok{};
          amqp_send_method(session_->conn(), frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
          const std::string text = close->reply_code == AMQP_NOT_FOUND
                                       ? ExchangeMissing()
                                       : "amqp: the broker closed the channel: " + out->reason;
          for (const auto& [tag, i] : pending_) {
            (*results)[i] = RetriableError(text);
            out->unconfirmed.push_back(i);
          }
          pending_.clear();
          if (!session_->ReopenChannel().ok() || !ConfirmMode(*session_).ok()) session_.reset();
          return false;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
          amqp_connection_close_ok_t ok{};
          amqp_send_method(session_->conn(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
          Lost("the broker closed the connection: " + ServerError(method), sending, results, out);
          return false;
        }
        case AMQP_CONNECTION_BLOCKED_METHOD:
          log::Warn("RabbitMQ blocks publishers (a memory or disk alarm); waiting",
                    {{"sink", Describe()}});
          break;
        default:
          break;
      }
    }
  }

  void Resolve(uint64_t tag, bool multiple, bool ack, std::vector<Status>* results) {
    auto end = pending_.upper_bound(tag);
    auto it = multiple ? pending_.begin() : pending_.find(tag);
    if (it == pending_.end()) return;
    if (!multiple) end = std::next(it);
    for (auto i = it; i != end; ++i) {
      const size_t index = i->second;
      if (!ack) {
        (*results)[index] = RetriableError("amqp: the broker nacked the message");
      } else if (auto r = returned_.find(index); r != returned_.end()) {
        (*results)[index] = RetriableError(r->second);
      } else {
        (*results)[index] = Status::Ok();
      }
    }
    pending_.erase(it, end);
  }

  // The connection is gone: whatever was not confirmed goes out again later.
  void Lost(const std::string& why, const std::vector<size_t>& sending,
            std::vector<Status>* results, Outcome* out) {
    const Status st = RetriableError("amqp: " + why);
    out->unconfirmed.clear();
    for (size_t i : sending) {
      if (!(*results)[i].ok() && (*results)[i].code() != StatusCode::kRejected) {
        (*results)[i] = st;
        out->unconfirmed.push_back(i);
      }
    }
    pending_.clear();
    session_.reset();
  }

  SinkOptions options_;
  AmqpEndpoint endpoint_;
  std::unique_ptr<AmqpSession> session_;
  TimePoint last_io_;
  uint64_t next_tag_ = 1;
  std::map<uint64_t, size_t> pending_;                // delivery tag -> batch index
  std::unordered_map<std::string, size_t> by_id_;     // event_id -> batch index
  std::unordered_map<size_t, std::string> returned_;  // batch index -> why unroutable
};

}  // namespace

Event EventFromAmqpMessage(const amqp_message_t& message) {
  Event ev;
  const amqp_basic_properties_t& p = message.properties;
  ev.payload = Text(message.body);
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) ev.event_id = Text(p.message_id);
  if (p._flags & AMQP_BASIC_TYPE_FLAG) ev.event_type = Text(p.type);
  if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
    for (int i = 0; i < p.headers.num_entries; ++i) {
      const amqp_table_entry_t& entry = p.headers.entries[i];
      if (entry.value.kind != AMQP_FIELD_KIND_UTF8 && entry.value.kind != AMQP_FIELD_KIND_BYTES) {
        continue;
      }
      const std::string k = Text(entry.key);
      const std::string v = Text(entry.value.value.bytes);
      if (k == "aggregate_type") {
        ev.aggregate_type = v;
      } else if (k == "aggregate_id") {
        ev.aggregate_id = v;
      } else if (k == "created_at_us") {
        ev.created_at_us = std::atoll(v.c_str());
      } else if (k != "event_id" && k != "event_type") {
        ev.headers.emplace_back(k, v);
      }
    }
  }
  return ev;
}

std::unique_ptr<Sink> MakeAmqpSink(const SinkOptions& options) {
  return std::make_unique<AmqpSink>(options);
}

}  // namespace courier
