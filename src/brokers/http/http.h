// One event as an HTTP POST, shared by the webhook sink and `courier consume --to`: the
// payload as the body, `Idempotency-Key: <event_id>`, the CloudEvents binary-mode headers
// (ce-id, ce-type, ce-source, ce-subject, ce-time, ce-specversion) and the event's own headers.
// Answers: 2xx ok; 408, 429, 5xx, timeouts and network errors kRetriable; others kRejected.
//
// Thread-safety: a request belongs to one thread.
#pragma once

#include <curl/curl.h>

#include <memory>
#include <string>

#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier {

Status InitCurl();

class EventRequest {
 public:
  // `url_template` may use {aggregate_type} and {event_type} (percent-encoded). The body is
  // sent from `event.payload`: the event must outlive the request.
  static Result<std::unique_ptr<EventRequest>> Make(const std::string& url_template,
                                                    const Event& event, Duration timeout);
  ~EventRequest();
  EventRequest(const EventRequest&) = delete;
  EventRequest& operator=(const EventRequest&) = delete;

  CURL* easy() const { return easy_; }
  // The answer, once libcurl finished the transfer with `code`.
  Status Outcome(CURLcode code) const;

 private:
  EventRequest() = default;
  CURL* easy_ = nullptr;
  curl_slist* headers_ = nullptr;
  std::string url_;
  char error_[CURL_ERROR_SIZE] = {};
};

// Sends one event and waits for the answer.
Status PostEvent(const std::string& url, const Event& event, Duration timeout);

}  // namespace courier
