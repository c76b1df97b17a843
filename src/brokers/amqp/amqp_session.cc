// RabbitMQ connections shared by the sink and the readers: URL parsing, the TCP or TLS socket,
// the login and the channel (AmqpSession), and the librabbitmq glue of amqp_wire.h.
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

#include "brokers/amqp/amqp.h"
#include "brokers/amqp/amqp_wire.h"
#include "core/encoding.h"
#include "core/url.h"

namespace courier {

timeval ToTimeval(Duration d) {
  timeval tv;
  tv.tv_sec = d.count() / 1000;
  tv.tv_usec = (d.count() % 1000) * 1000;
  return tv;
}

// librabbitmq's text for a status; for socket errors, the system's reason too.
std::string AmqpError(int rc) {
  std::string text = amqp_error_string2(rc);
  if (rc == AMQP_STATUS_SOCKET_ERROR && errno != 0)
    text += std::string(" (") + strerror(errno) + ")";
  return text;
}

std::string Text(amqp_bytes_t b) { return std::string(static_cast<const char*>(b.bytes), b.len); }

amqp_bytes_t Bytes(const std::string& s) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());
  return b;
}

std::string ServerError(const amqp_method_t& method) {
  if (method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* m = static_cast<amqp_connection_close_t*>(method.decoded);
    return std::to_string(m->reply_code) + " " + Text(m->reply_text);
  }
  if (method.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* m = static_cast<amqp_channel_close_t*>(method.decoded);
    return std::to_string(m->reply_code) + " " + Text(m->reply_text);
  }
  return amqp_method_name(method.id);
}

namespace {

// Connect errors with this prefix need the operator (IsAmqpSetupError).
constexpr char kTlsSetup[] = "amqp: TLS: ";

// A plain TCP socket, or a TLS one with the endpoint's CAs and client certificate.
Result<amqp_socket_t*> NewSocket(amqp_connection_state_t conn, const TlsSettings& tls) {
  if (!tls.enabled) {
    amqp_socket_t* socket = amqp_tcp_socket_new(conn);
    if (socket == nullptr) return InternalError("amqp: cannot allocate a socket");
    return socket;
  }
  amqp_socket_t* socket = amqp_ssl_socket_new(conn);
  if (socket == nullptr) return InternalError("amqp: cannot allocate a TLS socket");
  amqp_ssl_socket_set_verify_peer(socket, tls.verify ? 1 : 0);
  amqp_ssl_socket_set_verify_hostname(socket, tls.verify ? 1 : 0);
  const std::string ca = tls.ca_file.empty() ? kSystemCaBundle : tls.ca_file;
  if (tls.verify && amqp_ssl_socket_set_cacert(socket, ca.c_str()) != AMQP_STATUS_OK) {
    return RetriableError(std::string(kTlsSetup) + "cannot read CA certificates from " + ca +
                          "; cacert= must name a PEM file");
  }
  if (!tls.cert_file.empty() && amqp_ssl_socket_set_key(socket, tls.cert_file.c_str(),
                                                        tls.key_file.c_str()) != AMQP_STATUS_OK) {
    return RetriableError(std::string(kTlsSetup) + "cannot load the client certificate " +
                          tls.cert_file + " with key " + tls.key_file +
                          "; cert= and key= must name matching PEM files");
  }
  return socket;
}

}  // namespace

bool IsAmqpSetupError(const Status& status) {
  const std::string& m = status.message();
  return m.find(" refused user ") != std::string::npos || m.rfind(kTlsSetup, 0) == 0;
}

Result<AmqpEndpoint> ParseAmqpUrl(const std::string& text) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(text));
  const std::string form =
      "; write amqp://user:password@host:5672/VHOST/EXCHANGE (vhost \"/\" is %2F)";
  AmqpEndpoint e;
  if (url.scheme == "amqps") {
    e.tls.enabled = true;
    e.port = 5671;
  }
  if (url.hosts.empty() || url.hosts.find(',') != std::string::npos) {
    return InvalidArgumentError("amqp URL " + RedactUrl(text) + " must name one broker" + form);
  }
  e.host = url.hosts;
  if (const size_t colon = url.hosts.rfind(':'); colon != std::string::npos) {
    e.host = url.hosts.substr(0, colon);
    const std::string port = url.hosts.substr(colon + 1);
    const std::optional<int64_t> n = ParseInt64(port);
    e.port = n && *n > 0 && *n <= 65535 ? static_cast<int>(*n) : 0;
    if (e.port == 0) {
      return InvalidArgumentError("amqp URL " + RedactUrl(text) + " has a bad port '" + port + "'" +
                                  form);
    }
  }
  if (!url.user.empty()) {
    e.user = url.user;
    e.password = url.password;
  }
  // The path is decoded already: the exchange is what follows the last '/', the vhost the rest.
  const size_t slash = url.path.rfind('/');
  if (slash == std::string::npos) {
    return InvalidArgumentError("amqp URL " + RedactUrl(text) + " needs a vhost and an exchange" +
                                form);
  }
  e.vhost = url.path.substr(0, slash);
  e.exchange = url.path.substr(slash + 1);
  if (e.vhost.empty()) {
    return InvalidArgumentError("amqp URL " + RedactUrl(text) + " has an empty vhost" + form);
  }
  for (const auto& [key, value] : url.query) {
    Status bad;
    if (key == "routing_key") {
      e.routing_key = value;
    } else if (key == "queue") {
      e.queue = value;
    } else if (!TakeTlsParam(key, value, &e.tls, &bad)) {
      return InvalidArgumentError("amqp URL: unknown parameter '" + key +
                                  "' (known: routing_key, queue; with amqps://: cacert, cert, key, "
                                  "verify)");
    }
    if (!bad.ok()) return InvalidArgumentError("amqp URL: " + bad.message());
  }
  if (Status st = CheckTlsSettings(e.tls, "amqps://"); !st.ok()) {
    return InvalidArgumentError("amqp URL " + RedactUrl(text) + ": " + st.message());
  }
  return e;
}

Result<std::unique_ptr<AmqpSession>> AmqpSession::Connect(const AmqpEndpoint& e, Duration timeout,
                                                          int heartbeat_s) {
  std::unique_ptr<AmqpSession> s(new AmqpSession());
  s->conn_ = amqp_new_connection();
  if (s->conn_ == nullptr) return InternalError("amqp: cannot allocate a connection");
  const std::string where = e.host + ":" + std::to_string(e.port);
  COURIER_ASSIGN_OR_RETURN(amqp_socket_t * socket, NewSocket(s->conn_, e.tls));
  const timeval tv = ToTimeval(timeout);
  errno = 0;
  if (const int rc = amqp_socket_open_noblock(socket, e.host.c_str(), e.port, &tv); rc != 0) {
    if (rc == AMQP_STATUS_SSL_PEER_VERIFY_FAILED || rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED) {
      return RetriableError(std::string(kTlsSetup) + "the certificate of " + where +
                            " does not verify (" + AmqpError(rc) +
                            "); cacert= must name the CA that signed it and the URL's host must "
                            "be a name in it");
    }
    return RetriableError("amqp: cannot connect to " + where + ": " + AmqpError(rc));
  }
  amqp_set_handshake_timeout(s->conn_, &tv);
  amqp_set_rpc_timeout(s->conn_, &tv);
  const amqp_rpc_reply_t login =
      amqp_login(s->conn_, e.vhost.c_str(), 0, 131072, heartbeat_s, AMQP_SASL_METHOD_PLAIN,
                 e.user.c_str(), e.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    if (login.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
      return RetriableError("amqp: " + where + " refused user '" + e.user + "' on vhost '" +
                            e.vhost + "': " + ServerError(login.reply));
    }
    return RetriableError("amqp: login to " + where +
                          " failed: " + amqp_error_string2(login.library_error));
  }
  amqp_channel_open(s->conn_, static_cast<amqp_channel_t>(s->channel_));
  COURIER_RETURN_IF_ERROR(s->RpcStatus("channel.open"));
  return s;
}

AmqpSession::~AmqpSession() {
  if (conn_ == nullptr) return;
  // A polite close when the broker is there; a bounded wait when it is not.
  const timeval tv = ToTimeval(Duration(1000));
  amqp_set_rpc_timeout(conn_, &tv);
  amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn_);
}

Status AmqpSession::RpcStatus(const std::string& what) {
  const amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return Status::Ok();
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        // The channel is gone; ReopenChannel() makes the next one.
        amqp_channel_close_ok_t ok{};
        amqp_send_method(conn_, static_cast<amqp_channel_t>(channel_), AMQP_CHANNEL_CLOSE_OK_METHOD,
                         &ok);
        const uint16_t code = static_cast<amqp_channel_close_t*>(r.reply.decoded)->reply_code;
        const std::string text = "amqp: " + what + ": " + ServerError(r.reply);
        if (code == AMQP_NOT_FOUND) return NotFoundError(text);
        return RetriableError(text);
      }
      return RetriableError("amqp: " + what + ": " + ServerError(r.reply));
    default:
      return RetriableError("amqp: " + what + ": " + amqp_error_string2(r.library_error));
  }
}

Status AmqpSession::ReopenChannel() {
  ++channel_;
  amqp_channel_open(conn_, static_cast<amqp_channel_t>(channel_));
  return RpcStatus("channel.open");
}

Status AmqpSession::DeclareExchange(const std::string& name, const std::string& type) {
  amqp_exchange_declare(conn_, static_cast<amqp_channel_t>(channel_), Bytes(name), Bytes(type), 0,
                        1, 0, 0, amqp_empty_table);
  return RpcStatus("declare exchange " + name);
}

Status AmqpSession::DeclareQueue(const std::string& queue, const std::string& exchange,
                                 const std::string& binding_key) {
  amqp_queue_declare(conn_, static_cast<amqp_channel_t>(channel_), Bytes(queue), 0, 1, 0, 0,
                     amqp_empty_table);
  COURIER_RETURN_IF_ERROR(RpcStatus("declare queue " + queue));
  if (exchange.empty()) return Status::Ok();
  amqp_queue_bind(conn_, static_cast<amqp_channel_t>(channel_), Bytes(queue), Bytes(exchange),
                  Bytes(binding_key), amqp_empty_table);
  return RpcStatus("bind queue " + queue);
}

}  // namespace courier
