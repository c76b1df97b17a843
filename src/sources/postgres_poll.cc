// PostgreSQL polling source.
//
// No id watermark: each poll reads every pending row in id order. A transaction that took a
// low id but commits late simply shows up in a later poll, so out-of-order commits are never
// skipped. Rows leave the pending set only in Checkpoint(), after the sink's ack.
#include <string>

#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/url.h"
#include "schema/table_shape.h"
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
    conn_.reset();
    COURIER_ASSIGN_OR_RETURN(conn_, PgConnect(conninfo_));
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
    fetch_sql_ = "SELECT id, event_id::text, aggregate_type, aggregate_id, event_type, payload" +
                 std::string(payload_is_bytea_ ? "" : "::text") + ", headers::text, " +
                 PgCreatedAtSql("o.created_at") + " FROM " + outbox +
                 " o WHERE published_at IS NULL" + backfill + shard + " ORDER BY id LIMIT $1";
    checkpoint_sql_ =
        options_.mode == CheckpointMode::kDelete
            ? "DELETE FROM " + outbox + " WHERE id = ANY($1::int8[])"
            : "UPDATE " + outbox + " SET published_at = now() WHERE id = ANY($1::int8[])";
    // SKIP LOCKED: cleaners (one per shard) never wait on each other's rows.
    cleanup_sql_ = "DELETE FROM " + outbox + " WHERE id IN (SELECT id FROM " + outbox +
                   " o WHERE published_at < now() - make_interval(secs => $1::float8 / 1000)" +
                   shard + " LIMIT 10000 FOR UPDATE SKIP LOCKED)";
    return Status::Ok();
  }

  // The relay holds the lease (stores/leadership.h); nothing here is only the leader's.
  Status Activate(const StopSignal&) override { return Status::Ok(); }

  Result<FetchedBatch> Fetch(size_t max) override {
    PgParams params = {std::to_string(max)};
    if (!options_.backfill_slot.empty()) params.push_back(options_.backfill_slot);
    COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), fetch_sql_, params));
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

  void Wait(const StopSignal& stop) override {
    ClockOf(options_).SleepFor(options_.poll_interval, stop);
  }

  Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                    const std::string& sink_name) override {
    if (rejected.empty()) {
      if (acked.empty()) return Status::Ok();
      return ExplainCheckpointFailure(
          conn_.get(), options_.tables, options_.mode,
          PgExec(conn_.get(), checkpoint_sql_, {IdArray(acked)}).status());
    }
    COURIER_RETURN_IF_ERROR(PgRun(conn_.get(), "BEGIN"));
    Status st = PgExec(conn_.get(), checkpoint_sql_, {IdArray(acked)}).status();
    if (st.ok()) st = parking_.Park(conn_.get(), rejected, sink_name);
    if (st.ok()) st = PgRun(conn_.get(), "COMMIT");
    if (!st.ok()) (void)PgRun(conn_.get(), "ROLLBACK");
    return ExplainCheckpointFailure(conn_.get(), options_.tables, options_.mode, st);
  }

  Result<int64_t> DeletePublishedBefore(Duration retention) override {
    return DeletePublishedRows(conn_.get(), cleanup_sql_, retention);
  }

  void Close() override { conn_.reset(); }
  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  SourceOptions options_;
  std::string conninfo_;
  PgConn conn_;
  PgOutboxParking parking_;
  bool payload_is_bytea_ = false;
  std::string fetch_sql_;
  std::string checkpoint_sql_;
  std::string cleanup_sql_;
};

}  // namespace

std::unique_ptr<Source> MakePostgresPollSource(const SourceOptions& options, std::string conninfo) {
  return std::make_unique<PostgresPollSource>(options, std::move(conninfo));
}

}  // namespace courier
