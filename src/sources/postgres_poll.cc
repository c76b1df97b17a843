// PostgreSQL polling source.
//
// No lasting id watermark: a poll reads the pending rows in id order from the first. A
// transaction that took a low id but commits late simply shows up in a later poll, so
// out-of-order commits are never skipped. Rows leave the pending set only in Checkpoint(),
// after the sink's ack.
//
// Pipelined checkpoints (SourceOptions::checkpoints_in_flight > 0, sources/pg_checkpointer.h):
// Checkpoint() queues the batch's DELETE for another connection and returns, and the next
// Fetch() reads the pending rows in id order as ever, leaving out the ids whose checkpoint is
// queued or committing. So it reads exactly what it would once those committed: a late
// commit with a low id comes before its aggregate's later events, and an event that was not
// acked (not in any checkpoint) comes again first. (Reading past the last id handed out
// would be cheaper, and would publish the later events of a late commit's aggregate before
// it.)
//
// And the next batch is read ahead (`ahead_`): when a batch comes back full, the read of the
// one after it starts at once, on the source's connection in a thread of its own, leaving out
// that batch's ids too, while the relay publishes it. It is used only if the relay then
// checkpoints every event of that batch (acked or parked); otherwise the rows not acked must
// come again first, and it is dropped.
#include <future>
#include <string>

#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/url.h"
#include "schema/table_shape.h"
#include "sources/pg_checkpointer.h"
#include "sources/postgres_common.h"
#include "sources/row_codec.h"
#include "sources/source.h"
#include "stores/parking.h"

namespace courier {

std::string UnixMicrosSql(const std::string& column) {
  return "(extract(epoch FROM CASE WHEN isfinite(" + column + ") AND " + column +
         " < '294000-01-01' THEN " + column + " ELSE now() END) * 1000000)::int8";
}

std::string IdArray(std::span<const int64_t> ids) {
  std::string out = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += std::to_string(ids[i]);
  }
  out.push_back('}');
  return out;
}

Result<int64_t> DeletePublishedRows(PGconn* conn, const std::string& cleanup_sql,
                                    Duration retention) {
  int64_t total = 0;
  while (true) {
    COURIER_ASSIGN_OR_RETURN(PgResult res,
                             PgExec(conn, cleanup_sql, {std::to_string(retention.count())}));
    const int64_t n = ParseInt64(PQcmdTuples(res.get())).value_or(0);
    total += n;
    if (n < 10000) return total;
  }
}

std::string UnescapeBytea(const std::string& escaped) {
  size_t len = 0;
  unsigned char* raw =
      PQunescapeBytea(reinterpret_cast<const unsigned char*>(escaped.c_str()), &len);
  if (raw == nullptr) return std::string();
  std::string out(reinterpret_cast<char*>(raw), len);
  PQfreemem(raw);
  return out;
}

Result<bool> PayloadIsBytea(PGconn* conn, const std::string& quoted_outbox) {
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE"
                                  " attrelid = to_regclass($1) AND attname = 'payload'",
                                  {quoted_outbox}));
  return PQntuples(res.get()) == 1 && std::string(PQgetvalue(res.get(), 0, 0)) == "bytea";
}

Status CheckTablesExist(PGconn* conn, const TableNames& tables, const std::string& where,
                        const std::string& migrate_command) {
  const std::string outbox = QuoteIdent(tables.outbox);
  const std::string dead = QuoteIdent(tables.dead_letter);
  COURIER_ASSIGN_OR_RETURN(
      PgResult res, PgExec(conn, "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                           {outbox, dead}));
  const bool has_outbox = std::string(PQgetvalue(res.get(), 0, 0)) == "t";
  if (has_outbox && std::string(PQgetvalue(res.get(), 0, 1)) == "t") return Status::Ok();
  return NotFoundError("table " + (has_outbox ? dead : outbox) + " does not exist in " + where +
                       "; create it with: " + migrate_command + " " + where);
}

Status CheckRelayPrivileges(PGconn* conn, const TableNames& tables, CheckpointMode mode) {
  const std::string outbox = QuoteIdent(tables.outbox);
  const std::string dead = QuoteIdent(tables.dead_letter);
  COURIER_ASSIGN_OR_RETURN(
      PgResult res,
      PgExec(conn,
             "SELECT current_user, has_table_privilege($1, 'SELECT'),"
             " has_table_privilege($1, 'DELETE'), has_table_privilege($1, 'UPDATE'),"
             " has_table_privilege($2, 'SELECT') AND has_table_privilege($2, 'INSERT') AND"
             " has_table_privilege($2, 'UPDATE') AND has_table_privilege($2, 'DELETE'),"
             " pg_get_serial_sequence($2, 'id'),"
             " coalesce(has_sequence_privilege(pg_get_serial_sequence($2, 'id'), 'USAGE'), true)",
             {outbox, dead}));
  auto yes = [&res](int col) { return std::string(PQgetvalue(res.get(), 0, col)) == "t"; };
  const std::string role = QuoteIdent(PQgetvalue(res.get(), 0, 0));
  auto missing = [&role](const std::string& what, const std::string& grant) {
    return InvalidArgumentError(what + " as role " + role + ": permission denied; " + grant +
                                " TO " + role);
  };
  if (!yes(1)) return missing("cannot read " + outbox, "GRANT SELECT ON " + outbox);
  // Debezium's outbox is only read: its rows are the application's.
  if (!yes(2) && tables.outbox_format == TableNames::OutboxFormat::kCourier) {
    return missing("cannot delete from " + outbox +
                       " (checkpoints delete published rows and move rejected ones to " + dead +
                       ")",
                   "GRANT DELETE ON " + outbox);
  }
  if (mode == CheckpointMode::kRetain && !yes(3)) {
    return missing("cannot stamp published_at in " + outbox +
                       (tables.event_store() ? " (the event store's checkpoint)" : " (--retain)"),
                   "GRANT UPDATE ON " + outbox);
  }
  if (!yes(4)) {
    return missing("cannot write dead letters to " + dead,
                   "GRANT SELECT, INSERT, UPDATE, DELETE ON " + dead);
  }
  if (!yes(6)) {
    return missing("cannot write dead letters to " + dead,
                   "GRANT USAGE ON SEQUENCE " + std::string(PQgetvalue(res.get(), 0, 5)));
  }
  return Status::Ok();
}

Status ExplainCheckpointFailure(PGconn* conn, const TableNames& tables, CheckpointMode mode,
                                const Status& st) {
  if (st.ok() || st.code() == StatusCode::kRetriable || st.code() == StatusCode::kCancelled) {
    return st;
  }
  Status privileges = CheckRelayPrivileges(conn, tables, mode);
  return privileges.code() == StatusCode::kInvalidArgument ? privileges : st;
}

namespace {

class PostgresPollSource final : public Source {
 public:
  PostgresPollSource(SourceOptions options, std::string conninfo)
      : options_(std::move(options)), conninfo_(std::move(conninfo)), parking_(options_.tables) {}

  Status Open() override {
    Close();
    COURIER_ASSIGN_OR_RETURN(conn_, PgCheckpointer::Connect(conninfo_));
    if (Status st =
            CheckTablesExist(conn_.get(), options_.tables, Describe(), "courier migrate --source");
        !st.ok()) {
      conn_.reset();
      return st;
    }
    const std::string outbox = QuoteIdent(options_.tables.outbox);
    Status shape = CheckTableShapes(conn_.get(), options_.tables);
    if (!shape.ok()) {
      conn_.reset();
      return shape;
    }
    if (Status st = CheckRelayPrivileges(conn_.get(), options_.tables, options_.mode); !st.ok()) {
      conn_.reset();
      return st;
    }
    COURIER_ASSIGN_OR_RETURN(payload_is_bytea_, PayloadIsBytea(conn_.get(), outbox));
    const std::string backfill = options_.backfill_slot.empty()
                                     ? ""
                                     : " AND o.id IN (SELECT outbox_id FROM " +
                                           QuoteIdent(options_.tables.CdcBackfill()) +
                                           " WHERE slot_name = $2)";
    const std::string shard =
        options_.shard_count > 1
            ? " AND " + ShardCondition("o", options_.shard_index, options_.shard_count)
            : "";
    const std::string select =
        "SELECT id, event_id::text, aggregate_type, aggregate_id, event_type, payload" +
        std::string(payload_is_bytea_ ? "" : "::text") + ", headers::text, " +
        PgCreatedAtSql("o.created_at") + " FROM " + outbox + " o WHERE published_at IS NULL" +
        backfill + shard;
    fetch_sql_ = select + " ORDER BY id LIMIT $1";
    const std::string pending_param = options_.backfill_slot.empty() ? "$2" : "$3";
    fetch_unpending_sql_ =
        select + " AND o.id <> ALL(" + pending_param + "::int8[]) ORDER BY id LIMIT $1";
    checkpoint_sql_ =
        options_.mode == CheckpointMode::kDelete
            ? "DELETE FROM " + outbox + " WHERE id = ANY($1::int8[])"
            : "UPDATE " + outbox + " SET published_at = now() WHERE id = ANY($1::int8[])";
    // SKIP LOCKED: cleaners (one per shard) never wait on each other's rows.
    cleanup_sql_ = "DELETE FROM " + outbox + " WHERE id IN (SELECT id FROM " + outbox +
                   " o WHERE published_at < now() - make_interval(secs => $1::float8 / 1000)" +
                   shard + " LIMIT 10000 FOR UPDATE SKIP LOCKED)";
    pipeline_tried_ = false;
    return Status::Ok();
  }

  // The relay holds the lease (stores/leadership.h); nothing here is only the leader's.
  Status Activate(const StopSignal& stop) override {
    if (!deadline_ || deadline_stop_ != &stop) {
      checkpointer_.reset();  // none after Open; one would point at the old deadline
      deadline_ = std::make_unique<CheckpointDeadline>(&stop, options_.shutdown_timeout);
      deadline_stop_ = &stop;
    }
    return Status::Ok();
  }

  Result<FetchedBatch> Fetch(size_t max) override {
    if (!checkpointer_) return FetchRows(conn_.get(), max, {});
    std::optional<Result<FetchedBatch>> ahead = TakeAhead();
    COURIER_RETURN_IF_ERROR(Observed(checkpointer_->failure()).WithContext("checkpoint"));
    if (ahead && ahead_max_ == max && ahead->ok() && !(*ahead)->empty()) {
      return Handed(std::move(**ahead), max);
    }
    std::vector<int64_t> pending;
    checkpointer_->PendingIds(&pending);
    COURIER_ASSIGN_OR_RETURN(FetchedBatch batch, FetchRows(conn_.get(), max, pending));
    // Nothing left but what is being checkpointed: done once that commits (what --once and
    // an idle relay wait on).
    if (batch.empty() && !pending.empty()) {
      COURIER_RETURN_IF_ERROR(Sync().WithContext("checkpoint"));
    }
    return Handed(std::move(batch), max);
  }

  Status Sync() override {
    if (!checkpointer_) return Status::Ok();
    return Observed(checkpointer_->Drain());
  }

  void Wait(const StopSignal& stop) override {
    ClockOf(options_).SleepFor(options_.poll_interval, stop);
  }

  Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                    const std::string& sink_name) override {
    if (!pipeline_tried_) StartPipeline();
    if (!checkpointer_) {
      const size_t events = acked.size() + rejected.size();
      if (!deadline_ || events == 0) return Commit(conn_.get(), acked, rejected, sink_name);
      Status st = deadline_->Run(conn_.get(), events,
                                 [&] { return Commit(conn_.get(), acked, rejected, sink_name); });
      if (st.code() == StatusCode::kCancelled) deadline_->LogAbandoned(events);
      return st;
    }
    // An event neither acked nor parked goes out again before its aggregate's later ones,
    // which the batch read ahead may hold: that one is not used.
    if (acked.size() + rejected.size() < handed_) ahead_valid_ = false;
    handed_ = 0;
    if (acked.empty() && rejected.empty()) return Status::Ok();
    COURIER_RETURN_IF_ERROR(Observed(checkpointer_->Submit(
        {std::vector<int64_t>(acked.begin(), acked.end()),
         std::vector<Rejected>(rejected.begin(), rejected.end()), sink_name})));
    // After a failed checkpoint, the next one commits before returning, until one does: a
    // checkpoint that keeps failing then fails the batch that queued it, and the relay's
    // backoff grows, instead of republishing the batches in flight at its first step.
    if (!commit_next_) return Status::Ok();
    COURIER_RETURN_IF_ERROR(Sync());
    commit_next_ = false;
    return Status::Ok();
  }

  Result<int64_t> DeletePublishedBefore(Duration retention) override {
    (void)TakeAhead();  // the connection is this thread's again
    return DeletePublishedRows(conn_.get(), cleanup_sql_, retention);
  }

  void Close() override {
    (void)TakeAhead();
    checkpointer_.reset();  // commits what is queued, when it can
    conn_.reset();
  }
  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  // Opens the checkpoint connection and thread, at the first checkpoint of a connection (when
  // the relay's other connections are open: a role at its connection limit then falls back to
  // one batch at a time here, instead of failing elsewhere).
  void StartPipeline() {
    pipeline_tried_ = true;
    if (options_.checkpoints_in_flight == 0) return;
    checkpointer_ = PgCheckpointer::Start(
        conninfo_,
        [this](PGconn* conn, const CheckpointJob& job) {
          return Commit(conn, job.acked, job.rejected, job.sink_name);
        },
        options_.checkpoints_in_flight, options_.fault_points, deadline_.get());
  }

  // Notes a checkpoint's failure (see Checkpoint).
  Status Observed(Status st) {
    if (!st.ok()) commit_next_ = true;
    return st;
  }

  // The batch read ahead, when one was started and is still valid (waiting for it: the
  // connection is free again either way).
  std::optional<Result<FetchedBatch>> TakeAhead() {
    if (!ahead_.valid()) return std::nullopt;
    Result<FetchedBatch> got = ahead_.get();
    if (!ahead_valid_) return std::nullopt;
    return got;
  }

  // Hands `batch` out and, when it is full (more are waiting), starts reading the next one.
  FetchedBatch Handed(FetchedBatch batch, size_t max) {
    handed_ = batch.size();
    if (batch.size() < max) return batch;
    std::vector<int64_t> leave_out;
    checkpointer_->PendingIds(&leave_out);
    for (const Event& e : batch.events) leave_out.push_back(e.id);
    for (const Rejected& r : batch.malformed) leave_out.push_back(r.id);
    ahead_valid_ = true;
    ahead_max_ = max;
    ahead_ = std::async(std::launch::async, [this, max, leave_out = std::move(leave_out)] {
      return FetchRows(conn_.get(), max, leave_out);
    });
    return batch;
  }

  // Pending rows in id order, but for the ids in `leave_out`. Reads only the options and the
  // statements, which stay put while a read ahead runs.
  Result<FetchedBatch> FetchRows(PGconn* conn, size_t max,
                                 std::span<const int64_t> leave_out) const {
    PgParams params = {std::to_string(max)};
    if (!options_.backfill_slot.empty()) params.push_back(options_.backfill_slot);
    if (!leave_out.empty()) params.push_back(IdArray(leave_out));
    COURIER_ASSIGN_OR_RETURN(
        PgResult res, PgExec(conn, leave_out.empty() ? fetch_sql_ : fetch_unpending_sql_, params));
    PGresult* r = res.get();
    const int rows = PQntuples(r);
    FetchedBatch batch;
    batch.events.reserve(static_cast<size_t>(rows));
    for (int i = 0; i < rows; ++i) {
      auto column = [r, i](int col) -> std::optional<std::string> {
        if (PQgetisnull(r, i, col)) return std::nullopt;
        return std::string(PQgetvalue(r, i, col), PQgetlength(r, i, col));
      };
      OutboxRow row{column(0), column(1), column(2), column(3),
                    column(4), column(5), column(6), column(7)};
      if (payload_is_bytea_ && row.payload) row.payload = UnescapeBytea(*row.payload);
      COURIER_RETURN_IF_ERROR(AddOutboxRow(row, &batch));
    }
    return batch;
  }

  // One transaction on `conn`: deletes (or stamps) `acked` and parks `rejected`.
  Status Commit(PGconn* conn, std::span<const int64_t> acked, std::span<const Rejected> rejected,
                const std::string& sink_name) const {
    if (rejected.empty()) {
      if (acked.empty()) return Status::Ok();
      return ExplainCheckpointFailure(conn, options_.tables, options_.mode,
                                      PgExec(conn, checkpoint_sql_, {IdArray(acked)}).status());
    }
    COURIER_RETURN_IF_ERROR(PgRun(conn, "BEGIN"));
    Status st = PgExec(conn, checkpoint_sql_, {IdArray(acked)}).status();
    if (st.ok()) st = parking_.Park(conn, rejected, sink_name);
    if (st.ok()) st = PgRun(conn, "COMMIT");
    if (!st.ok()) (void)PgRun(conn, "ROLLBACK");
    return ExplainCheckpointFailure(conn, options_.tables, options_.mode, st);
  }

  SourceOptions options_;
  std::string conninfo_;
  PgConn conn_;
  PgOutboxParking parking_;
  bool payload_is_bytea_ = false;
  std::string fetch_sql_;
  std::string fetch_unpending_sql_;  // fetch_sql_ but for the ids of a parameter
  std::string checkpoint_sql_;
  std::string cleanup_sql_;
  // The next batch, read ahead on conn_ (which is that thread's until it is taken), and
  // whether it may still be used.
  std::future<Result<FetchedBatch>> ahead_;
  bool ahead_valid_ = false;
  size_t ahead_max_ = 0;
  size_t handed_ = 0;            // events and malformed rows of the last batch handed out
  bool commit_next_ = false;     // a checkpoint failed: the next one commits before returning
  bool pipeline_tried_ = false;  // since Open (StartPipeline)
  // Bounds the checkpoints once the relay stops (from Activate; null before: a source used
  // without a relay waits as long as the server lets it).
  std::unique_ptr<CheckpointDeadline> deadline_;
  const StopSignal* deadline_stop_ = nullptr;
  // Pipelined checkpoints (null: each commits in Checkpoint()); declared last, so that it is
  // destroyed, committing what is queued, while the members its jobs read still exist.
  std::unique_ptr<PgCheckpointer> checkpointer_;
};

}  // namespace

std::unique_ptr<Source> MakePostgresPollSource(const SourceOptions& options, std::string conninfo) {
  return std::make_unique<PostgresPollSource>(options, std::move(conninfo));
}

}  // namespace courier
