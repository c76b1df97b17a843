// The strategies' Kafka producer: the event to env.topic, keyed by its aggregate, with
// courier's headers (as the relay sends it), so that every strategy's topic reads alike.
//
// Thread-safety: one thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

namespace courier::lab {

class LabProducer {
 public:
  // acks=all, idempotence on; `timeout` bounds each send (message.timeout.ms): a send during a
  // broker outage fails after it, as an application's would.
  static Result<std::unique_ptr<LabProducer>> Open(const std::string& bootstrap,
                                                   const std::string& topic, Duration timeout);
  ~LabProducer();
  // Sends `e` and waits for the broker's acknowledgement (or the timeout: kRetriable).
  Status Publish(const Event& e);
  // Sends `e` without waiting; Poll reports it later.
  Status Send(const Event& e);
  // Serves delivery reports; returns the event_ids acknowledged and failed since the last call.
  struct Reports {
    std::vector<std::string> acked, failed;
  };
  Reports Poll(Duration timeout);

 private:
  LabProducer() = default;
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace courier::lab
