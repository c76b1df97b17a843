// HTTP webhook sink (libcurl): one POST per event, the payload as the body, acked by a 2xx.
//
//   http(s)://[user:password@]host[:port]/path/{aggregate_type}[?query]
//
// The path may use {aggregate_type} and {event_type}. Requests carry `Idempotency-Key:
// <event_id>` and the CloudEvents binary-mode headers (ce-id, ce-type, ce-source, ce-subject,
// ce-time, ce-specversion), plus the event's own headers. Events of one aggregate are sent one
// after the other (the next only once the previous was answered); different aggregates go in
// parallel (up to kParallel requests) on kept-alive connections.
//
// Answers: 2xx acked; 408, 429, 5xx, timeouts and network errors are retried later; any other
// status refuses the event for good (dead letter). After any failure, refused or retriable, the
// aggregate's later events of the batch are not sent: under the park policy they are held behind
// the refused one, and the receiver never sees them before it, nor twice.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "brokers/http/http.h"

#include "brokers/sink.h"
#include "core/url.h"

namespace courier {
namespace {

constexpr size_t kParallel = 16;

std::string Rfc3339(int64_t unix_us) {
  const time_t secs = static_cast<time_t>(unix_us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(unix_us % 1000000));
  return buf;
}

// Header names a user header may not override: they frame the request.
bool IsReservedHeader(std::string name) {
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name == "content-length" || name == "content-type" || name == "host" ||
         name == "transfer-encoding" || name == "connection" || name == "idempotency-key" ||
         name.rfind("ce-", 0) == 0;
}

bool IsToken(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c))) {
      return false;
    }
  }
  return true;
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

// Events of one aggregate (same type and id) are sent one after the other.
std::string AggregateKey(const Event& e) {
  std::string key = e.aggregate_type;
  key.push_back('\0');
  return key + e.aggregate_id;
}

// The event with its routing fields percent-encoded, for use in a URL path.
Event Escaped(const Event& e) {
  Event out;
  auto escape = [](const std::string& text) {
    char* raw = curl_easy_escape(nullptr, text.data(), static_cast<int>(text.size()));
    std::string escaped = raw != nullptr ? raw : "";
    curl_free(raw);
    return escaped;
  };
  out.aggregate_type = escape(e.aggregate_type);
  out.event_type = escape(e.event_type);
  return out;
}

}  // namespace

Status InitCurl() {
  static const CURLcode global = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global != CURLE_OK) return InternalError("libcurl failed to initialise");
  return Status::Ok();
}

EventRequest::~EventRequest() {
  if (easy_ != nullptr) curl_easy_cleanup(easy_);
  if (headers_ != nullptr) curl_slist_free_all(headers_);
}

Result<std::unique_ptr<EventRequest>> EventRequest::Make(const std::string& url_template,
                                                         const Event& e, Duration timeout) {
  std::unique_ptr<EventRequest> req(new EventRequest());
  req->url_ = ExpandTemplate(url_template, Escaped(e));
  req->easy_ = curl_easy_init();
  if (req->easy_ == nullptr) return InternalError("libcurl failed to create a request");
  const bool json = nlohmann::json::accept(e.payload);
  std::vector<std::string> lines = {
      std::string("Content-Type: ") + (json ? "application/json" : "application/octet-stream"),
      "Idempotency-Key: " + e.event_id,
      "ce-specversion: 1.0",
      "ce-id: " + e.event_id,
      "ce-type: " + e.event_type,
      "ce-source: courier/" + e.aggregate_type,
      "ce-subject: " + e.aggregate_id,
      "ce-time: " + Rfc3339(e.created_at_us),
      "Expect:"};  // no 100-continue round trip
  for (const auto& [name, value] : e.headers) {
    if (IsToken(name) && !IsReservedHeader(name) &&
        value.find_first_of("\r\n") == std::string::npos) {
      lines.push_back(name + ": " + value);
    }
  }
  for (const std::string& line : lines) {
    if (line.find_first_of("\r\n") != std::string::npos) {
      return RejectedError("event field with a line break cannot be an HTTP header: " + line);
    }
    req->headers_ = curl_slist_append(req->headers_, line.c_str());
  }
  const long timeout_ms = static_cast<long>(timeout.count());
  CURL* c = req->easy_;
  curl_easy_setopt(c, CURLOPT_URL, req->url_.c_str());
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, e.payload.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(e.payload.size()));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, req->headers_);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 10000L));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, req->error_);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Discard);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "courier/0.1");
  return req;
}

Status EventRequest::Outcome(CURLcode code) const {
  if (code != CURLE_OK) {
    const std::string detail = error_[0] != '\0' ? error_ : curl_easy_strerror(code);
    return RetriableError("webhook " + RedactUrl(url_) + ": " + detail);
  }
  long status = 0;
  curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 200 && status < 300) return Status::Ok();
  const std::string what =
      "webhook " + RedactUrl(url_) + " answered HTTP " + std::to_string(status);
  if (status == 408 || status == 429 || status >= 500) return RetriableError(what);
  return RejectedError(what);
}

Status PostEvent(const std::string& url, const Event& e, Duration timeout) {
  COURIER_RETURN_IF_ERROR(InitCurl());
  COURIER_ASSIGN_OR_RETURN(auto req, EventRequest::Make(url, e, timeout));
  return req->Outcome(curl_easy_perform(req->easy()));
}

namespace {

class HttpSink final : public Sink {
 public:
  explicit HttpSink(SinkOptions options) : options_(std::move(options)) {}
  ~HttpSink() override {
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
  }

  Status Configure() override {
    COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options_.url));
    if (url.hosts.empty()) {
      return InvalidArgumentError("webhook URL " + Describe() +
                                  " names no host; write http://host:port/path");
    }
    return Status::Ok();
  }

  Status Open() override {
    COURIER_RETURN_IF_ERROR(InitCurl());
    COURIER_RETURN_IF_ERROR(Configure());
    multi_ = curl_multi_init();
    if (multi_ == nullptr) return InternalError("libcurl failed to create a multi handle");
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(kParallel));
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    std::vector<Status> results(batch.size(), RetriableError("not sent"));
    // Per aggregate, the batch's events in order; the head is in flight or next to go.
    std::map<std::string, std::deque<size_t>> queues;
    for (size_t i = 0; i < batch.size(); ++i) queues[AggregateKey(batch[i])].push_back(i);
    std::map<CURL*, std::pair<size_t, std::unique_ptr<EventRequest>>> active;
    // Starts the next request of every idle aggregate; true when it started any.
    auto start_more = [&] {
      const size_t before = active.size();
      for (auto& [aggregate, queue] : queues) {
        if (active.size() >= kParallel) break;
        if (queue.empty() || in_flight_.count(aggregate) > 0) continue;
        if (Status fenced = CheckFence(stop); !fenced.ok()) {
          for (size_t i : queue) results[i] = fenced;
          queue.clear();
          continue;
        }
        auto req = EventRequest::Make(options_.url, batch[queue.front()], Timeout());
        if (!req.ok()) {
          results[queue.front()] = req.status();
          queue.clear();
          continue;
        }
        in_flight_.insert(aggregate);
        CURL* easy = (*req)->easy();
        curl_multi_add_handle(multi_, easy);
        active.emplace(easy, std::make_pair(queue.front(), std::move(req).value()));
      }
      return active.size() > before;
    };
    const TimePoint start = Clock::Real().Now();
    start_more();
    while (!active.empty()) {
      if (stop.abandoned() ||
          (stop.requested() && Clock::Real().Now() - start > options_.shutdown_timeout)) {
        break;
      }
      int running = 0;
      curl_multi_perform(multi_, &running);
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        auto it = active.find(msg->easy_handle);
        if (it == active.end()) continue;
        const size_t index = it->second.first;
        std::unique_ptr<EventRequest> req = std::move(it->second.second);
        active.erase(it);
        curl_multi_remove_handle(multi_, req->easy());
        const Event& e = batch[index];
        const std::string aggregate = AggregateKey(e);
        std::deque<size_t>& queue = queues[aggregate];
        in_flight_.erase(aggregate);
        results[index] = req->Outcome(msg->data.result);
        queue.pop_front();
        if (!results[index].ok()) {
          // Hold back the aggregate's later events: nothing may overtake this one. Refused for
          // good, it is parked and they are held behind it (park policy) or sent next time
          // (skip policy); not acked, they go out after it, later.
          for (size_t later : queue) {
            results[later] = RetriableError("not sent: an earlier event of its aggregate failed");
          }
          queue.clear();
        }
      }
      // A request just added has no socket yet: drive it at once instead of sleeping in poll.
      if (start_more()) continue;
      if (!active.empty()) curl_multi_poll(multi_, nullptr, 0, 100, nullptr);
    }
    for (auto& [easy, req] : active) {
      curl_multi_remove_handle(multi_, easy);
      results[req.first] = CancelledError("stopped before the webhook answered");
      in_flight_.erase(AggregateKey(batch[req.first]));
    }
    return results;
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  Duration Timeout() const {
    return options_.delivery_timeout.count() > 0 ? options_.delivery_timeout : Duration(30000);
  }

  SinkOptions options_;
  CURLM* multi_ = nullptr;
  std::set<std::string> in_flight_;  // aggregates with a request in flight
};

}  // namespace

std::unique_ptr<Sink> MakeHttpSink(const SinkOptions& options) {
  return std::make_unique<HttpSink>(options);
}

}  // namespace courier
