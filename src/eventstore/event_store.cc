// EventStore on PostgreSQL (include/courier/event_store.h); SQLite in event_store_sqlite.cc.
#include "courier/event_store.h"

#include <algorithm>

#include "core/encoding.h"
#include "core/postgres.h"
#include "core/uuid.h"
#include "eventstore/event_store_internal.h"
#include "eventstore/horizon.h"
#include "schema/migrations.h"
#include "sources/source.h"

namespace courier {
namespace {

// Runs one statement and keeps the failed result too, for its SQLSTATE and constraint name.
struct Executed {
  PgResult res;
  Status status;
};

Executed Exec(PGconn* conn, const std::string& sql, const PgParams& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  PgResult res(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                            values.data(), nullptr, nullptr, 0));
  if (res == nullptr) return {nullptr, PgError(conn, nullptr)};
  const ExecStatusType st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    Status status = PgError(conn, res.get());
    return {std::move(res), std::move(status)};
  }
  return {std::move(res), Status::Ok()};
}

constexpr const char* kColumns =
    "position, stream_type, stream_id, version, event_id::text, event_type, payload::text,"
    " headers::text,"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

Result<std::vector<RecordedEvent>> Rows(PGresult* res) {
  std::vector<RecordedEvent> out;
  out.reserve(static_cast<size_t>(PQntuples(res)));
  for (int i = 0; i < PQntuples(res); ++i) {
    RawEventRow row;
    row.position = ParseInt64(PQgetvalue(res, i, 0)).value_or(0);
    row.stream_type = PQgetvalue(res, i, 1);
    row.stream_id = PQgetvalue(res, i, 2);
    row.version = ParseInt64(PQgetvalue(res, i, 3)).value_or(0);
    row.event_id = PQgetvalue(res, i, 4);
    row.event_type = PQgetvalue(res, i, 5);
    row.payload = PQgetvalue(res, i, 6);
    if (!PQgetisnull(res, i, 7)) row.headers = PQgetvalue(res, i, 7);
    row.created_at = PQgetvalue(res, i, 8);
    COURIER_ASSIGN_OR_RETURN(RecordedEvent e, ToRecorded(std::move(row)));
    out.push_back(std::move(e));
  }
  return out;
}

Result<int64_t> CurrentVersion(PGconn* conn, const std::string& table,
                               const std::string& stream_type, const std::string& stream_id) {
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT coalesce(max(version), 0) FROM " + QuoteIdent(table) +
                                      " WHERE stream_type = $1 AND stream_id = $2",
                                  {stream_type, stream_id}));
  return ParseInt64(PQgetvalue(res.get(), 0, 0)).value_or(0);
}

// Undoes what the append wrote and leaves the caller's transaction as it was before it.
void RollbackAppend(PGconn* conn) {
  (void)PgRun(conn, "ROLLBACK TO SAVEPOINT courier_append; RELEASE SAVEPOINT courier_append");
}

}  // namespace

EventStore::EventStore(std::string table)
    : table_(std::move(table)), snapshots_(EventStoreTables(table_).Snapshots()) {}

Result<AppendResult> EventStore::Append(pg_conn* conn, const std::string& stream_type,
                                        const std::string& stream_id, int64_t expected_version,
                                        const std::vector<NewEvent>& events) const {
  const PGTransactionStatusType tx = PQtransactionStatus(conn);
  if (tx == PQTRANS_INERROR) {
    return FailedPreconditionError(
        "EventStore::Append: the caller's transaction has already failed; roll it back");
  }
  if (tx != PQTRANS_INTRANS) {
    return FailedPreconditionError(
        "EventStore::Append needs the caller's open transaction (run BEGIN first, COMMIT "
        "after), so the events commit or roll back with the caller's decision");
  }
  COURIER_RETURN_IF_ERROR(CheckAppend(expected_version, events));
  std::vector<std::optional<std::string>> ids, types, payloads, headers;
  for (const NewEvent& e : events) {
    ids.emplace_back(e.event_id.empty() ? NewUuidV7() : e.event_id);
    types.emplace_back(e.event_type);
    payloads.emplace_back(e.payload);
    headers.push_back(e.headers.empty() ? std::nullopt
                                        : std::optional<std::string>(HeadersToJson(e.headers)));
  }
  const std::string table = QuoteIdent(table_);
  // One statement: the stream's version and the rows, written only when the version is the
  // expected one. A concurrent writer of the same version makes it wait for that one's end,
  // then fail with 23505 on the (stream_type, stream_id, version) constraint.
  const std::string sql =
      "WITH cur AS (SELECT coalesce(max(version), 0) AS v FROM " + table +
      " WHERE stream_type = $1 AND stream_id = $2)"
      " INSERT INTO " +
      table +
      " (stream_type, stream_id, version, event_id, event_type, payload, headers)"
      " SELECT $1, $2, cur.v + e.n, e.id::uuid, e.type, e.payload::json, e.headers::json"
      " FROM cur, unnest($4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY"
      " AS e(id, type, payload, headers, n)"
      " WHERE $3::bigint < 0 OR cur.v = $3::bigint ORDER BY e.n"
      " RETURNING position, version, event_id::text";
  const PgParams params = {
      stream_type,         stream_id,          std::to_string(expected_version),
      PgTextArray(ids),    PgTextArray(types), PgTextArray(payloads),
      PgTextArray(headers)};
  const std::string stream = stream_type + "/" + stream_id;
  const std::string version_key = DerivedName(BaseName(table_), "_stream_version_key");
  const std::string event_id_key = DerivedName(BaseName(table_), "_event_id_key");
  // kAny retries a lost race itself (each statement of READ COMMITTED sees the winner); a
  // transaction that sees no newer snapshot (REPEATABLE READ) gives up after a few.
  constexpr int kAnyAttempts = 20;
  for (int attempt = 1;; ++attempt) {
    COURIER_RETURN_IF_ERROR(PgRun(conn, "SAVEPOINT courier_append"));
    Executed ex = Exec(conn, sql, params);
    if (ex.status.ok() && PQntuples(ex.res.get()) == static_cast<int>(events.size())) {
      COURIER_RETURN_IF_ERROR(PgRun(conn, "RELEASE SAVEPOINT courier_append"));
      AppendResult out;
      for (int i = 0; i < PQntuples(ex.res.get()); ++i) {
        out.events.push_back({ParseInt64(PQgetvalue(ex.res.get(), i, 0)).value_or(0),
                              ParseInt64(PQgetvalue(ex.res.get(), i, 1)).value_or(0),
                              PQgetvalue(ex.res.get(), i, 2)});
      }
      std::sort(
          out.events.begin(), out.events.end(),
          [](const AppendedEvent& a, const AppendedEvent& b) { return a.version < b.version; });
      out.version = out.events.back().version;
      return out;
    }
    RollbackAppend(conn);
    if (ex.status.ok()) {
      // Nothing written: the stream is not at the expected version.
      COURIER_ASSIGN_OR_RETURN(int64_t current,
                               CurrentVersion(conn, table_, stream_type, stream_id));
      return AbortedError(ExpectedVersionMessage(stream, expected_version, current));
    }
    const std::string state = PgSqlState(ex.res.get());
    const char* constraint =
        ex.res != nullptr ? PQresultErrorField(ex.res.get(), PG_DIAG_CONSTRAINT_NAME) : nullptr;
    if (state == "23505" && constraint != nullptr && constraint == event_id_key) {
      return InvalidArgumentError("append to stream " + stream +
                                  ": an event_id given is already in " + table + ": " +
                                  ex.status.message());
    }
    if (state == "23505" && (constraint == nullptr || constraint == version_key ||
                             std::string(constraint).find("version") != std::string::npos)) {
      if (expected_version == kAny && attempt < kAnyAttempts) continue;
      COURIER_ASSIGN_OR_RETURN(int64_t current,
                               CurrentVersion(conn, table_, stream_type, stream_id));
      return AbortedError("stream " + stream + " is at version " + std::to_string(current) +
                          ": another writer appended version " +
                          std::to_string(expected_version < 0 ? current : expected_version + 1) +
                          " first; re-read the stream and retry");
    }
    if (ex.status.code() == StatusCode::kNotFound) {
      return NotFoundError("event store " + table +
                           " does not exist; create it with: courier migrate --event-store "
                           "--source URL");
    }
    return ex.status.WithContext("append to stream " + stream);
  }
}

Result<std::vector<RecordedEvent>> EventStore::ReadStream(pg_conn* conn,
                                                          const std::string& stream_type,
                                                          const std::string& stream_id,
                                                          int64_t from_version,
                                                          size_t limit) const {
  const int64_t n =
      limit > static_cast<size_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(limit);
  COURIER_ASSIGN_OR_RETURN(
      PgResult res,
      PgExec(conn,
             std::string("SELECT ") + kColumns + " FROM " + QuoteIdent(table_) +
                 " WHERE stream_type = $1 AND stream_id = $2 AND version >= $3"
                 " ORDER BY version LIMIT $4",
             {stream_type, stream_id, std::to_string(from_version), std::to_string(n)}));
  return Rows(res.get());
}

Result<std::vector<RecordedEvent>> EventStore::ReadAll(pg_conn* conn, int64_t after_position,
                                                       size_t limit,
                                                       std::chrono::milliseconds wait) const {
  if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
    // In a transaction the rows would be read by a snapshot from before the horizon moved
    // (REPEATABLE READ), or the connection may itself be a writer the horizon waits for.
    return FailedPreconditionError(
        "EventStore::ReadAll runs outside a transaction (it waits for the table's open "
        "writers, then reads with a fresh snapshot)");
  }
  COURIER_ASSIGN_OR_RETURN(int64_t horizon, WaitForHorizon(conn, table_, after_position, wait));
  if (horizon <= after_position) return std::vector<RecordedEvent>{};
  const int64_t n =
      limit > static_cast<size_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(limit);
  COURIER_ASSIGN_OR_RETURN(
      PgResult res,
      PgExec(conn,
             std::string("SELECT ") + kColumns + " FROM " + QuoteIdent(table_) +
                 " WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3",
             {std::to_string(after_position), std::to_string(horizon), std::to_string(n)}));
  return Rows(res.get());
}

Status EventStore::SaveSnapshot(pg_conn* conn, const std::string& stream_type,
                                const std::string& stream_id, int64_t version,
                                const std::string& state) const {
  if (version <= 0) return InvalidArgumentError("a snapshot's version is 1 or more");
  return PgExec(conn,
                "INSERT INTO " + QuoteIdent(snapshots_) +
                    " (stream_type, stream_id, version, state) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (stream_type, stream_id, version) DO UPDATE"
                    " SET state = excluded.state, created_at = now()",
                {stream_type, stream_id, std::to_string(version), state})
      .status()
      .WithContext("save snapshot of " + stream_type + "/" + stream_id);
}

Result<std::optional<Snapshot>> EventStore::LoadLatest(pg_conn* conn,
                                                       const std::string& stream_type,
                                                       const std::string& stream_id) const {
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT version, state FROM " + QuoteIdent(snapshots_) +
                                      " WHERE stream_type = $1 AND stream_id = $2"
                                      " ORDER BY version DESC LIMIT 1",
                                  {stream_type, stream_id}));
  if (PQntuples(res.get()) == 0) return std::optional<Snapshot>();
  return std::optional<Snapshot>(
      Snapshot{ParseInt64(PQgetvalue(res.get(), 0, 0)).value_or(0), PQgetvalue(res.get(), 0, 1)});
}

Result<LoadedStream> EventStore::Load(pg_conn* conn, const std::string& stream_type,
                                      const std::string& stream_id) const {
  LoadedStream out;
  COURIER_ASSIGN_OR_RETURN(out.snapshot, LoadLatest(conn, stream_type, stream_id));
  const int64_t after = out.snapshot ? out.snapshot->version : 0;
  COURIER_ASSIGN_OR_RETURN(out.events, ReadStream(conn, stream_type, stream_id, after + 1));
  out.version = out.events.empty() ? after : out.events.back().version;
  return out;
}

}  // namespace courier
