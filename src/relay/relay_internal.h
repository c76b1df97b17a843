// The relay built from parts already made (Relay::Create makes them from URLs). For embedding
// courier with a custom sink, and for testing the pipeline's own logic with fakes.
#pragma once

#include <functional>
#include <memory>

#include "brokers/sink.h"
#include "courier/relay.h"
#include "sources/source.h"
#include "stores/dead_letters.h"
#include "stores/leadership.h"

namespace courier {

// Opens the dead-letter store; the relay calls it at every (re)connection to the source.
using DeadLetterOpener = std::function<Result<std::unique_ptr<DeadLetterStore>>()>;

struct RelayParts {
  std::unique_ptr<Source> source;
  std::unique_ptr<Sink> sink;
  std::unique_ptr<Leadership> leadership;  // held while publishing
  DeadLetterOpener dead_letters;
};

std::unique_ptr<Relay> MakeRelay(const RelayOptions& options, RelayParts parts);

// The leadership and dead-letter store of `options.source_url` (MakeLeadership,
// DeadLetterStore::Open, each limited to the shard), around `source` and `sink`.
Result<std::unique_ptr<Relay>> MakeRelay(const RelayOptions& options,
                                         std::unique_ptr<Source> source,
                                         std::unique_ptr<Sink> sink);

// The Kafka transactional.id of a PostgreSQL outbox's producer, the same for every relay of
// that outbox (so each new lease holder fences the previous one) and distinct between
// databases, outbox tables and shards: "courier <host[:port]>/<database> <table>
// [shard K/N]", plus " sink I" for the second and later sinks of a fan-out. Empty for a
// SQLite outbox (one writer, no lease). The sink URL's transactional.id overrides it.
std::string OutboxTransactionalId(const RelayOptions& options, size_t sink_index);

}  // namespace courier
