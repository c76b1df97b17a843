// A small HTTP endpoint (libmicrohttpd) for /metrics, /healthz and /readyz: GET only, bound to
// one address, answered by a handler running on the server's own thread; or, started with
// StartThreaded, each request on a thread of its own, for handlers that block (`courier
// project`'s /wait).
//
// Thread-safety: Start's handler is called from libmicrohttpd's thread, one request at a time;
// StartThreaded's from several threads at once.
#pragma once

#include <chrono>
#include <functional>
#include <map>
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

struct HttpRequest {
  std::string path;
  std::map<std::string, std::string> query;  // the URL's query arguments, decoded
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
  using RequestHandler = std::function<HttpResponse(const HttpRequest& request)>;
  // A thread per connection: a handler may block (until the daemon stops, which waits for
  // it: a blocking handler must end soon once the process is stopping).
  static Result<std::unique_ptr<HttpEndpoint>> StartThreaded(const std::string& host, int port,
                                                             RequestHandler handler);
  // Waits (up to `timeout`) until no connection is open: the answers of handlers that are
  // ending are sent before the destructor closes every connection. StartThreaded's answers
  // close their connections (no keep-alive), so this ends once they are sent.
  void Drain(std::chrono::milliseconds timeout);
  ~HttpEndpoint();
  int port() const { return port_; }

 private:
  HttpEndpoint() = default;
  MHD_Daemon* daemon_ = nullptr;
  static Result<std::unique_ptr<HttpEndpoint>> Listen(const std::string& host, int port,
                                                      RequestHandler handler, bool threaded);
  RequestHandler handler_;
  bool threaded_ = false;
  int port_ = 0;
  friend struct HttpEndpointAccess;
};

}  // namespace courier
