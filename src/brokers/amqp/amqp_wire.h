// librabbitmq glue shared by the sink, the readers and the session (brokers/amqp/): bytes and
// texts, timeouts and the broker's reasons. Internal to src/brokers/amqp/.
#pragma once

#include <amqp.h>
#include <sys/time.h>

#include <string>

#include "core/clock.h"

namespace courier {

timeval ToTimeval(Duration d);

// librabbitmq's text for a status; for socket errors, the system's reason too.
std::string AmqpError(int rc);

std::string Text(amqp_bytes_t b);

// A view of `s` (no copy): valid while `s` is.
amqp_bytes_t Bytes(const std::string& s);

// The reply code and text of a connection.close or channel.close, else the method's name.
std::string ServerError(const amqp_method_t& method);

}  // namespace courier
