// PostgreSQL change data capture source: the outbox's inserts (and `courier` logical
// messages) read from the write-ahead log through a logical replication slot and the
// built-in pgoutput plugin.
//
// The slot's confirmed position only moves past a transaction once every event of it has
// been acked by the sink (or parked as a dead letter) and its rows were deleted (or stamped)
// in the outbox; a restart resumes there, so a crash duplicates and never loses. Rows stay in
// the outbox until acked, which is what lets a lost slot be recreated without loss: the new
// slot is created with an exported snapshot, the rows visible in it are recorded in the
// backfill table, and those are published (by the polling source, filtered to them) before
// the stream of everything committed after the snapshot.
//
// This file glues the pieces under cdc/: slot administration (slot.h), the replication stream
// and its reader thread (stream.h), the LSN ledger (lsn_ledger.h), the decoding of what
// the stream carries into events (decode.h), and table capture (capture_setup.h, capture.h:
// the changes of captured tables, rendered by change.h, beside the outbox's events). What stays
// here is the Source: its states, the events in flight and their redelivery, and checkpoints (rows
// deleted, dead letters written, checkpoint_lsn stored, in one transaction).
//
// Threads: the relay thread drives the source; the stream's reader thread only reads the
// server's messages ahead into the stream's queue and reports the positions the source handed
// it.
#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/url.h"
#include "core/uuid.h"
#include "schema/table_shape.h"
#include "sources/cdc/capture.h"
#include "sources/cdc/capture_setup.h"
#include "sources/cdc/decode.h"
#include "sources/cdc/lsn_ledger.h"
#include "sources/cdc/slot.h"
#include "sources/cdc/snapshot.h"
#include "sources/cdc/stream.h"
#include "sources/pg_checkpointer.h"
#include "sources/pgoutput.h"
#include "sources/postgres_common.h"
#include "sources/row_codec.h"
#include "sources/source.h"
#include "stores/parking.h"
#include "stores/slot_checkpoints.h"

namespace courier {
namespace {

using pgoutput::Lsn;

class PostgresCdcSource final : public Source {
 public:
  PostgresCdcSource(SourceOptions options, std::string conninfo)
      : options_(std::move(options)),
        conninfo_(std::move(conninfo)),
        stream_(options_.cdc.status_interval) {}
  ~PostgresCdcSource() override { Close(); }

  Status Open() override {
    Close();
    // An event store's checkpoint stamps published_at, as its polling relay's does: events
    // are never deleted.
    if (options_.tables.event_store()) options_.mode = CheckpointMode::kRetain;
    COURIER_ASSIGN_OR_RETURN(conn_, PgConnect(conninfo_));
    COURIER_ASSIGN_OR_RETURN(PgResult db, PgExec(conn_.get(), "SELECT current_database()"));
    database_ = PQgetvalue(db.get(), 0, 0);
    COURIER_RETURN_IF_ERROR(cdc::CheckCdcTables(conn_.get(), options_.tables));
    COURIER_RETURN_IF_ERROR(CheckTableShapes(conn_.get(), options_.tables));
    COURIER_RETURN_IF_ERROR(CheckRelayPrivileges(conn_.get(), options_.tables, options_.mode));
    COURIER_ASSIGN_OR_RETURN(names_, cdc::ResolveNames(conn_.get(), options_.tables, options_.cdc));
    COURIER_ASSIGN_OR_RETURN(capture_specs_, cdc::ParseCaptureList(options_.cdc.capture));
    COURIER_ASSIGN_OR_RETURN(parking_, PgEventParking::Prepare(conn_.get(), options_.tables));
    const std::string outbox = QuoteIdent(options_.tables.outbox);
    const std::string id = options_.tables.event_store() ? "position" : "id";
    checkpoint_sql_ = options_.mode == CheckpointMode::kDelete
                          ? "DELETE FROM " + outbox + " WHERE id = ANY($1::int8[]) RETURNING id"
                          : "UPDATE " + outbox + " SET published_at = now() WHERE " + id +
                                " = ANY($1::int8[]) RETURNING " + id;
    if (options_.tables.event_store()) {
      COURIER_ASSIGN_OR_RETURN(event_park_sql_, EventStoreParkSql(conn_.get(), options_.tables));
      published_sql_ = "SELECT position FROM " + outbox +
                       " WHERE position = ANY($1::int8[]) AND published_at IS NOT NULL";
      visible_sql_ = "SELECT position FROM " + outbox + " WHERE position = ANY($1::int8[])";
    }
    checkpoints_ = options_.checkpoints
                       ? options_.checkpoints(names_.slot)
                       : MakeSlotTableCheckpoints(conn_.get(), options_.tables, names_.slot);
    cleanup_sql_ = "DELETE FROM " + outbox + " WHERE id IN (SELECT id FROM " + outbox +
                   " WHERE published_at < now() - make_interval(secs => $1::float8 / 1000)"
                   " LIMIT 10000)";
    COURIER_RETURN_IF_ERROR(cdc::EnsureCheckpointColumn(conn_.get(), options_.tables, Describe()));
    pipeline_tried_ = false;
    state_ = State::kSetUp;
    return Status::Ok();
  }

  // Once the one relay of the outbox, sets up the publication and slot (they are ours now).
  // The relay calls this only while it holds the outbox's lease, so a stream still attached to
  // the slot is a previous holder's, which must let go.
  Status Activate(const StopSignal& stop) override {
    if (!deadline_ || deadline_stop_ != &stop) {
      deadline_ = std::make_unique<CheckpointDeadline>(&stop, options_.shutdown_timeout);
      deadline_stop_ = &stop;
    }
    COURIER_RETURN_IF_ERROR(cdc::EndPreviousStream(conn_.get(), names_.slot));
    COURIER_RETURN_IF_ERROR(
        PrepareCdc(conn_.get(), conninfo_, options_.tables, options_.cdc, stop, slot_stale_));
    slot_stale_ = false;
    COURIER_RETURN_IF_ERROR(ActivateCapture());
    if (options_.tables.outbox_format == TableNames::OutboxFormat::kDebezium) {
      // Nothing to backfill: Debezium's outbox rows are not courier's to publish or delete.
      COURIER_RETURN_IF_ERROR(StartStreaming());
      state_ = State::kStreaming;
      return Status::Ok();
    }
    COURIER_RETURN_IF_ERROR(OpenBackfill());
    COURIER_RETURN_IF_ERROR(backfill_->Activate(stop));
    state_ = State::kBackfill;
    return Status::Ok();
  }

  Result<FetchedBatch> Fetch(size_t max) override {
    if (state_ == State::kSetUp) {
      return FailedPreconditionError("CDC source fetched from before Activate");
    }
    if (state_ == State::kBackfill) {
      COURIER_ASSIGN_OR_RETURN(FetchedBatch batch, backfill_->Fetch(max));
      if (!batch.empty()) return batch;
      // Drained: every row that predates the slot is published; the stream has the rest.
      COURIER_RETURN_IF_ERROR(PgExec(conn_.get(),
                                     "DELETE FROM " + QuoteIdent(options_.tables.CdcBackfill()) +
                                         " WHERE slot_name = $1",
                                     {names_.slot})
                                  .status());
      backfill_.reset();
      COURIER_RETURN_IF_ERROR(StartStreaming());
      state_ = State::kStreaming;
    }
    COURIER_RETURN_IF_ERROR(FinishCommitted().WithContext("checkpoint"));
    while (true) {
      dropped_ = false;
      COURIER_ASSIGN_OR_RETURN(FetchedBatch batch, ReadStream(max));
      // Nothing new: done once the checkpoints on their way committed (what --once and the
      // slot's confirmation wait for).
      if (batch.empty() && !committing_.empty()) {
        COURIER_RETURN_IF_ERROR(Sync().WithContext("checkpoint"));
      }
      // Empty only because its rows were published already: not "nothing left" (--once).
      if (!batch.empty() || !dropped_) return batch;
    }
  }

  Status Sync() override {
    if (!checkpointer_) return Status::Ok();
    const Status drained = checkpointer_->Drain();
    COURIER_RETURN_IF_ERROR(FinishCommitted());
    return drained;
  }

  void Wait(const StopSignal& stop) override {
    if (state_ != State::kStreaming) return;
    if (!redeliver_.empty() || pushed_back_) return;
    stream_.Wait(stop, options_.poll_interval);
  }

  Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                    const std::string& sink_name) override {
    if (state_ == State::kBackfill) return backfill_->Checkpoint(acked, rejected, sink_name);
    if (!pipeline_tried_) StartPipeline();
    if (checkpointer_ && rejected.empty()) return Pipeline(acked, sink_name);
    // Dead letters are parked on this connection, in order after what is on its way.
    COURIER_RETURN_IF_ERROR(Sync());
    std::vector<int64_t> rows;
    std::vector<int64_t> xids;  // of the transactions that inserted `rows`
    for (int64_t pos : acked) {
      auto it = inflight_.find(pos);
      if (it != inflight_.end() && it->second.row_id > 0) {
        rows.push_back(it->second.row_id);
        xids.push_back(it->second.xid);
      }
    }
    std::vector<std::pair<const Rejected*, Inflight>> dead;
    for (const Rejected& r : rejected) {
      auto it = inflight_.find(r.id);
      if (it != inflight_.end()) dead.emplace_back(&r, it->second);
    }
    // The events count as done once the transaction below commits; should it fail, the relay
    // closes the source, and with it this state.
    for (int64_t pos : acked) Done(pos);
    for (const Rejected& r : rejected) Done(r.id);
    // The position past every transaction whose events are now all done is stored in the
    // same transaction as the rows it deletes: a restart skips exactly what this made done,
    // even after a server crash, which sets the slot back to its last server checkpoint.
    const std::optional<Lsn> record = ledger_.ToRecord();
    if (!rows.empty() || !dead.empty() || record) {
      auto commit = [&]() -> Status {
        COURIER_RETURN_IF_ERROR(PgRun(conn_.get(), "BEGIN"));
        Status st =
            rows.empty() ? Status::Ok() : CheckpointRows(conn_.get(), checkpoint_sql_, rows, xids);
        for (size_t i = 0; st.ok() && i < dead.size(); ++i) {
          st = DeadLetter(*dead[i].first, dead[i].second, sink_name);
        }
        // A snapshot chunk's progress is saved with the position past its high watermark.
        if (st.ok() && record) st = snapshot_.Save(conn_.get(), *record);
        if (st.ok() && record) {
          st = checkpoints_->Save(*record);
        }
        if (st.ok()) st = PgRun(conn_.get(), "COMMIT");
        if (!st.ok()) {
          (void)PgRun(conn_.get(), "ROLLBACK");
          return ExplainCheckpointFailure(conn_.get(), options_.tables, options_.mode, st);
        }
        return Status::Ok();
      };
      const size_t events = acked.size() + rejected.size();
      const Status st = deadline_ ? deadline_->Run(conn_.get(), events, commit) : commit();
      if (st.code() == StatusCode::kCancelled) deadline_->LogAbandoned(events);
      COURIER_RETURN_IF_ERROR(st);
      if (record) ledger_.Recorded(*record);
    }
    // The rows are gone (or stamped): the slot may move past every transaction whose events
    // are all done.
    for (int64_t pos : handed_) {
      if (inflight_.count(pos) > 0) redeliver_.push_back(pos);
    }
    handed_.clear();
    ledger_.Advance();
    Report(/*force=*/false);
    return Status::Ok();
  }

  Result<int64_t> DeletePublishedBefore(Duration retention) override {
    if (options_.tables.event_store()) return int64_t{0};  // events are kept for ever
    (void)FinishCommitted();
    return DeletePublishedRows(conn_.get(), cleanup_sql_, retention);
  }

  void Close() override {
    if (checkpointer_) {
      // What is on its way commits, when it can, and the slot is told before the stream ends.
      (void)checkpointer_->Drain();
      (void)FinishCommitted();
    }
    checkpointer_.reset();
    committing_.clear();
    finished_ = 0;
    stream_.Close();
    pushed_back_.reset();
    backfill_.reset();
    checkpoints_.reset();
    conn_.reset();
    inflight_.clear();
    redeliver_.clear();
    handed_.clear();
    ledger_ = cdc::LsnLedger{};
    columns_.clear();
    capture_.Reset();
    snapshot_.Reset();
    state_ = State::kClosed;
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  enum class State { kClosed, kSetUp, kBackfill, kStreaming };

  // An event handed to the sink and not yet done, kept for redelivery and its checkpoint.
  struct Inflight {
    int64_t row_id = 0;  // 0 for logical messages
    Event event;
    uint32_t xid = 0;  // of the transaction that inserted the row
  };

  // Pipelined checkpoint (sources/pg_checkpointer.h): the rows' DELETE (or stamp) and the
  // position go to the checkpoint thread, and the relay reads and publishes on meanwhile. The
  // events stay open in the ledger until that transaction committed (FinishCommitted): the
  // slot never moves past a row not deleted yet, and a transaction whose Commit is read
  // meanwhile is not confirmed early. The position stored with it is past every transaction
  // whose events are settled, that is, checkpointed by it or by those committing before it:
  // a restart after a server crash still skips exactly what it deleted.
  Status Pipeline(std::span<const int64_t> acked, const std::string& sink_name) {
    COURIER_RETURN_IF_ERROR(FinishCommitted());
    CheckpointJob job;
    Committing batch;
    for (int64_t pos : acked) {
      auto it = inflight_.find(pos);
      if (it == inflight_.end()) continue;
      if (it->second.row_id > 0) {
        job.acked.push_back(it->second.row_id);
        job.xids.push_back(it->second.xid);
      }
      batch.positions.push_back(pos);
      inflight_.erase(it);  // not offered again
      ledger_.Settle(pos);
    }
    job.record = ledger_.ToRecordSettled();
    batch.record = job.record;
    job.sink_name = sink_name;
    if (job.acked.empty() && !job.record) {
      // Nothing to write (logical messages): done now, or with the checkpoint on its way.
      if (committing_.empty()) {
        for (int64_t pos : batch.positions) ledger_.Done(pos);
        ledger_.Advance();
      } else {
        std::vector<int64_t>& later = committing_.back().positions;
        later.insert(later.end(), batch.positions.begin(), batch.positions.end());
      }
    } else {
      COURIER_RETURN_IF_ERROR(Observed(checkpointer_->Submit(std::move(job))));
      committing_.push_back(std::move(batch));
      // After a failed checkpoint, the next one commits before returning, until one does (as
      // polling does: postgres_poll.cc, Checkpoint).
      if (commit_next_) {
        COURIER_RETURN_IF_ERROR(Sync());
        commit_next_ = false;
      }
    }
    for (int64_t pos : handed_) {
      if (inflight_.count(pos) > 0) redeliver_.push_back(pos);
    }
    handed_.clear();
    Report(/*force=*/false);
    return Status::Ok();
  }

  // The pipelined checkpoints that committed since: their events are done, and the slot may
  // move past every transaction whose events are all done. A failed one is returned.
  Status FinishCommitted() {
    if (!checkpointer_) return Status::Ok();
    const uint64_t committed = checkpointer_->committed();
    bool moved = false;
    while (finished_ < committed && !committing_.empty()) {
      const Committing& done = committing_.front();
      for (int64_t pos : done.positions) ledger_.Done(pos);
      if (done.record) ledger_.Recorded(*done.record);
      committing_.pop_front();
      ++finished_;
      moved = true;
    }
    if (moved) {
      ledger_.Advance();
      Report(/*force=*/false);
    }
    return Observed(checkpointer_->failure());
  }

  // Opens the checkpoint connection and thread, at the first checkpoint of a stream, for the
  // outbox's own events with the slot table keeping the position (an event store, table
  // capture with its snapshot bookkeeping, and another position store keep theirs on conn_,
  // in the relay's thread). A role at its connection limit falls back to one batch at a time.
  void StartPipeline() {
    pipeline_tried_ = true;
    if (options_.checkpoints_in_flight == 0 || options_.tables.event_store() ||
        !capture_specs_.empty() || options_.checkpoints || options_.clock != nullptr) {
      return;
    }
    checkpointer_ = PgCheckpointer::Start(
        conninfo_, [this](PGconn* conn, const CheckpointJob& job) { return Commit(conn, job); },
        options_.checkpoints_in_flight, options_.fault_points, deadline_.get());
  }

  // Notes a checkpoint's failure (see Pipeline).
  Status Observed(Status st) {
    if (!st.ok()) commit_next_ = true;
    return st;
  }

  // The checkpoint thread's transaction (coalesced jobs): deletes (or stamps) the rows and
  // stores the position.
  Status Commit(PGconn* conn, const CheckpointJob& job) const {
    COURIER_RETURN_IF_ERROR(PgRun(conn, "BEGIN"));
    Status st = job.acked.empty() ? Status::Ok()
                                  : CheckpointRows(conn, checkpoint_sql_, job.acked, job.xids);
    if (st.ok() && job.record) {
      st = MakeSlotTableCheckpoints(conn, options_.tables, names_.slot)->Save(*job.record);
    }
    if (st.ok()) st = PgRun(conn, "COMMIT");
    if (!st.ok()) {
      (void)PgRun(conn, "ROLLBACK");
      return ExplainCheckpointFailure(conn, options_.tables, options_.mode, st);
    }
    return Status::Ok();
  }

  // Runs `sql` (an UPDATE or DELETE of ids $1 RETURNING id) on `rows` and waits until it
  // found them all. The server streams a transaction once its commit record is flushed, which
  // is before the transaction is visible to other sessions (and, under synchronous
  // replication, before the standbys confirmed it): a row deleted in that window is not found,
  // and the checkpoint would silently leave it in the outbox forever, its transaction
  // confirmed. A row not found is deleted again once its transaction is visible, which is
  // when the inserting transaction no longer holds the lock on its own xid. One still not
  // found then is gone already (deleted by hand, or this is a redelivery after a crash).
  Status CheckpointRows(PGconn* conn, const std::string& sql, const std::vector<int64_t>& rows,
                        const std::vector<int64_t>& xids) const {
    std::vector<int64_t> missing = rows;
    const TimePoint deadline = ClockOf(options_).Now() + kVisibleWait;
    const StopSignal never;
    bool settled = false;
    while (true) {
      COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn, sql, {IdArray(missing)}));
      std::vector<int64_t> found;  // sorted: a set would allocate a node per row
      found.reserve(static_cast<size_t>(PQntuples(res.get())));
      for (int i = 0; i < PQntuples(res.get()); ++i) {
        found.push_back(ParseInt64(PQgetvalue(res.get(), i, 0)).value_or(0));
      }
      std::sort(found.begin(), found.end());
      std::vector<int64_t> still;
      std::vector<int64_t> waiting;
      for (int64_t id : missing) {
        if (std::binary_search(found.begin(), found.end(), id)) continue;
        still.push_back(id);
        const size_t at =
            static_cast<size_t>(std::find(rows.begin(), rows.end(), id) - rows.begin());
        waiting.push_back(xids[at]);
      }
      if (still.empty() || settled) return Status::Ok();
      missing = std::move(still);
      // Wait until none of their transactions is still committing.
      while (true) {
        COURIER_ASSIGN_OR_RETURN(
            PgResult held, PgExec(conn,
                                  "SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND"
                                  " transactionid::text::int8 = ANY($1::int8[]) LIMIT 1",
                                  {IdArray(waiting)}));
        if (PQntuples(held.get()) == 0) break;
        if (ClockOf(options_).Now() >= deadline) {
          return RetriableError("outbox rows " + IdArray(missing) +
                                " were streamed but are not visible yet: their transaction is "
                                "still committing (waiting for a synchronous standby?)");
        }
        ClockOf(options_).SleepFor(Duration(2), never);
      }
      settled = true;
    }
  }

  // The captured tables are in the publication (added now if `courier migrate --capture` did
  // not), and their changes are decoded from here on.
  Status ActivateCapture() {
    std::set<uint32_t> oids;
    if (!capture_specs_.empty()) {
      COURIER_ASSIGN_OR_RETURN(std::vector<cdc::CapturedTable> captured,
                               cdc::PrepareCapture(conn_.get(), options_.tables, names_.publication,
                                                   capture_specs_, cdc::CaptureSetup::kRelay));
      for (const cdc::CapturedTable& t : captured) oids.insert(t.oid);
    }
    COURIER_RETURN_IF_ERROR(snapshot_.Load(conn_.get(), options_.tables, names_.publication,
                                           std::vector<uint32_t>(oids.begin(), oids.end())));
    capture_.SetTables(std::move(oids));
    return Status::Ok();
  }

  Status OpenBackfill() {
    SourceOptions o = options_;
    o.cdc = CdcOptions{};
    o.backfill_slot = names_.slot;
    backfill_ = options_.tables.event_store() ? MakeEventStorePollSource(o, conninfo_)
                                              : MakePostgresPollSource(o, conninfo_);
    return backfill_->Open();
  }

  Status StartStreaming() {
    COURIER_ASSIGN_OR_RETURN(const Lsn confirmed, cdc::ReadSlotConfirmed(conn_.get(), names_.slot));
    COURIER_ASSIGN_OR_RETURN(const std::optional<Lsn> checkpoint, checkpoints_->Load());
    // After a server crash the slot is back at its position of the last server checkpoint;
    // the relay's own position, committed with the rows it deleted, is exact. Asking to start
    // there makes the server skip every transaction that committed before it.
    const Lsn start = cdc::StartLsn(confirmed, checkpoint);
    if (start > confirmed) {
      log::Info("resuming after the slot's position, where this relay last checkpointed",
                {{"slot", names_.slot},
                 {"slot_lsn", pgoutput::FormatLsn(confirmed)},
                 {"checkpoint_lsn", pgoutput::FormatLsn(start)}});
    }
    // The server streams up to its flushed WAL, which holds every (synchronous) commit.
    COURIER_ASSIGN_OR_RETURN(PgResult end,
                             PgExec(conn_.get(), "SELECT pg_current_wal_flush_lsn()::text"));
    COURIER_ASSIGN_OR_RETURN(catch_up_lsn_, pgoutput::ParseLsn(PQgetvalue(end.get(), 0, 0)));
    catch_up_deadline_ = ClockOf(options_).Now() + kCatchUpWait;
    COURIER_RETURN_IF_ERROR(stream_.Start(conninfo_, names_.slot, names_.publication, start));
    ledger_.Reset(start, checkpoint);
    log::Info("streaming from replication slot", {{"slot", names_.slot},
                                                  {"publication", names_.publication},
                                                  {"from_lsn", pgoutput::FormatLsn(start)}});
    return Status::Ok();
  }

  // The next CopyData message, without blocking; false when none is buffered.
  Result<bool> NextCopyData(std::string* out) {
    if (pushed_back_) {
      *out = std::move(*pushed_back_);
      pushed_back_.reset();
      return true;
    }
    Result<bool> got = stream_.Next(out);
    // Whatever the class, the stream restarts from the slot after reconnecting (a dropped
    // slot is recreated then). A publication dropped and created again under the slot makes
    // every restart fail the same way: the slot is recreated then too.
    if (!got.ok() && stream_.publication_missing()) slot_stale_ = true;
    return got;
  }

  Result<FetchedBatch> ReadStream(size_t max) {
    FetchedBatch batch;
    handed_.clear();
    while (!redeliver_.empty() && batch.size() < max) {
      const int64_t pos = redeliver_.front();
      redeliver_.pop_front();
      batch.events.push_back(inflight_.at(pos).event);
      handed_.push_back(pos);
    }
    std::string buf;
    // Backfills requested since (`courier backfill`), once a second at most; then the next
    // snapshot chunk of a captured table, when none is on its way.
    if (!capture_.empty() && snapshot_.done() && ClockOf(options_).Now() >= next_backfill_check_) {
      next_backfill_check_ = ClockOf(options_).Now() + kBackfillCheck;
      COURIER_RETURN_IF_ERROR(snapshot_.Reload(conn_.get()));
    }
    if (!snapshot_.in_progress() && !snapshot_.done()) {
      COURIER_RETURN_IF_ERROR(snapshot_.Step(conn_.get()));
      catch_up_deadline_ = ClockOf(options_).Now() + kCatchUpWait;
    }
    // The catch-up deadline counts from the last message read: moved once when it matters
    // (before a wait, at the end of the batch), not per message, as reading the clock costs
    // more than decoding an event on some virtual machines.
    bool progressed = false;
    auto moved_on = [&] {
      if (progressed) catch_up_deadline_ = ClockOf(options_).Now() + kCatchUpWait;
      progressed = false;
    };
    while (batch.size() < max) {
      COURIER_ASSIGN_OR_RETURN(bool got, NextCopyData(&buf));
      if (!got && batch.empty() &&
          (ledger_.received() < catch_up_lsn_ || snapshot_.in_progress())) {
        moved_on();
        if (ClockOf(options_).Now() < catch_up_deadline_) {
          // Just started: an empty answer must mean "nothing committed is left" (what --once
          // relies on), so wait for the stream to reach the WAL position seen at the start,
          // unless it stalls for kCatchUpWait; likewise for a snapshot chunk's watermarks.
          stream_.WaitReadable(Duration(50));
          continue;
        }
      }
      if (!got) break;
      progressed = true;
      COURIER_ASSIGN_OR_RETURN(pgoutput::CopyMessage copy, pgoutput::ParseCopyMessage(buf));
      if (copy.kind == pgoutput::CopyMessage::Kind::kKeepalive) {
        OnKeepalive(copy.keepalive);
        continue;
      }
      if (copy.kind != pgoutput::CopyMessage::Kind::kXLogData) continue;
      ledger_.Received(copy.data.start);
      COURIER_RETURN_IF_ERROR(pgoutput::ParseMessage(copy.data.payload, &message_));
      COURIER_RETURN_IF_ERROR(OnMessage(message_, &batch));
    }
    moved_on();
    if (ledger_.in_transaction()) COURIER_RETURN_IF_ERROR(ReadOnToCommit(&buf));
    if (options_.tables.event_store()) COURIER_RETURN_IF_ERROR(DropPublished(&batch));
    // Snapshot chunks whose events are all done by now (their transaction's end arrived
    // after the checkpoint of its events), and those that published nothing.
    COURIER_RETURN_IF_ERROR(snapshot_.Save(conn_.get(), ledger_.Confirmable()));
    COURIER_RETURN_IF_ERROR(snapshot_.SaveEmpty(conn_.get()));
    Report(/*force=*/false);
    return batch;
  }

  // A batch often ends with its transaction's last change while that transaction's Commit is
  // still on the way (the server sends a transaction whole, so it follows at once).
  // Reading on to it lets this batch's checkpoint record the position past the transaction;
  // stopping short would leave it to be decoded again, and published once more, after a
  // server crash, on top of the batch in flight then. Anything but the Commit is kept for
  // the next batch.
  Status ReadOnToCommit(std::string* buf) {
    const TimePoint deadline = ClockOf(options_).Now() + kCommitWait;
    while (ledger_.in_transaction()) {
      COURIER_ASSIGN_OR_RETURN(bool got, NextCopyData(buf));
      if (!got) {
        if (ClockOf(options_).Now() >= deadline) return Status::Ok();
        stream_.WaitReadable(Duration(10));
        continue;
      }
      COURIER_ASSIGN_OR_RETURN(pgoutput::CopyMessage copy, pgoutput::ParseCopyMessage(*buf));
      if (copy.kind == pgoutput::CopyMessage::Kind::kKeepalive) {
        OnKeepalive(copy.keepalive);
        continue;
      }
      if (copy.kind != pgoutput::CopyMessage::Kind::kXLogData) continue;
      COURIER_RETURN_IF_ERROR(pgoutput::ParseMessage(copy.data.payload, &message_));
      if (message_.kind != pgoutput::Message::Kind::kCommit) {
        pushed_back_ = std::move(*buf);
        return Status::Ok();
      }
      ledger_.Received(copy.data.start);
      COURIER_RETURN_IF_ERROR(OnMessage(message_, nullptr));
    }
    return Status::Ok();
  }

  void OnKeepalive(const pgoutput::Keepalive& k) {
    ledger_.Keepalive(k.wal_end);
    Report(/*force=*/k.reply_requested);
  }

  Status OnMessage(const pgoutput::Message& m, FetchedBatch* batch) {
    using Kind = pgoutput::Message::Kind;
    switch (m.kind) {
      case Kind::kBegin:
        ledger_.Begin(m.commit_time_us);
        xid_ = m.xid;
        begin_lsn_ = m.final_lsn;
        capture_.Begin(m);
        return Status::Ok();
      case Kind::kCommit:
        ledger_.Commit(m.end_lsn);
        return Status::Ok();
      case Kind::kRelation:
        OnRelation(m.relation);
        return capture_.OnRelation(m.relation, conn_.get());
      case Kind::kInsert: {
        auto rel = columns_.find(m.relation_id);
        if (rel == columns_.end()) return HandChanges(m, batch);  // a captured table's, or none
        cdc::DecodeInsert(rel->second, m.values, CurrentCommitTime(), &decoded_);
        Hand(decoded_, batch);
        return Status::Ok();
      }
      case Kind::kUpdate:
      case Kind::kDelete:
      case Kind::kTruncate:
        // The outbox's own deletes and updates (checkpoints) are not captured.
        return HandChanges(m, batch);
      case Kind::kLogicalMessage:
        if (m.prefix == cdc::kWatermarkPrefix && m.transactional) {
          changes_.clear();
          snapshot_.OnWatermark(m, begin_lsn_, CurrentCommitTime(), &changes_);
          return HandRendered(batch);
        }
        if (m.prefix != cdc::kMessagePrefix) return Status::Ok();
        if (!m.transactional) {
          // Written even if its transaction rolled back: publishing it could be a ghost.
          ledger_.Standalone(m.message_lsn, UnixMicrosNow());
          DecodedRow d = cdc::DecodeLogicalMessage(m, stream_.system_id(), CurrentCommitTime());
          d.error =
              "non-transactional logical message: it is written even when its transaction "
              "rolls back; emit it with pg_logical_emit_message(true, 'courier', ...)";
          Hand(std::move(d), batch);
          return Status::Ok();
        }
        Hand(cdc::DecodeLogicalMessage(m, stream_.system_id(), CurrentCommitTime()), batch);
        return Status::Ok();
      case Kind::kType:
      case Kind::kOther:
        return Status::Ok();
    }
    return Status::Ok();
  }

  void OnRelation(const pgoutput::Relation& r) {
    if (r.schema != names_.outbox_schema || r.name != names_.outbox_table) {
      columns_.erase(r.id);
      return;
    }
    columns_[r.id] = cdc::OutboxColumnsOf(r, options_.tables.outbox_format);
  }

  // The changes of captured tables `m` makes, as events (row_id 0: no outbox row).
  Status HandChanges(const pgoutput::Message& m, FetchedBatch* batch) {
    changes_.clear();
    capture_.OnChange(m, &changes_);
    for (const cdc::RowChange& change : changes_) snapshot_.Saw(change);
    return HandRendered(batch);
  }

  // Hands changes_ as events.
  Status HandRendered(FetchedBatch* batch) {
    for (cdc::RowChange& change : changes_) {
      change.database = database_;  // Debezium's source.db
      DecodedRow d;
      cdc::RenderChange(change, options_.cdc.change_format, stream_.system_id(), &d.event);
      Hand(std::move(d), batch);
    }
    return Status::Ok();
  }

  // Not value_or(UnixMicrosNow()), which would read the clock for every event.
  int64_t CurrentCommitTime() const {
    if (const std::optional<int64_t> t = ledger_.commit_time_us()) return *t;
    return UnixMicrosNow();
  }

  // Hands a decoded event to the relay, accounting it to the current transaction.
  void Hand(DecodedRow d, FetchedBatch* batch) {
    const int64_t pos = ledger_.Hand();
    const int64_t row_id = d.event.row_id;
    d.event.id = pos;
    if (d.error.empty()) {
      batch->events.push_back(d.event);
    } else {
      batch->malformed.push_back(
          {pos, d.error, kParked, d.event.aggregate_type, d.event.aggregate_id, d.event.event_id});
    }
    handed_.push_back(pos);
    inflight_.emplace(pos, Inflight{row_id, std::move(d.event), xid_});
  }

  void Done(int64_t pos) {
    inflight_.erase(pos);
    ledger_.Done(pos);
  }

  // An event store polled before (or between) runs of this source: what its polling relay
  // published after the slot's start is streamed too, and is not published again. A row
  // streamed before it is visible cannot have been published by anyone.
  Status DropPublished(FetchedBatch* batch) {
    std::map<int64_t, int64_t> by_row;  // position in the store -> position in the ledger
    for (int64_t pos : handed_) {
      auto it = inflight_.find(pos);
      if (it != inflight_.end() && it->second.row_id > 0) by_row[it->second.row_id] = pos;
    }
    if (by_row.empty()) return Status::Ok();
    std::vector<int64_t> rows;
    for (const auto& [row, pos] : by_row) rows.push_back(row);
    COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), published_sql_, {IdArray(rows)}));
    if (PQntuples(res.get()) == 0) return Status::Ok();
    std::set<int64_t> drop;
    for (int i = 0; i < PQntuples(res.get()); ++i) {
      drop.insert(by_row[ParseInt64(PQgetvalue(res.get(), i, 0)).value_or(0)]);
    }
    std::erase_if(batch->events, [&drop](const Event& e) { return drop.count(e.id) > 0; });
    std::erase_if(batch->malformed, [&drop](const Rejected& r) { return drop.count(r.id) > 0; });
    std::erase_if(handed_, [&drop](int64_t pos) { return drop.count(pos) > 0; });
    for (int64_t pos : drop) Done(pos);
    dropped_ = true;
    // Nothing of theirs is left to checkpoint: the slot may move past them.
    ledger_.Advance();
    return Status::Ok();
  }

  Status DeadLetter(const Rejected& r, const Inflight& f, const std::string& sink_name) {
    if (options_.tables.event_store() && f.row_id > 0) {
      // As the polling relay parks it: the row as it is (headers that are not a JSON object
      // too) copied to the dead-letter table, and stamped, once visible.
      COURIER_RETURN_IF_ERROR(
          CheckpointRows(conn_.get(), visible_sql_, {f.row_id}, {static_cast<int64_t>(f.xid)}));
      Rejected row = r;
      row.id = f.row_id;
      return ParkEventStoreRows(conn_.get(), event_park_sql_, {&row, 1}, sink_name);
    }
    if (f.row_id > 0) {
      // As the polling relay parks it: the row as committed (headers that are no JSON object,
      // a created_at that is no time) moved to the dead-letter table once visible, so that a
      // retry of it unfixed is refused again, not published with what decoding made of it.
      const std::string outbox = QuoteIdent(options_.tables.outbox);
      COURIER_RETURN_IF_ERROR(
          CheckpointRows(conn_.get(), "SELECT id FROM " + outbox + " WHERE id = ANY($1::int8[])",
                         {f.row_id}, {static_cast<int64_t>(f.xid)}));
      COURIER_ASSIGN_OR_RETURN(PgResult there,
                               PgExec(conn_.get(), "SELECT 1 FROM " + outbox + " WHERE id = $1",
                                      {std::to_string(f.row_id)}));
      if (PQntuples(there.get()) == 1) {
        Rejected row = r;
        row.id = f.row_id;
        return PgOutboxParking(options_.tables).Park(conn_.get(), {&row, 1}, sink_name);
      }
      // Gone meanwhile (deleted by hand): what was decoded is all there is.
    }
    if (IsUuid(f.event.event_id)) {
      COURIER_RETURN_IF_ERROR(parking_.Park(conn_.get(), f.event, f.row_id, r, sink_name));
    } else {
      // A logical message whose id is not a UUID (the error says so) keeps a fixed one.
      Event e = f.event;
      e.event_id = cdc::MessageEventId(0, 0);
      COURIER_RETURN_IF_ERROR(parking_.Park(conn_.get(), e, f.row_id, r, sink_name));
    }
    if (f.row_id > 0) {
      COURIER_RETURN_IF_ERROR(CheckpointRows(conn_.get(),
                                             "DELETE FROM " + QuoteIdent(options_.tables.outbox) +
                                                 " WHERE id = ANY($1::int8[]) RETURNING id",
                                             {f.row_id}, {static_cast<int64_t>(f.xid)}));
    }
    return Status::Ok();
  }

  // Hands the ledger's positions to the stream, which reports them when the confirmed one
  // moved, every status interval, or when the server asks (`force`).
  void Report(bool force) { stream_.Report(ledger_.received(), ledger_.confirmed(), force); }

  SourceOptions options_;
  std::string conninfo_;
  cdc::CdcNames names_;
  PgConn conn_;  // bookkeeping, checkpoints, leadership
  State state_ = State::kClosed;
  std::unique_ptr<Source> backfill_;
  std::string checkpoint_sql_;
  PgEventParking parking_;
  // An event store's: its parking (EventStoreParkSql), the query of which streamed rows are
  // published already, and of which are visible.
  std::string event_park_sql_;
  std::string published_sql_;
  std::string visible_sql_;
  bool dropped_ = false;  // the last ReadStream dropped rows published already
  std::string cleanup_sql_;
  std::unique_ptr<CheckpointStore> checkpoints_;  // the relay's position (on conn_)
  static constexpr Duration kCatchUpWait{10000};
  // How long a batch waits for its last transaction's Commit (see ReadOnToCommit).
  static constexpr Duration kCommitWait{200};
  static constexpr Duration kVisibleWait{30000};
  static constexpr Duration kBackfillCheck{1000};
  TimePoint next_backfill_check_{};
  Lsn catch_up_lsn_ = 0;
  TimePoint catch_up_deadline_{};
  bool slot_stale_ = false;  // survives Close(): the next Activate recreates the slot

  // Stream state (relay thread).
  cdc::ReplicationStream stream_;
  cdc::LsnLedger ledger_;
  std::unordered_map<uint32_t, cdc::OutboxColumns> columns_;  // relation id -> outbox columns
  std::map<int64_t, Inflight> inflight_;                      // by position
  // The message and the outbox row being decoded, reused from one to the next (their buffers
  // stay, so decoding allocates nothing once they have grown).
  pgoutput::Message message_;
  DecodedRow decoded_;
  std::deque<int64_t> redeliver_;  // handed out, not done: offered again first
  std::vector<int64_t> handed_;    // positions of the last batch
  // Pipelined checkpoints on their way, in the order submitted: their positions (still open
  // in the ledger) and the position each stores; finished_ counts those applied.
  struct Committing {
    std::vector<int64_t> positions;
    std::optional<Lsn> record;
  };
  std::deque<Committing> committing_;
  uint64_t finished_ = 0;
  bool commit_next_ = false;     // a checkpoint failed: the next one commits before returning
  bool pipeline_tried_ = false;  // since Open (StartPipeline)
  uint32_t xid_ = 0;             // of the transaction being decoded
  std::vector<cdc::CaptureSpec> capture_specs_;
  cdc::TableCapture capture_;               // captured tables' changes
  cdc::Snapshot snapshot_;                  // their rows from before capture began
  std::optional<std::string> pushed_back_;  // a message read ahead, for the next batch
  Lsn begin_lsn_ = 0;                       // the final_lsn of the transaction being decoded
  std::vector<cdc::RowChange> changes_;     // scratch of HandChanges
  std::string database_;                    // the source's database, for the changes' source.db
  // Bounds the checkpoints once the relay stops (from Activate).
  std::unique_ptr<CheckpointDeadline> deadline_;
  const StopSignal* deadline_stop_ = nullptr;
  // Pipelined checkpoints (null: each commits in Checkpoint()); last, so that it is destroyed
  // (committing what is queued) while what its jobs read still exists.
  std::unique_ptr<PgCheckpointer> checkpointer_;
};

}  // namespace

std::unique_ptr<Source> MakePostgresCdcSource(const SourceOptions& options, std::string conninfo) {
  return std::make_unique<PostgresCdcSource>(options, std::move(conninfo));
}

}  // namespace courier
