// groonga's HTTP API (https://groonga.org/docs/reference/command.html): one command per
// request, GET /d/COMMAND?ARGS&command_version=3, or POST with a JSON body for `load`; the
// answer is {"header":{"return_code":N,"error":{"message":..}},"body":..}.
//
// Thread-safety: a client belongs to one thread (it keeps one libcurl handle, and with it one
// kept-alive connection).
#pragma once

#include <curl/curl.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "courier/status.h"

namespace courier {

using GroongaArgs = std::vector<std::pair<std::string, std::string>>;

class GroongaClient {
 public:
  // `base`: http(s)://host:port. `timeout`: per request (zero: 10 s).
  static Result<std::unique_ptr<GroongaClient>> Make(std::string base, Duration timeout);
  ~GroongaClient();
  GroongaClient(const GroongaClient&) = delete;
  GroongaClient& operator=(const GroongaClient&) = delete;

  // Runs `command`; with a `body`, POSTs it as JSON (load). Returns the answer's body.
  // kRetriable: the server is unreachable, timed out, answered 5xx or no groonga answer;
  // kRejected: groonga refused the command (HTTP 4xx), with its message.
  Result<nlohmann::json> Run(std::string_view command, const GroongaArgs& args,
                             std::string_view body = {});

  // Requests from now on give up (kCancelled) once `stop` (not owned; null: none) was
  // abandoned, or requested `shutdown` ago: a stopping relay waits that long for an answer.
  void WatchStop(const StopSignal* stop, Duration shutdown);

 private:
  GroongaClient() = default;
  CURL* easy_ = nullptr;
  curl_slist* json_header_ = nullptr;
  std::string base_;
  long timeout_ms_ = 10000;
  struct Watch {
    const StopSignal* stop = nullptr;
    Duration shutdown{0};
    std::optional<TimePoint> stopping;  // when the stop request was first seen
  } watch_;
  static int Progress(void* watch, curl_off_t, curl_off_t, curl_off_t, curl_off_t);
};

// `text` as a string literal of groonga's script syntax (filters): quoted, with '"' and '\'
// escaped.
std::string GroongaString(std::string_view text);

}  // namespace courier
