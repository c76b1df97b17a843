// NATS endpoints shared by the JetStream sink and its reader (`courier tail`).
//
// Thread-safety: a NatsReader is used by one thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "brokers/tls.h"
#include "core/clock.h"
#include "courier/event.h"
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

// Reads a subject's messages from its JetStream stream, oldest first or only new ones, through
// an ordered consumer.
class NatsReader {
 public:
  static Result<std::unique_ptr<NatsReader>> Open(const NatsEndpoint& endpoint,
                                                  bool from_beginning);
  virtual ~NatsReader() = default;
  // The next event, or nullopt when none arrived within `timeout`.
  virtual Result<std::optional<Event>> Next(Duration timeout) = 0;
};

}  // namespace courier
