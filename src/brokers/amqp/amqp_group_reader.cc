// The Reader of a RabbitMQ queue with manual acknowledgements: `courier consume` reads through it
// (brokers/reader.h).
//
// Thread-safety: one thread.
#include <amqp.h>

#include "brokers/amqp/amqp.h"
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

}  // namespace

Result<std::unique_ptr<Reader>> MakeAmqpGroupReader(const ReaderOptions& options) {
  auto reader = std::make_unique<AmqpGroupReader>();
  COURIER_RETURN_IF_ERROR(reader->Open(options.url));
  return std::unique_ptr<Reader>(std::move(reader));
}

}  // namespace courier
