// The dead-letter table as a queue the operator and the relay share.
//
// The relay parks an event the sink refused for good (status `parked`); under the park policy
// the later events of its aggregate are moved beside it (`held`) instead of being published,
// so the aggregate's order survives the failure while every other aggregate flows.
// `courier dead-letters retry` marks parked rows `retry`; `drop` deletes rows. The active
// relay then publishes, in id order, every `retry` or `held` row that no earlier parked row
// of its aggregate holds back, deletes each once acked, and parks it again (attempts + 1) if
// refused again. The relay is the only one to publish, so a retried event goes out at the
// relay's place in the stream: before any later event of its aggregate.
//
// A store sees only the dead letters of its outbox (`tables.outbox`, the `outbox` column):
// outboxes sharing one dead-letter table never hold back, release, list, retry or drop each
// other's events.
//
// Thread-safety: a store (and its connection) belongs to one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/event.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier {

struct DeadLetter {
  Event event;  // event.id is the dead letter's id; event.row_id the outbox row's (0: none)
  std::string status;
  std::string error;
  std::string sink;
  int64_t attempts = 0;
  std::string failed_at;     // ISO 8601, UTC
  std::string decode_error;  // the row cannot be an event (sources/row_codec.h): not publishable
};

// (aggregate_type, aggregate_id): events of one aggregate keep their order.
using AggregateKey = std::pair<std::string, std::string>;

class DeadLetterStore {
 public:
  // kNotFound (run courier migrate) when the table is missing or predates statuses or the
  // outbox column.
  // `ready_filter`: an SQL condition on alias d limiting Ready() (a relay's shard).
  static Result<std::unique_ptr<DeadLetterStore>> Open(const std::string& source_url,
                                                       const TableNames& tables,
                                                       const std::string& ready_filter = "");
  virtual ~DeadLetterStore() = default;

  // Aggregates with rows not yet resolved (parked, held or queued for retry): under the
  // park policy their new events are held behind them.
  virtual Result<std::vector<AggregateKey>> Blocking() = 0;
  // Up to `max` held or retry rows, in id order; with `park`, only those no earlier parked
  // row of their aggregate holds back.
  virtual Result<std::vector<DeadLetter>> Ready(size_t max, bool park) = 0;
  // One transaction: deletes the `published` rows, parks the `failed` ones again with their
  // new error and one more attempt.
  virtual Status Resolve(std::span<const int64_t> published, std::span<const Rejected> failed) = 0;

  // Newest last; `limit` rows at most.
  virtual Result<std::vector<DeadLetter>> List(size_t limit) = 0;
  // The rows of these ids (those of this outbox that exist), in id order.
  virtual Result<std::vector<DeadLetter>> Find(std::span<const int64_t> ids) = 0;
  // Queues parked or skipped rows for the relay to publish again (every one when `ids` is
  // empty); returns the ids queued.
  virtual Result<std::vector<int64_t>> Retry(std::span<const int64_t> ids) = 0;
  // Deletes the rows of `ids`, of any status; when `ids` is empty, every row but the held ones
  // (they never failed: they wait behind one that did, and go out once it is gone). Returns
  // the ids deleted.
  virtual Result<std::vector<int64_t>> Drop(std::span<const int64_t> ids) = 0;
};

}  // namespace courier
