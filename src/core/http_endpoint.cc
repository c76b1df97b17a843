#include "core/http_endpoint.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace courier {

struct HttpEndpointAccess {
  static MHD_Result AddArgument(void* cls, MHD_ValueKind, const char* key, const char* value) {
    static_cast<std::map<std::string, std::string>*>(cls)->emplace(key,
                                                                   value != nullptr ? value : "");
    return MHD_YES;
  }

  static MHD_Result Answer(void* cls, MHD_Connection* connection, const char* url,
                           const char* method, const char*, const char*, size_t*, void**) {
    auto* self = static_cast<HttpEndpoint*>(cls);
    HttpResponse r;
    if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0) {
      r.status = 405;
      r.body = "only GET\n";
    } else {
      HttpRequest request;
      request.path = url;
      MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, &AddArgument, &request.query);
      r = self->handler_(request);
    }
    MHD_Response* response = MHD_create_response_from_buffer(
        r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(response, "Content-Type", r.content_type.c_str());
    // One request per connection, so Drain sees the connection end once its answer is sent.
    if (self->threaded_) MHD_add_response_header(response, "Connection", "close");
    const MHD_Result ret =
        MHD_queue_response(connection, static_cast<unsigned>(r.status), response);
    MHD_destroy_response(response);
    return ret;
  }
};

namespace {

Result<sockaddr_in> ListenAddress(const std::string& host, int port) {
  if (port < 0 || port > 65535) {
    return InvalidArgumentError("port " + std::to_string(port) + " is not from 0 to 65535");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1) return addr;
  // A name (localhost, the host's own name): its first IPv4 address, as a client would reach it.
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return InvalidArgumentError("'" + host + "' is neither an IPv4 address nor a name that " +
                                "resolves to one (" + ::gai_strerror(rc) +
                                "); write e.g. 127.0.0.1, localhost or 0.0.0.0");
  }
  addr.sin_addr = reinterpret_cast<const sockaddr_in*>(found->ai_addr)->sin_addr;
  ::freeaddrinfo(found);
  return addr;
}

}  // namespace

Status CheckListenAddress(const std::string& host, int port) {
  return ListenAddress(host, port).status();
}

Result<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& host, int port,
                                                          Handler handler) {
  return Listen(
      host, port,
      [handler = std::move(handler)](const HttpRequest& request) { return handler(request.path); },
      /*threaded=*/false);
}

Result<std::unique_ptr<HttpEndpoint>> HttpEndpoint::StartThreaded(const std::string& host, int port,
                                                                  RequestHandler handler) {
  return Listen(host, port, std::move(handler), /*threaded=*/true);
}

Result<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Listen(const std::string& host, int port,
                                                           RequestHandler handler, bool threaded) {
  COURIER_ASSIGN_OR_RETURN(const sockaddr_in addr, ListenAddress(host, port));
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint());
  e->handler_ = std::move(handler);
  e->threaded_ = threaded;
  const unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                         (threaded ? static_cast<unsigned>(MHD_USE_THREAD_PER_CONNECTION) : 0u);
  e->daemon_ = MHD_start_daemon(flags, static_cast<uint16_t>(port), nullptr, nullptr,
                                &HttpEndpointAccess::Answer, e.get(), MHD_OPTION_SOCK_ADDR, &addr,
                                MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (e->daemon_ == nullptr) {
    return InvalidArgumentError("cannot listen on " + host + ":" + std::to_string(port) +
                                " for metrics (in use?); pick another with --metrics-port");
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(e->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  e->port_ = info != nullptr ? info->port : port;
  return e;
}

void HttpEndpoint::Drain(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (info == nullptr || info->num_connections == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

HttpEndpoint::~HttpEndpoint() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace courier
