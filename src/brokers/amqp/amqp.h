// RabbitMQ (AMQP 0-9-1) endpoints shared by the sink, its readers (amqp_readers.cc) and the
// tests' set-up: URL parsing and one logged-in connection with an open channel.
//
// Thread-safety: a session belongs to one thread at a time (librabbitmq's rule).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "brokers/tls.h"
#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

typedef struct amqp_connection_state_t_* amqp_connection_state_t;
typedef struct amqp_message_t_ amqp_message_t;

namespace courier {

struct AmqpEndpoint {
  std::string host;
  int port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";
  std::string exchange;                          // "" is the default exchange
  std::string routing_key = "{aggregate_type}";  // a template
  std::string queue;                             // tail only: read this queue
  TlsSettings tls;                               // amqps://
};

// amqp[s]://[user:password@]host[:port]/VHOST/EXCHANGE[?routing_key=TEMPLATE&queue=NAME]
// VHOST is percent-encoded ("%2F" for "/"); an empty EXCHANGE is the default exchange.
// amqps:// connects with TLS (default port 5671) and takes the parameters of brokers/tls.h.
Result<AmqpEndpoint> ParseAmqpUrl(const std::string& url);

// A connection logged in to the endpoint's vhost with channel 1 open. Unreachable, refused
// logins and unknown vhosts are kRetriable with the broker's reason; so is a TLS handshake
// that fails (IsAmqpSetupError tells those apart from an absent broker).
class AmqpSession {
 public:
  static Result<std::unique_ptr<AmqpSession>> Connect(const AmqpEndpoint& endpoint,
                                                      Duration timeout, int heartbeat_s = 0);
  ~AmqpSession();
  AmqpSession(const AmqpSession&) = delete;
  AmqpSession& operator=(const AmqpSession&) = delete;

  amqp_connection_state_t conn() const { return conn_; }
  int channel() const { return channel_; }
  // Closes the channel (after a channel error) and opens the next one.
  Status ReopenChannel();
  // Declares a durable exchange of `type` (direct, topic, fanout, headers).
  Status DeclareExchange(const std::string& name, const std::string& type);
  // Declares a durable queue, bound to `exchange` with `binding_key` unless exchange is "".
  Status DeclareQueue(const std::string& queue, const std::string& exchange,
                      const std::string& binding_key);
  // The last RPC's outcome as a status ("what" names the call).
  Status RpcStatus(const std::string& what);

 private:
  AmqpSession() = default;
  amqp_connection_state_t conn_ = nullptr;
  int channel_ = 1;
};

// True for a connect error the operator must fix (refused login, unreadable certificate files,
// a server certificate that does not verify), as opposed to a broker that is away.
bool IsAmqpSetupError(const Status& status);

// Rebuilds an Event from a message the sink published (properties, headers, body).
Event EventFromAmqpMessage(const amqp_message_t& message);

}  // namespace courier
