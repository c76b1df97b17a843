// Where a projection (courier/projection.h) gets its events and keeps its checkpoint: one
// implementation per source, the engine (eventstore/projection.cc) the same for both.
//
// The engine's cycle: Resume(conn) once connected (and after any doubt about what committed);
// Next() for a batch; BEGIN; SaveCheckpoint(conn, batch) first, then the handler per event;
// COMMIT; Committed(batch). SaveCheckpoint checks the checkpoint still is where this source
// left it (kAborted otherwise: another projection of the same name moved it) and takes the
// row's lock, so two instances never apply the same batch.
//
// Thread-safety: one thread.
#pragma once

#include <memory>
#include <vector>

#include "core/clock.h"
#include "core/postgres.h"
#include "courier/projection.h"
#include "courier/status.h"

namespace courier {

class ProjectionSource {
 public:
  virtual ~ProjectionSource() = default;
  // Creates the checkpoint table in the projection's database when missing and checks that
  // the source can be read (kNotFound: no event table).
  virtual Status Prepare(PGconn* conn) = 0;
  // Reads the checkpoint (outside a transaction) and positions the source just after it;
  // events handed out before are forgotten.
  virtual Status Resume(PGconn* conn) = 0;
  // Up to `limit` events after the last one handed out, in order; empty when none came
  // within `timeout`.
  virtual Result<std::vector<ProjectedEvent>> Next(int limit, Duration timeout) = 0;
  // Inside the batch's transaction: the checkpoint moves past `batch` (events Next handed out,
  // in order, following what was committed). kAborted when another projection of the same
  // name moved it since Resume.
  virtual Status SaveCheckpoint(PGconn* conn, const std::vector<ProjectedEvent>& batch) = 0;
  // The batch's transaction committed.
  virtual void Committed(const std::vector<ProjectedEvent>& batch) = 0;
  // Inside the rebuild's transaction: back to the start.
  virtual Status ClearCheckpoint(PGconn* conn) = 0;
};

// The event store of options.events_url (or db_url): eventstore/projection_store.cc.
Result<std::unique_ptr<ProjectionSource>> MakeEventStoreSource(const ProjectionOptions& options);
// Kafka partitions assigned directly, offsets in options.offsets_table:
// eventstore/projection_kafka.cc.
Result<std::unique_ptr<ProjectionSource>> MakeKafkaSource(const ProjectionOptions& options);

// The channel a projection notifies (pg_notify, payload: its name) when a batch commits, so
// WaitFor wakes at once instead of polling.
inline constexpr const char* kProjectionChannel = "courier_projection";

}  // namespace courier
