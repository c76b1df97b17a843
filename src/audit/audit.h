// `courier audit`: what the database says was committed and published, against what a sink
// holds. The truth is a retained outbox (`courier relay --retain` stamps published_at and keeps
// the row) or an event store (never deleted); the sink is read back through the broker readers
// (brokers/reader.h), each topic the sink's template routes the truth's events to, to its end.
// The verdict is audit/verdict.h's: lost, ghosts, duplicates and per-aggregate order. A
// redis-cache sink of captured tables is compared with the tables' rows instead (RunCacheAudit).
//
// Memory: the truth's event ids in the window, twice (the Expectation's sets and an id → order
// key map), plus the ghosts and one entry per aggregate; the sink is streamed, one message at a
// time, however large the topic (docs/audit.md, "Cost").
//
// Thread-safety: functions; the StopSignal may be requested from another thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "audit/verdict.h"
#include "core/clock.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

struct AuditOptions {
  std::string source_url;  // postgres://… or sqlite:///…
  std::string sink_url;    // as given to the relay (templates and all)
  // The outbox (retained) or, with TableNames::OutboxFormat::kEventStore, the event store.
  TableNames tables;
  // --since: only events created at or after this time (Unix microseconds), as the database
  // reads the text ("2026-11-27 04:00:00+00"); messages created before it are not judged.
  std::string since;
  // A redis-cache sink: the --capture entries (as given to the relay) whose rows it mirrors.
  std::vector<std::string> capture;
  // Kafka is read to the end of each partition; brokers without an end (Redis Streams, NATS)
  // until nothing arrived for this long.
  Duration quiet{2000};
};

struct AuditReport {
  std::string truth;                   // "courier_outbox in postgres://…" (no secrets)
  std::string sink;                    // the sink URL without secrets
  std::vector<std::string> read_from;  // the topics, streams, subjects or file read
  int64_t published = 0;               // events the truth says were published (in the window)
  int64_t pending = 0;                 // committed, not published yet: may or may not be there
  int64_t read = 0;                    // messages read from the sink
  int64_t before_window = 0;           // messages older than the window, not judged
  // Events in the sink that the truth did not have when it was read but the table holds when
  // looked up after the sink was read: committed (and published) while the audit ran, so not
  // judged (neither ghosts nor duplicates).
  int64_t after_truth = 0;
  Verdict verdict;
  // Cache and search sinks: keys whose value differs from the row; empty for logs.
  std::vector<std::string> stale;
  // What the reader should know to read the numbers (a topic that does not exist, …).
  std::vector<std::string> notes;
  // Nothing lost, no ghost, no stale value, order kept. Duplicates are reported but allowed:
  // delivery is at least once (the verdict's own definition).
  bool Clean() const { return verdict.Clean() && stale.empty(); }
};

// Reads the truth and the sink and judges. kInvalidArgument / kNotFound for bad input (a URL,
// a table, a sink that cannot be read back); kRetriable when a server cannot be reached or a
// file sink does not exist. Nothing published in the window is a result (with a note when the
// table has no published row at all).
Result<AuditReport> RunAudit(const AuditOptions& options, const StopSignal& stop);

// Whether `sink_url` is a redis-cache sink, audited against the captured tables
// (RunCacheAudit) rather than read back as a log.
bool IsCacheSink(const std::string& sink_url);

// A redis-cache sink against the rows of options.capture (src/audit/cache_audit.cc): lost and
// ghosts are keys, stale the keys whose value differs from the row. With `repair`, each lost or
// stale key is written with its row's value and each ghost key deleted as it is found, counted
// in *repaired.
Result<AuditReport> RunCacheAudit(const AuditOptions& options, bool repair, int64_t* repaired);

// Publishes the events of `event_ids` (lost ones) again through the sink of options.sink_url,
// built as the relay builds it, each with its original event_id and envelope, in the truth's
// order. Returns how many were acked; an error when any was not.
Result<int64_t> RepublishEvents(const AuditOptions& options,
                                const std::vector<std::string>& event_ids, const StopSignal& stop);

}  // namespace courier
