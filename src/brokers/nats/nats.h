// NATS endpoints shared by the JetStream sink and its readers (nats_readers.cc).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "brokers/tls.h"
#include "core/clock.h"
#include "core/event.h"
#include "courier/status.h"

typedef struct __natsConnection natsConnection;
typedef struct __natsMsg natsMsg;

namespace courier {

struct NatsEndpoint {
  std::vector<std::string> servers;  // nats://host:port each
  std::string user;
  std::string password;
  std::string subject;  // the URL's path: a subject or template
  TlsSettings tls;      // nats+tls://
};

// nats[+tls]://[user:password@]host:port[,host:port]/SUBJECT[?TLS parameters]
// nats+tls:// is NATS's tls:// (TLS from the first byte); it takes the parameters of brokers/tls.h.
Result<NatsEndpoint> ParseNatsUrl(const std::string& url);

// A connection that keeps reconnecting forever (also when the server is away at first). A
// server that is there but whose certificate does not verify, or that wants TLS the URL does
// not ask for, is an error at once. `in_background`: returns at once when the server is away
// or silent (the connection is made later, by the library's thread); otherwise waits until
// connected.
Result<natsConnection*> ConnectNats(const NatsEndpoint& endpoint, bool in_background = false);

// Rebuilds an Event from a message the sink published (headers + body).
Event EventFromNatsMsg(natsMsg* msg);

}  // namespace courier
