// LabProducer over librdkafka (lab/lab_kafka.h): the relay's producer settings, one event per
// produce call, delivery reports per event_id.
#include "lab/lab_kafka.h"

#include <algorithm>
#include <set>

#include "brokers/kafka/kafka_common.h"

namespace courier::lab {

struct LabProducer::State {
  KafkaHandle producer;
  std::string topic;
  Duration timeout{0};
  // Filled by the delivery report callback (inside rd_kafka_poll, on the caller's thread).
  Reports reports;

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto* state = static_cast<State*>(opaque);
    std::unique_ptr<std::string> event_id(static_cast<std::string*>(msg->_private));
    if (state == nullptr || event_id == nullptr) return;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      state->reports.acked.push_back(std::move(*event_id));
    } else {
      state->reports.failed.push_back(std::move(*event_id));
    }
  }
};

Result<std::unique_ptr<LabProducer>> LabProducer::Open(const std::string& bootstrap,
                                                       const std::string& topic, Duration timeout) {
  std::unique_ptr<LabProducer> p(new LabProducer());
  p->state_ = std::make_unique<State>();
  p->state_->topic = topic;
  p->state_->timeout = timeout;
  auto props = KafkaProducerSettings(bootstrap, timeout);
  // One command, one event: no batching delay on the command's path. Reconnecting soon after
  // an outage: the lab's outage lasts a few commands, and a command waits at most `timeout`.
  for (auto& [k, v] : props) {
    if (k == "linger.ms") v = "0";
    if (k == "reconnect.backoff.max.ms") v = "500";
  }
  COURIER_ASSIGN_OR_RETURN(KafkaConf conf, MakeKafkaConf(props));
  rd_kafka_conf_set_opaque(conf.get(), p->state_.get());
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &State::OnDelivery);
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
  if (rk == nullptr) return InvalidArgumentError(std::string("Kafka producer: ") + err);
  conf.release();  // owned by rk now
  p->state_->producer.reset(rk);
  FetchTopicMetadata(rk, topic);
  return p;
}

LabProducer::~LabProducer() {
  if (state_ != nullptr && state_->producer != nullptr) {
    // Serves the reports of what is still queued, so their opaque strings are freed; what the
    // broker has not acked by then is dropped with the handle (the service stops anyway).
    rd_kafka_purge(state_->producer.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(state_->producer.get(), 1000);
    rd_kafka_poll(state_->producer.get(), 0);
    state_->producer.reset();
  }
}

Status LabProducer::Send(const Event& e) {
  char errstr[512];
  if (rd_kafka_fatal_error(state_->producer.get(), errstr, sizeof errstr) !=
      RD_KAFKA_RESP_ERR_NO_ERROR) {
    return InternalError(std::string("Kafka producer failed for good: ") + errstr);
  }
  KafkaHeaders headers = MakeEventHeaders(e);
  auto event_id = std::make_unique<std::string>(e.event_id);
  const rd_kafka_resp_err_t err =
      rd_kafka_producev(state_->producer.get(), RD_KAFKA_V_TOPIC(state_->topic.c_str()),
                        RD_KAFKA_V_KEY(e.aggregate_id.data(), e.aggregate_id.size()),
                        RD_KAFKA_V_VALUE(const_cast<char*>(e.payload.data()), e.payload.size()),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers.get()),
                        RD_KAFKA_V_OPAQUE(event_id.get()), RD_KAFKA_V_END);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return RetriableError(std::string("Kafka produce: ") + rd_kafka_err2str(err));
  }
  headers.release();   // owned by the message now
  event_id.release();  // freed by OnDelivery
  rd_kafka_poll(state_->producer.get(), 0);
  return Status::Ok();
}

LabProducer::Reports LabProducer::Poll(Duration timeout) {
  if (state_->reports.acked.empty() && state_->reports.failed.empty()) {
    rd_kafka_poll(state_->producer.get(), static_cast<int>(timeout.count()));
  } else {
    rd_kafka_poll(state_->producer.get(), 0);
  }
  Reports out;
  std::swap(out, state_->reports);
  return out;
}

Status LabProducer::Publish(const Event& e) {
  COURIER_RETURN_IF_ERROR(Send(e));
  // message.timeout.ms ends every send with a report; the margin only guards against a
  // client that never reports.
  const TimePoint deadline = Clock::Real().Now() + state_->timeout + Duration(5000);
  Reports others;
  Status result = RetriableError("no delivery report for " + e.event_id + " in time");
  while (Clock::Real().Now() < deadline) {
    rd_kafka_poll(state_->producer.get(), 50);
    Reports& r = state_->reports;
    auto take = [&](std::vector<std::string>& from, std::vector<std::string>& keep) {
      auto it = std::find(from.begin(), from.end(), e.event_id);
      const bool found = it != from.end();
      if (found) from.erase(it);
      keep.insert(keep.end(), from.begin(), from.end());
      from.clear();
      return found;
    };
    const bool acked = take(r.acked, others.acked);
    const bool failed = take(r.failed, others.failed);
    if (acked) {
      result = Status::Ok();
      break;
    }
    if (failed) {
      result = RetriableError("the broker did not acknowledge " + e.event_id + " within " +
                              std::to_string(state_->timeout.count()) + " ms");
      break;
    }
  }
  // Reports of other sends are kept for the next Poll.
  state_->reports = std::move(others);
  return result;
}

}  // namespace courier::lab
