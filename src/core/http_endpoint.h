// A small HTTP endpoint (libmicrohttpd) for /metrics, /healthz and /readyz: GET only, bound to
// one address, answered by a handler running on the server's own thread.
//
// Thread-safety: the handler is called from libmicrohttpd's thread, one request at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "courier/status.h"

struct MHD_Daemon;

namespace courier {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Whether Start(host, port, ...) could bind that address: `host` is an IPv4 address or a
// name that resolves to one (localhost), `port` is from 0 to 65535. kInvalidArgument naming
// what is wrong; Start checks the same.
Status CheckListenAddress(const std::string& host, int port);

class HttpEndpoint {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;
  // kInvalidArgument for a bad host (CheckListenAddress) or a port already in use (the message
  // says which).
  static Result<std::unique_ptr<HttpEndpoint>> Start(const std::string& host, int port,
                                                     Handler handler);
  ~HttpEndpoint();
  int port() const { return port_; }

 private:
  HttpEndpoint() = default;
  MHD_Daemon* daemon_ = nullptr;
  Handler handler_;
  int port_ = 0;
  friend struct HttpEndpointAccess;
};

}  // namespace courier
