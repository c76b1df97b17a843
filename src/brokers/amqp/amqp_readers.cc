// RabbitMQ's readers (brokers/reader.h): a queue consumed with manual acknowledgements for
// `courier consume`, and a queue read without acknowledging (its messages stay in it) or an
// exchange's new messages for `courier tail` and the tests' checks.
//
// Thread-safety: one thread.
#include <amqp.h>

#include "brokers/amqp/amqp.h"
#include "brokers/amqp/amqp_wire.h"
#include "brokers/reader.h"

namespace courier {
namespace {

// A RabbitMQ queue consumed with manual acknowledgements (up to 100 unacknowledged); what a
// lost connection had not acknowledged the broker requeues.
class AmqpGroupReader final : public Reader {
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

  Result<std::optional<Message>> Next(Duration timeout) override {
    COURIER_RETURN_IF_ERROR(Connect());
    amqp_maybe_release_buffers(session_->conn());
    amqp_envelope_t envelope;
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    const amqp_rpc_reply_t r = amqp_consume_message(session_->conn(), &envelope, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
      return std::optional<Message>();
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      session_.reset();
      return RetriableError("amqp: consuming from " + endpoint_.queue + " failed");
    }
    Message d;
    d.event = EventFromAmqpMessage(envelope.message);
    d.topic = endpoint_.queue;
    d.offset = static_cast<int64_t>(envelope.delivery_tag);
    d.generation = generation_;
    amqp_destroy_envelope(&envelope);
    return std::optional<Message>(std::move(d));
  }

  Status Ack(const Message& d) override {
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

// Reads events back: from the URL's queue when set, without removing them (they are never
// acked, so they return to the queue when the reader closes); otherwise from a temporary
// queue bound to the exchange, which sees only events published after Open.
class AmqpTailReader final : public Reader {
 public:
  Status Open(const ReaderOptions& o) {
    COURIER_ASSIGN_OR_RETURN(const AmqpEndpoint e, ParseAmqpUrl(o.url));
    if (e.queue.empty() && (o.from_beginning || o.to_end)) {
      return InvalidArgumentError(
          "an exchange keeps no history: --from-beginning and --exit-at-end need a queue to "
          "read, amqp://host:port/VHOST/?queue=NAME (its messages stay in it)");
    }
    where_ = e.queue.empty() ? "{\"exchange\":\"" + e.exchange + "\"}"
                             : "{\"queue\":\"" + e.queue + "\"}";
    COURIER_ASSIGN_OR_RETURN(session_, AmqpSession::Connect(e, Duration(5000)));
    amqp_connection_state_t conn = session_->conn();
    const auto channel = static_cast<amqp_channel_t>(session_->channel());
    std::string queue = e.queue;
    const bool own_queue = queue.empty();
    if (own_queue) {
      if (e.exchange.empty()) {
        return InvalidArgumentError(
            "tail of the default exchange needs the queue to read: add ?queue=NAME");
      }
      amqp_queue_declare_ok_t* ok =
          amqp_queue_declare(conn, channel, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
      COURIER_RETURN_IF_ERROR(session_->RpcStatus("declare a queue to read from"));
      queue = Text(ok->queue);
      // A concrete routing key is bound as is; a template binds everything (topic "#").
      const std::string key = e.routing_key.find('{') == std::string::npos ? e.routing_key : "#";
      amqp_queue_bind(conn, channel, Bytes(queue), Bytes(e.exchange), Bytes(key), amqp_empty_table);
      COURIER_RETURN_IF_ERROR(session_->RpcStatus("bind to exchange " + e.exchange));
    }
    topic_ = queue;
    // Messages of a named queue are never acked, so they stay in it.
    amqp_basic_consume(conn, channel, Bytes(queue), amqp_empty_bytes, 0, own_queue ? 1 : 0, 0,
                       amqp_empty_table);
    Status st = session_->RpcStatus("consume from " + queue);
    if (st.code() == StatusCode::kNotFound) {
      return InvalidArgumentError("amqp: no queue named '" + queue + "' in vhost '" + e.vhost +
                                  "'");
    }
    return st;
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    amqp_maybe_release_buffers(session_->conn());
    amqp_envelope_t envelope;
    const timeval tv = ToTimeval(timeout);
    const amqp_rpc_reply_t r = amqp_consume_message(session_->conn(), &envelope, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
      return std::optional<Message>();
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      return RetriableError("amqp: reading failed: " +
                            std::string(r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                                            ? amqp_error_string2(r.library_error)
                                            : ServerError(r.reply)));
    }
    Message m;
    m.event = EventFromAmqpMessage(envelope.message);
    m.topic = topic_;
    m.offset = static_cast<int64_t>(envelope.delivery_tag);
    m.where = where_;
    amqp_destroy_envelope(&envelope);
    return std::optional<Message>(std::move(m));
  }

  Status Ack(const Message&) override { return Status::Ok(); }

 private:
  std::unique_ptr<AmqpSession> session_;
  std::string topic_;
  std::string where_;
};

}  // namespace

Result<std::unique_ptr<Reader>> MakeAmqpReader(const ReaderOptions& options) {
  if (options.group.empty()) {
    auto reader = std::make_unique<AmqpTailReader>();
    COURIER_RETURN_IF_ERROR(reader->Open(options));
    return std::unique_ptr<Reader>(std::move(reader));
  }
  auto reader = std::make_unique<AmqpGroupReader>();
  COURIER_RETURN_IF_ERROR(reader->Open(options.url));
  return std::unique_ptr<Reader>(std::move(reader));
}

}  // namespace courier
