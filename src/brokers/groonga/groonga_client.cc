#include "brokers/groonga/groonga_client.h"

#include "brokers/http/http.h"

namespace courier {
namespace {

size_t Collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

}  // namespace

Result<std::unique_ptr<GroongaClient>> GroongaClient::Make(std::string base, Duration timeout) {
  COURIER_RETURN_IF_ERROR(InitCurl());
  std::unique_ptr<GroongaClient> c(new GroongaClient());
  c->easy_ = curl_easy_init();
  if (c->easy_ == nullptr) return InternalError("libcurl could not make a handle");
  c->json_header_ = curl_slist_append(nullptr, "Content-Type: application/json");
  c->base_ = std::move(base);
  if (timeout.count() > 0) c->timeout_ms_ = static_cast<long>(timeout.count());
  return c;
}

GroongaClient::~GroongaClient() {
  if (easy_ != nullptr) curl_easy_cleanup(easy_);
  curl_slist_free_all(json_header_);
}

Result<nlohmann::json> GroongaClient::Run(std::string_view command, const GroongaArgs& args,
                                          std::string_view body) {
  std::string url = base_ + "/d/" + std::string(command) + "?command_version=3";
  for (const auto& [key, value] : args) {
    char* escaped = curl_easy_escape(easy_, value.data(), static_cast<int>(value.size()));
    url += "&" + key + "=" + (escaped != nullptr ? escaped : "");
    curl_free(escaped);
  }
  std::string answer;
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_reset(easy_);
  curl_easy_setopt(easy_, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(easy_, CURLOPT_WRITEDATA, &answer);
  curl_easy_setopt(easy_, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(easy_, CURLOPT_TIMEOUT_MS, timeout_ms_);
  curl_easy_setopt(easy_, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms_, 5000L));
  curl_easy_setopt(easy_, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy_, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy_, CURLOPT_XFERINFOFUNCTION, Progress);
  curl_easy_setopt(easy_, CURLOPT_XFERINFODATA, &watch_);
  if (!body.empty()) {
    curl_easy_setopt(easy_, CURLOPT_POST, 1L);
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, json_header_);
  }
  const CURLcode code = curl_easy_perform(easy_);
  const std::string what = "groonga " + base_ + " " + std::string(command);
  if (code == CURLE_ABORTED_BY_CALLBACK) {
    return CancelledError(what + ": stopped while waiting for an answer");
  }
  if (code != CURLE_OK) {
    return RetriableError(what + ": " + (error[0] != '\0' ? error : curl_easy_strerror(code)));
  }
  long status = 0;
  curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &status);
  const nlohmann::json reply = nlohmann::json::parse(answer, nullptr, false);
  // The answer's shape of command version 3, {"header":{..},"body":..}; some errors come in
  // version 1's [[return_code, start, elapsed, message, ..], body] whatever was asked.
  int rc = -1;
  std::string message;
  nlohmann::json result;
  if (!reply.is_discarded() && reply.is_object() && reply.contains("header") &&
      reply["header"].is_object()) {
    const nlohmann::json& header = reply["header"];
    rc = header.value("return_code", -1);
    if (header.contains("error") && header["error"].is_object() &&
        header["error"].contains("message") && header["error"]["message"].is_string()) {
      message = header["error"]["message"].get<std::string>();
    }
    if (reply.contains("body")) result = reply["body"];
  } else if (!reply.is_discarded() && reply.is_array() && !reply.empty() && reply[0].is_array() &&
             !reply[0].empty() && reply[0][0].is_number_integer()) {
    rc = reply[0][0].get<int>();
    if (reply[0].size() > 3 && reply[0][3].is_string()) message = reply[0][3].get<std::string>();
    if (reply.size() > 1) result = reply[1];
  } else {
    return RetriableError(what + ": HTTP " + std::to_string(status) + " without a groonga answer");
  }
  if (rc == 0 && status / 100 == 2) return result;
  if (message.empty()) message = "return code " + std::to_string(rc);
  // groonga answers 400 for what is wrong with the command (a bad name, a value that does
  // not fit its column) and 404 for what is missing; the same command fails again. 5xx: the
  // server is in trouble (out of memory, disk full, cancelled), which may pass.
  if (status >= 400 && status < 500) return RejectedError(what + " refused: " + message);
  return RetriableError(what + ": HTTP " + std::to_string(status) + ": " + message);
}

void GroongaClient::WatchStop(const StopSignal* stop, Duration shutdown) {
  watch_ = Watch{stop, shutdown, std::nullopt};
}

int GroongaClient::Progress(void* data, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  Watch& w = *static_cast<Watch*>(data);
  if (w.stop == nullptr) return 0;
  if (w.stop->abandoned()) return 1;
  if (!w.stop->requested()) return 0;
  const TimePoint now = Clock::Real().Now();
  if (!w.stopping) w.stopping = now;
  return now - *w.stopping >= w.shutdown ? 1 : 0;
}

std::string GroongaString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace courier
