// NATS JetStream's readers (brokers/reader.h): a durable pull consumer for `courier consume`,
// and an ordered consumer from the oldest message or new ones for `courier tail` and the
// tests' checks.
//
// Thread-safety: one thread.
#include <nats/nats.h>

#include <deque>

#include "brokers/nats/nats.h"
#include "brokers/reader.h"

namespace courier {
namespace {

// A JetStream durable pull consumer named after the consumer; a message not acknowledged
// within `claim_idle` (AckWait) is delivered again, to this or another instance.
class NatsGroupReader final : public Reader {
 public:
  ~NatsGroupReader() override {
    buffer_.clear();
    if (sub_ != nullptr) natsSubscription_Destroy(sub_);
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (conn_ != nullptr) natsConnection_Destroy(conn_);
  }

  Status Open(const std::string& url, const std::string& durable, Duration ack_wait) {
    COURIER_ASSIGN_OR_RETURN(NatsEndpoint e, ParseNatsUrl(url));
    if (e.subject.find('{') != std::string::npos) {
      return InvalidArgumentError("consume needs a concrete subject: nats://host:port/SUBJECT");
    }
    COURIER_ASSIGN_OR_RETURN(conn_, ConnectNats(e));
    subject_ = e.subject;
    durable_ = durable;
    ack_wait_ = ack_wait;
    return Status::Ok();
  }

  // Subscribes once the server is there (the connection keeps trying in the background).
  Status Subscribe() {
    if (sub_ != nullptr) return Status::Ok();
    natsStatus s = js_ == nullptr ? natsConnection_JetStream(&js_, conn_, nullptr) : NATS_OK;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.AckWait = static_cast<int64_t>(ack_wait_.count()) * 1000000;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (s == NATS_OK) {
      s = js_PullSubscribe(&sub_, js_, subject_.c_str(), durable_.c_str(), nullptr, &so, &code);
    }
    if (s != NATS_OK) {
      sub_ = nullptr;
      return RetriableError("nats: cannot consume " + subject_ + " as '" + durable_ +
                            "': " + natsStatus_GetText(s) + " (is the server up, with a stream?)");
    }
    return Status::Ok();
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    COURIER_RETURN_IF_ERROR(Subscribe());
    if (buffer_.empty()) {
      natsMsgList list{};
      jsErrCode code = static_cast<jsErrCode>(0);
      const natsStatus s =
          natsSubscription_Fetch(&list, sub_, 100, static_cast<int64_t>(timeout.count()), &code);
      if (s == NATS_TIMEOUT) return std::optional<Message>();
      if (s != NATS_OK) return RetriableError(std::string("nats: fetch: ") + natsStatus_GetText(s));
      for (int i = 0; i < list.Count; ++i) {
        Message d;
        d.event = EventFromNatsMsg(list.Msgs[i]);
        d.topic = natsMsg_GetSubject(list.Msgs[i]);
        d.handle = std::shared_ptr<void>(
            list.Msgs[i], [](void* m) { natsMsg_Destroy(static_cast<natsMsg*>(m)); });
        list.Msgs[i] = nullptr;
        buffer_.push_back(std::move(d));
      }
      natsMsgList_Destroy(&list);
    }
    if (buffer_.empty()) return std::optional<Message>();
    Message d = std::move(buffer_.front());
    buffer_.pop_front();
    return std::optional<Message>(std::move(d));
  }

  Status Ack(const Message& d) override {
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s = natsMsg_AckSync(static_cast<natsMsg*>(d.handle.get()), nullptr, &code);
    if (s != NATS_OK) return RetriableError(std::string("nats: ack: ") + natsStatus_GetText(s));
    return Status::Ok();
  }

 private:
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  natsSubscription* sub_ = nullptr;
  std::string subject_;
  std::string durable_;
  Duration ack_wait_{30000};
  std::deque<Message> buffer_;
};

// A subject read through an ordered consumer, no durable: oldest first or only new ones.
class NatsTailReader final : public Reader {
 public:
  ~NatsTailReader() override {
    if (sub_ != nullptr) natsSubscription_Destroy(sub_);
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (conn_ != nullptr) natsConnection_Destroy(conn_);
  }

  Status Open(const ReaderOptions& o) {
    COURIER_ASSIGN_OR_RETURN(NatsEndpoint e, ParseNatsUrl(o.url));
    if (e.subject.find('{') != std::string::npos) {
      return InvalidArgumentError("tail needs a concrete subject: nats://host:port/SUBJECT");
    }
    where_ = "{\"subject\":\"" + e.subject + "\"}";
    COURIER_ASSIGN_OR_RETURN(conn_, ConnectNats(e));
    natsStatus s = natsConnection_JetStream(&js_, conn_, nullptr);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Ordered = true;
    so.Config.DeliverPolicy = o.from_beginning || o.to_end ? js_DeliverAll : js_DeliverNew;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (s == NATS_OK) s = js_SubscribeSync(&sub_, js_, e.subject.c_str(), nullptr, &so, &code);
    if (s != NATS_OK) {
      return InvalidArgumentError("nats: cannot read " + e.subject + ": " + natsStatus_GetText(s) +
                                  " (is there a stream for it?)");
    }
    return Status::Ok();
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    natsMsg* msg = nullptr;
    const natsStatus s = natsSubscription_NextMsg(&msg, sub_, timeout.count());
    if (s == NATS_TIMEOUT) return std::optional<Message>();
    if (s != NATS_OK) return RetriableError(std::string("nats: ") + natsStatus_GetText(s));
    Message m;
    m.event = EventFromNatsMsg(msg);
    m.topic = natsMsg_GetSubject(msg);
    m.where = where_;
    natsMsg_Destroy(msg);
    return std::optional<Message>(std::move(m));
  }

  Status Ack(const Message&) override { return Status::Ok(); }

 private:
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  natsSubscription* sub_ = nullptr;
  std::string where_;
};

}  // namespace

Result<std::unique_ptr<Reader>> MakeNatsReader(const ReaderOptions& options) {
  if (options.group.empty()) {
    auto reader = std::make_unique<NatsTailReader>();
    COURIER_RETURN_IF_ERROR(reader->Open(options));
    return std::unique_ptr<Reader>(std::move(reader));
  }
  auto reader = std::make_unique<NatsGroupReader>();
  COURIER_RETURN_IF_ERROR(reader->Open(options.url, options.group, options.claim_idle));
  return std::unique_ptr<Reader>(std::move(reader));
}

}  // namespace courier
