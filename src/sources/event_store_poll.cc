// PostgreSQL event store polling source (`courier relay --event-store`).
//
// Reads the events not yet published (published_at IS NULL) in position order, up to the
// horizon (eventstore/horizon.h), so the sink receives them in the store's global order and
// never before a lower position that may still commit. Checkpoint() stamps published_at after
// the sink's ack; events are never deleted. A restart reads again what has no published_at:
// only unacked events go out again, with the event_id they had.
#include <string>

#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/url.h"
#include "eventstore/horizon.h"
#include "schema/table_shape.h"
#include "sources/postgres_common.h"
#include "sources/row_codec.h"
#include "sources/source.h"
#include "stores/dead_letters_internal.h"  // kParkColumns

namespace courier {
namespace {

class EventStorePollSource final : public Source {
 public:
  EventStorePollSource(SourceOptions options, std::string conninfo)
      : options_(std::move(options)),
        conninfo_(std::move(conninfo)),
        horizon_(options_.tables.outbox) {}

  Status Open() override {
    conn_.reset();
    COURIER_ASSIGN_OR_RETURN(conn_, PgConnect(conninfo_));
    if (Status st = CheckTablesExist(conn_.get(), options_.tables, Describe(),
                                     "courier migrate --event-store --source");
        !st.ok()) {
      conn_.reset();
      return st;
    }
    Status st = CheckTableShapes(conn_.get(), options_.tables);
    // Stamping published_at needs UPDATE, as retain mode does; nothing is deleted.
    if (st.ok()) st = CheckRelayPrivileges(conn_.get(), options_.tables, CheckpointMode::kRetain);
    if (!st.ok()) {
      conn_.reset();
      return st;
    }
    const std::string events = QuoteIdent(options_.tables.outbox);
    const std::string dead = QuoteIdent(options_.tables.dead_letter);
    // The row as an outbox row (aggregate = stream), with its version for the headers. The
    // CDC source's backfill (backfill_slot) reads the rows its slot's snapshot saw unpublished:
    // all committed, so no horizon to wait for.
    const std::string which = options_.backfill_slot.empty()
                                  ? " AND position <= $2"
                                  : " AND position IN (SELECT outbox_id FROM " +
                                        QuoteIdent(options_.tables.CdcBackfill()) +
                                        " WHERE slot_name = $2)";
    fetch_sql_ =
        "SELECT position, event_id::text, stream_type, stream_id, event_type,"
        " payload::text, headers::text, " +
        PgCreatedAtSql("e.created_at") + ", version FROM " + events +
        " e WHERE published_at IS NULL" + which + " ORDER BY position LIMIT $1";
    checkpoint_sql_ =
        "UPDATE " + events + " SET published_at = now() WHERE position = ANY($1::int8[])";
    COURIER_ASSIGN_OR_RETURN(park_sql_, EventStoreParkSql(conn_.get(), options_.tables));
    return Status::Ok();
  }

  Status Activate(const StopSignal&) override { return Status::Ok(); }

  Result<FetchedBatch> Fetch(size_t max) override {
    FetchedBatch batch;
    std::string bound = options_.backfill_slot;
    if (bound.empty()) {
      COURIER_ASSIGN_OR_RETURN(int64_t horizon, horizon_.Advance(conn_.get()));
      ReportWait(horizon);
      if (horizon <= 0) return batch;
      bound = std::to_string(horizon);
    }
    COURIER_ASSIGN_OR_RETURN(PgResult res,
                             PgExec(conn_.get(), fetch_sql_, {std::to_string(max), bound}));
    PGresult* r = res.get();
    const int rows = PQntuples(r);
    batch.events.reserve(static_cast<size_t>(rows));
    for (int i = 0; i < rows; ++i) {
      auto column = [r, i](int col) -> std::optional<std::string> {
        if (PQgetisnull(r, i, col)) return std::nullopt;
        return std::string(PQgetvalue(r, i, col), PQgetlength(r, i, col));
      };
      OutboxRow row{column(0), column(1), column(2), column(3),
                    column(4), column(5), column(6), column(7)};
      COURIER_RETURN_IF_ERROR(AddEventStoreRow(row, column(8), &batch));
    }
    return batch;
  }

  void Wait(const StopSignal& stop) override {
    ClockOf(options_).SleepFor(options_.poll_interval, stop);
  }

  Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                    const std::string& sink_name) override {
    // Called only after the sink acked every event in `acked`: the stamp follows the ack.
    if (rejected.empty()) {
      if (acked.empty()) return Status::Ok();
      return Explain(PgExec(conn_.get(), checkpoint_sql_, {IdArray(acked)}).status());
    }
    COURIER_RETURN_IF_ERROR(PgRun(conn_.get(), "BEGIN"));
    Status st = PgExec(conn_.get(), checkpoint_sql_, {IdArray(acked)}).status();
    if (st.ok()) st = Park(rejected, sink_name);
    if (st.ok()) st = PgRun(conn_.get(), "COMMIT");
    if (!st.ok()) (void)PgRun(conn_.get(), "ROLLBACK");
    return Explain(st);
  }

  // Events are kept for ever: there is nothing to clean.
  Result<int64_t> DeletePublishedBefore(Duration) override { return int64_t{0}; }

  void Close() override { conn_.reset(); }
  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  Status Park(std::span<const Rejected> rejected, const std::string& sink) {
    return ParkEventStoreRows(conn_.get(), park_sql_, rejected, sink);
  }

  // A writer left open holds the horizon (and every later event) back: never skipped, but
  // said, every half minute, once the horizon has not moved for 5 s.
  void ReportWait(int64_t horizon) {
    const TimePoint now = ClockOf(options_).Now();
    if (horizon != last_horizon_ || !horizon_.waiting() || horizon_.blockers().empty()) {
      last_horizon_ = horizon;
      horizon_moved_at_ = now;
      return;
    }
    if (now - horizon_moved_at_ < Duration(5000) || now < next_wait_log_) return;
    next_wait_log_ = now + Duration(30000);
    log::Warn("event store: waiting for an open transaction before publishing past it",
              {{"table", options_.tables.outbox},
               {"horizon", horizon},
               {"transaction", horizon_.blockers().front().ToString()}});
  }

  Status Explain(const Status& st) {
    return ExplainCheckpointFailure(conn_.get(), options_.tables, CheckpointMode::kRetain, st);
  }

  SourceOptions options_;
  std::string conninfo_;
  PgConn conn_;
  PgHorizon horizon_;
  int64_t last_horizon_ = -1;
  TimePoint horizon_moved_at_{};
  TimePoint next_wait_log_{};
  std::string fetch_sql_;
  std::string checkpoint_sql_;
  std::string park_sql_;
};

}  // namespace

Result<std::string> EventStoreParkSql(PGconn* conn, const TableNames& tables) {
  const std::string events = QuoteIdent(tables.outbox);
  const std::string dead = QuoteIdent(tables.dead_letter);
  // The dead-letter table may be an outbox's, with other payload and headers types.
  COURIER_ASSIGN_OR_RETURN(
      PgResult types,
      PgExec(conn,
             "SELECT (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
             " attrelid = $1::regclass AND attname = 'payload'),"
             " (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
             " attrelid = $1::regclass AND attname = 'headers')",
             {dead}));
  const std::string payload_type = PQgetvalue(types.get(), 0, 0);
  const std::string payload = payload_type == "bytea" ? "convert_to(payload::text, 'UTF8')"
                                                      : "payload::text::" + payload_type;
  const std::string headers = "headers::text::" + std::string(PQgetvalue(types.get(), 0, 1));
  return "WITH r AS (SELECT * FROM unnest($1::int8[], $2::text[], $4::text[]) AS r(id,"
         " error, status)),"
         " done AS (UPDATE " +
         events +
         " e SET published_at = now() FROM r WHERE e.position = r.id"
         " RETURNING e.position, e.event_id, e.stream_type, e.stream_id, e.event_type,"
         " e.payload, e.headers, e.created_at, r.error, r.status)"
         " INSERT INTO " +
         dead + dead_letters::kParkColumns + " SELECT " + QuoteLiteral(tables.outbox) +
         ", position, event_id, stream_type, stream_id, event_type, " + payload + ", " + headers +
         ", created_at, error, $3, status FROM done ORDER BY position";
}

Status ParkEventStoreRows(PGconn* conn, const std::string& park_sql,
                          std::span<const Rejected> rejected, const std::string& sink) {
  std::vector<int64_t> ids;
  std::vector<std::optional<std::string>> errors, statuses;
  for (const Rejected& r : rejected) {
    ids.push_back(r.id);
    errors.emplace_back(r.error);
    statuses.emplace_back(r.status);
  }
  return PgExec(conn, park_sql, {IdArray(ids), PgTextArray(errors), sink, PgTextArray(statuses)})
      .status();
}

std::unique_ptr<Source> MakeEventStorePollSource(const SourceOptions& options,
                                                 std::string conninfo) {
  return std::make_unique<EventStorePollSource>(options, std::move(conninfo));
}

}  // namespace courier
