// NATS JetStream sink (cnats): asynchronous JetStream publishes, acked by the stream's PubAck.
//
//   nats[+tls]://[user:password@]host:port[,host:port]/SUBJECT-TEMPLATE[?TLS parameters]
//
// SUBJECT-TEMPLATE may use {aggregate_type} and {event_type} (default {aggregate_type}); a
// JetStream stream must capture the subjects. Each message carries `Nats-Msg-Id: <event_id>`,
// so the stream drops a redelivered event inside its duplicate window, and the envelope as
// headers (event_id, event_type, aggregate_type, aggregate_id, created_at_us, plus the event's
// own headers); the body is the payload. Messages of a batch are published in order on one
// connection, so a stream stores an aggregate's events in commit order.
#include "brokers/nats/nats.h"

#include <nats/nats.h>

#include <condition_variable>
#include <map>
#include <mutex>

#include "brokers/sink.h"
#include "core/log.h"
#include "core/url.h"

namespace courier {
namespace {

Status NatsError(natsStatus s, const std::string& what) {
  const std::string text = what + ": " + natsStatus_GetText(s);
  if (s == NATS_MAX_PAYLOAD || s == NATS_INVALID_SUBJECT || s == NATS_INVALID_ARG) {
    return RejectedError(text);
  }
  return RetriableError(text);
}

class NatsSink final : public Sink {
 public:
  explicit NatsSink(SinkOptions options) : options_(std::move(options)) {}
  ~NatsSink() override {
    // Closing first stops the library's threads calling OnAck into a half-destroyed sink.
    if (conn_ != nullptr) natsConnection_Close(conn_);
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (conn_ != nullptr) natsConnection_Destroy(conn_);
  }

  Status Configure() override {
    COURIER_ASSIGN_OR_RETURN(endpoint_, ParseNatsUrl(options_.url));
    return Status::Ok();
  }

  Status Open() override {
    COURIER_RETURN_IF_ERROR(Configure());
    COURIER_ASSIGN_OR_RETURN(conn_, ConnectNats(endpoint_, /*in_background=*/true));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.AckHandler = &NatsSink::OnAck;
    jo.PublishAsync.AckHandlerClosure = this;
    jo.PublishAsync.MaxPending = 20000;
    const natsStatus s = natsConnection_JetStream(&js_, conn_, &jo);
    if (s != NATS_OK) return NatsError(s, "nats: JetStream context");
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    std::unique_lock<std::mutex> lock(mu_);
    results_.assign(batch.size(), RetriableError("no PubAck from JetStream yet"));
    pending_.clear();
    waiting_ = 0;
    lock.unlock();
    HeldBack held;  // a message refused before it left holds back its aggregate
    for (size_t i = 0; i < batch.size(); ++i) {
      const Event& e = batch[i];
      if (Status fenced = CheckFence(stop); !fenced.ok()) {
        lock.lock();
        for (size_t j = i; j < batch.size(); ++j) results_[j] = fenced;
        lock.unlock();
        break;
      }
      if (Status not_sent; held.Holds(e, &not_sent)) {
        lock.lock();
        results_[i] = not_sent;
        lock.unlock();
        continue;
      }
      const std::string subject = ExpandTemplate(endpoint_.subject, e);
      natsMsg* msg = nullptr;
      natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, e.payload.data(),
                                    static_cast<int>(e.payload.size()));
      for (const auto& [k, v] : Headers{{"Nats-Msg-Id", e.event_id},
                                        {"event_id", e.event_id},
                                        {"event_type", e.event_type},
                                        {"aggregate_type", e.aggregate_type},
                                        {"aggregate_id", e.aggregate_id},
                                        {"created_at_us", std::to_string(e.created_at_us)}}) {
        if (s == NATS_OK) s = natsMsgHeader_Set(msg, k.c_str(), v.c_str());
      }
      for (const auto& [k, v] : e.headers) {
        if (s == NATS_OK) s = natsMsgHeader_Add(msg, k.c_str(), v.c_str());
      }
      if (s != NATS_OK) {
        natsMsg_Destroy(msg);
        lock.lock();
        results_[i] = NatsError(s, "nats: message for " + subject);
        lock.unlock();
        held.Failed(e);
        continue;
      }
      lock.lock();
      pending_[msg] = i;
      ++waiting_;
      lock.unlock();
      natsMsg* owned = msg;
      s = js_PublishMsgAsync(js_, &owned, nullptr);
      if (s != NATS_OK) {
        lock.lock();
        pending_.erase(msg);
        --waiting_;
        // Before the first connection the library refuses messages with headers ("not
        // supported by server": it has not heard from one yet).
        results_[i] = natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED
                          ? NatsError(s, "nats: publish to " + subject)
                          : RetriableError("nats: not connected to " + Servers() +
                                           " (still trying): " + natsStatus_GetText(s));
        lock.unlock();
        natsMsg_Destroy(owned);
        held.Failed(e);
      }
    }
    // Wait for the acks: as long as the server is away when the delivery timeout is zero.
    const TimePoint start = Clock::Real().Now();
    lock.lock();
    while (waiting_ > 0) {
      const TimePoint now = Clock::Real().Now();
      if (options_.delivery_timeout.count() > 0 && now - start > options_.delivery_timeout) break;
      if (stop.abandoned() || (stop.requested() && now - start > options_.shutdown_timeout)) break;
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    pending_.clear();  // late acks of this batch are ignored
    return results_;
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  std::string Servers() const {
    std::string out;
    for (const std::string& server : endpoint_.servers) out += (out.empty() ? "" : ",") + server;
    return out;
  }

  static void OnAck(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<NatsSink*>(closure);
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      auto it = self->pending_.find(msg);
      if (it != self->pending_.end()) {
        Status& r = self->results_[it->second];
        if (pa != nullptr) {
          r = Status::Ok();
        } else if (pae != nullptr) {
          std::string text = pae->ErrText != nullptr ? pae->ErrText : natsStatus_GetText(pae->Err);
          if (pae->Err == NATS_NO_RESPONDERS) {
            text = "no JetStream stream captures subject " + std::string(natsMsg_GetSubject(msg)) +
                   "; create one (nats stream add --subjects ...)";
          }
          // The stream refusing the message itself (too large, ...) is for good; anything
          // about reaching it (timeouts, no responders, reconnecting) may pass.
          r = pae->ErrCode != 0 ? RejectedError("nats: " + text) : RetriableError("nats: " + text);
        }
        self->pending_.erase(it);
        --self->waiting_;
      }
    }
    self->cv_.notify_all();
    natsMsg_Destroy(msg);
  }

  SinkOptions options_;
  NatsEndpoint endpoint_;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<natsMsg*, size_t> pending_;  // guarded by mu_
  std::vector<Status> results_;         // guarded by mu_
  size_t waiting_ = 0;                  // guarded by mu_
};

}  // namespace

Result<NatsEndpoint> ParseNatsUrl(const std::string& text) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(text));
  NatsEndpoint e;
  if (url.hosts.empty()) {
    return InvalidArgumentError("nats URL " + RedactUrl(text) +
                                " names no server; write nats://host:4222/subject");
  }
  size_t start = 0;
  while (start <= url.hosts.size()) {
    const size_t comma = url.hosts.find(',', start);
    const std::string host = url.hosts.substr(start, comma - start);
    if (!host.empty()) e.servers.push_back("nats://" + host);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  e.user = url.user;
  e.password = url.password;
  e.subject = url.path.empty() ? "{aggregate_type}" : url.path;
  e.tls.enabled = url.scheme == "nats+tls";
  for (const auto& [key, value] : url.query) {
    Status bad;
    if (!TakeTlsParam(key, value, &e.tls, &bad)) {
      return InvalidArgumentError("nats URL: unknown parameter '" + key +
                                  "' (known with nats+tls://: cacert, cert, key, verify)");
    }
    if (!bad.ok()) return InvalidArgumentError("nats URL: " + bad.message());
  }
  if (Status st = CheckTlsSettings(e.tls, "nats+tls://"); !st.ok()) {
    return InvalidArgumentError("nats URL " + RedactUrl(text) + ": " + st.message());
  }
  return e;
}

namespace {
void OnNatsConnected(natsConnection*, void*) { log::Info("connected to NATS", {}); }
}  // namespace

Result<natsConnection*> ConnectNats(const NatsEndpoint& e, bool in_background) {
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) return InternalError("nats: cannot create options");
  std::vector<const char*> servers;
  for (const std::string& s : e.servers) servers.push_back(s.c_str());
  natsStatus s = natsOptions_SetServers(opts, servers.data(), static_cast<int>(servers.size()));
  if (s == NATS_OK && !e.user.empty()) {
    s = natsOptions_SetUserInfo(opts, e.user.c_str(), e.password.c_str());
  }
  if (s == NATS_OK && e.tls.enabled) {
    s = natsOptions_SetSecure(opts, true);
    const std::string ca = e.tls.ca_file.empty() ? kSystemCaBundle : e.tls.ca_file;
    if (s == NATS_OK && e.tls.verify) {
      s = natsOptions_LoadCATrustedCertificates(opts, ca.c_str());
      if (s != NATS_OK) {
        natsOptions_Destroy(opts);
        return InvalidArgumentError("nats: TLS: cannot read CA certificates from " + ca +
                                    "; cacert= must name a PEM file");
      }
    }
    if (s == NATS_OK && !e.tls.cert_file.empty()) {
      s = natsOptions_LoadCertificatesChain(opts, e.tls.cert_file.c_str(), e.tls.key_file.c_str());
      if (s != NATS_OK) {
        natsOptions_Destroy(opts);
        return InvalidArgumentError("nats: TLS: cannot load the client certificate " +
                                    e.tls.cert_file + " with key " + e.tls.key_file +
                                    "; cert= and key= must name matching PEM files");
      }
    }
    if (s == NATS_OK && !e.tls.verify) s = natsOptions_SkipServerVerification(opts, true);
  }
  natsConnection* conn = nullptr;
  // One plain attempt first: a server that answers but refuses the connection (certificate,
  // TLS wanted or not) is a setting to fix, not an outage to wait out.
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, false);
  if (s == NATS_OK) {
    s = natsConnection_Connect(&conn, opts);
    if (s == NATS_OK) {
      natsConnection_Destroy(conn);
      conn = nullptr;
    } else if (s == NATS_SSL_ERROR || s == NATS_SECURE_CONNECTION_REQUIRED ||
               s == NATS_SECURE_CONNECTION_WANTED) {
      // The library's text starts with its source location: "(conn.c:733): ".
      std::string detail = nats_GetLastError(nullptr) != nullptr ? nats_GetLastError(nullptr) : "";
      if (detail.rfind('(', 0) == 0 && detail.find("): ") != std::string::npos) {
        detail = detail.substr(detail.find("): ") + 3);
      }
      if (detail.empty()) detail = natsStatus_GetText(s);
      natsOptions_Destroy(opts);
      std::string hint =
          "; cacert= must name the CA that signed the server's certificate and the "
          "URL's host must be a name in it";
      if (s == NATS_SECURE_CONNECTION_WANTED) {
        hint = "; the server has no TLS: use nats://";
      } else if (!e.tls.enabled) {
        hint = "; the server wants TLS: use nats+tls:// (cacert= for a private CA)";
      }
      return InvalidArgumentError("nats: " + detail + hint);
    }
    s = NATS_OK;
  }
  // Never give up: the relay's events wait in the database meanwhile.
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 500);
  // In the background: a server that is away (or accepts and never answers) must not hold
  // the caller, which has to see its stop requests and delivery timeouts. Without a
  // callback the library would block here until it connects, however long that takes.
  if (s == NATS_OK) {
    s = natsOptions_SetRetryOnFailedConnect(opts, true, in_background ? &OnNatsConnected : nullptr,
                                            nullptr);
  }
  if (s == NATS_OK) s = natsConnection_Connect(&conn, opts);
  natsOptions_Destroy(opts);
  // With retry-on-failed-connect an unreachable server is NATS_NOT_YET_CONNECTED: the
  // connection keeps trying in the background.
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    return InvalidArgumentError("nats: cannot set up a connection: " +
                                std::string(natsStatus_GetText(s)));
  }
  return conn;
}

Event EventFromNatsMsg(natsMsg* msg) {
  Event e;
  e.payload.assign(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) == NATS_OK) {
    for (int i = 0; i < count; ++i) {
      const char* value = nullptr;
      if (natsMsgHeader_Get(msg, keys[i], &value) != NATS_OK) continue;
      const std::string k = keys[i];
      if (k == "event_id")
        e.event_id = value;
      else if (k == "event_type")
        e.event_type = value;
      else if (k == "aggregate_type")
        e.aggregate_type = value;
      else if (k == "aggregate_id")
        e.aggregate_id = value;
      else if (k == "created_at_us")
        e.created_at_us = std::atoll(value);
      else if (k != "Nats-Msg-Id")
        e.headers.emplace_back(k, value);
    }
    free(static_cast<void*>(keys));
  }
  return e;
}

std::unique_ptr<Sink> MakeNatsSink(const SinkOptions& options) {
  return std::make_unique<NatsSink>(options);
}

}  // namespace courier
