// EventStore on SQLite (include/courier/event_store.h): one writer at a time, so positions
// commit in order and ReadAll's horizon is simply the last position.
#include "core/encoding.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/uuid.h"
#include "courier/event_store.h"
#include "eventstore/event_store_internal.h"

namespace courier {
namespace {

void BindText(sqlite3_stmt* s, int i, const std::string& text) {
  sqlite3_bind_text(s, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

std::string ColumnText(sqlite3_stmt* s, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return p != nullptr ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, i))) : "";
}

constexpr const char* kColumns =
    "position, stream_type, stream_id, version, event_id, event_type, payload, headers, "
    "created_at";

Result<std::vector<RecordedEvent>> Rows(sqlite3* db, sqlite3_stmt* s) {
  std::vector<RecordedEvent> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    RawEventRow row;
    row.position = sqlite3_column_int64(s, 0);
    row.stream_type = ColumnText(s, 1);
    row.stream_id = ColumnText(s, 2);
    row.version = sqlite3_column_int64(s, 3);
    row.event_id = ColumnText(s, 4);
    row.event_type = ColumnText(s, 5);
    row.payload = ColumnText(s, 6);
    if (sqlite3_column_type(s, 7) != SQLITE_NULL) row.headers = ColumnText(s, 7);
    row.created_at = ColumnText(s, 8);
    COURIER_ASSIGN_OR_RETURN(RecordedEvent e, ToRecorded(std::move(row)));
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "read events");
  return out;
}

Result<int64_t> CurrentVersion(sqlite3* db, const std::string& table,
                               const std::string& stream_type, const std::string& stream_id) {
  COURIER_ASSIGN_OR_RETURN(
      SqliteStmt stmt,
      SqlitePrepare(db, "SELECT coalesce(max(version), 0) FROM " + QuoteIdent(table) +
                            " WHERE stream_type = ?1 AND stream_id = ?2"));
  BindText(stmt.get(), 1, stream_type);
  BindText(stmt.get(), 2, stream_id);
  const int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return SqliteError(db, rc, "read the stream's version");
  return sqlite3_column_int64(stmt.get(), 0);
}

Status NotFoundHint(const Status& st, const std::string& table) {
  if (st.code() != StatusCode::kNotFound) return st;
  return NotFoundError("event store " + QuoteIdent(table) +
                       " does not exist; create it with: courier migrate --event-store --source "
                       "URL");
}

}  // namespace

Result<AppendResult> EventStore::Append(sqlite3* db, const std::string& stream_type,
                                        const std::string& stream_id, int64_t expected_version,
                                        const std::vector<NewEvent>& events) const {
  if (sqlite3_get_autocommit(db) != 0) {
    return FailedPreconditionError(
        "EventStore::Append needs the caller's open transaction (run BEGIN first, COMMIT "
        "after), so the events commit or roll back with the caller's decision");
  }
  COURIER_RETURN_IF_ERROR(CheckAppend(expected_version, events));
  const std::string stream = stream_type + "/" + stream_id;
  auto current = CurrentVersion(db, table_, stream_type, stream_id);
  if (!current.ok()) return NotFoundHint(current.status(), table_);
  if (expected_version != kAny && *current != expected_version) {
    return AbortedError(ExpectedVersionMessage(stream, expected_version, *current));
  }
  auto insert = SqlitePrepare(db, "INSERT INTO " + QuoteIdent(table_) +
                                      " (stream_type, stream_id, version, event_id, event_type,"
                                      " payload, headers) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  if (!insert.ok()) return NotFoundHint(insert.status(), table_);
  // A savepoint, so that a refused append leaves the caller's earlier writes as they were.
  COURIER_RETURN_IF_ERROR(SqliteExec(db, "SAVEPOINT courier_append"));
  AppendResult out;
  sqlite3_stmt* s = insert->get();
  for (size_t i = 0; i < events.size(); ++i) {
    const NewEvent& e = events[i];
    const int64_t version = *current + static_cast<int64_t>(i) + 1;
    const std::string event_id = e.event_id.empty() ? NewUuidV7() : e.event_id;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    BindText(s, 1, stream_type);
    BindText(s, 2, stream_id);
    sqlite3_bind_int64(s, 3, version);
    BindText(s, 4, event_id);
    BindText(s, 5, e.event_type);
    BindText(s, 6, e.payload);
    if (!e.headers.empty()) BindText(s, 7, HeadersToJson(e.headers));
    const int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) {
      const std::string message = sqlite3_errmsg(db);
      Status st = SqliteError(db, rc, "append to stream " + stream);
      sqlite3_reset(s);
      (void)SqliteExec(db,
                       "ROLLBACK TO SAVEPOINT courier_append; RELEASE SAVEPOINT courier_append");
      if ((sqlite3_extended_errcode(db) == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT) &&
          message.find("event_id") != std::string::npos) {
        return InvalidArgumentError("append to stream " + stream +
                                    ": an event_id given is already in " + QuoteIdent(table_));
      }
      if (rc == SQLITE_CONSTRAINT) {
        auto now = CurrentVersion(db, table_, stream_type, stream_id);
        return AbortedError("stream " + stream + " is at version " +
                            (now.ok() ? std::to_string(*now) : std::string("?")) +
                            ": another writer appended version " + std::to_string(version) +
                            " first; re-read the stream and retry");
      }
      return st;
    }
    out.events.push_back({sqlite3_last_insert_rowid(db), version, event_id});
  }
  COURIER_RETURN_IF_ERROR(SqliteExec(db, "RELEASE SAVEPOINT courier_append"));
  out.version = out.events.back().version;
  return out;
}

Result<std::vector<RecordedEvent>> EventStore::ReadStream(sqlite3* db,
                                                          const std::string& stream_type,
                                                          const std::string& stream_id,
                                                          int64_t from_version,
                                                          size_t limit) const {
  auto stmt = SqlitePrepare(db, std::string("SELECT ") + kColumns + " FROM " + QuoteIdent(table_) +
                                    " WHERE stream_type = ?1 AND stream_id = ?2 AND version >= ?3"
                                    " ORDER BY version LIMIT ?4");
  if (!stmt.ok()) return NotFoundHint(stmt.status(), table_);
  BindText(stmt->get(), 1, stream_type);
  BindText(stmt->get(), 2, stream_id);
  sqlite3_bind_int64(stmt->get(), 3, from_version);
  sqlite3_bind_int64(stmt->get(), 4,
                     limit > static_cast<size_t>(INT64_MAX) ? -1 : static_cast<int64_t>(limit));
  return Rows(db, stmt->get());
}

Result<std::vector<RecordedEvent>> EventStore::ReadAll(sqlite3* db, int64_t after_position,
                                                       size_t limit) const {
  auto stmt = SqlitePrepare(db, std::string("SELECT ") + kColumns + " FROM " + QuoteIdent(table_) +
                                    " WHERE position > ?1 ORDER BY position LIMIT ?2");
  if (!stmt.ok()) return NotFoundHint(stmt.status(), table_);
  sqlite3_bind_int64(stmt->get(), 1, after_position);
  sqlite3_bind_int64(stmt->get(), 2,
                     limit > static_cast<size_t>(INT64_MAX) ? -1 : static_cast<int64_t>(limit));
  return Rows(db, stmt->get());
}

Status EventStore::SaveSnapshot(sqlite3* db, const std::string& stream_type,
                                const std::string& stream_id, int64_t version,
                                const std::string& state) const {
  if (version <= 0) return InvalidArgumentError("a snapshot's version is 1 or more");
  COURIER_ASSIGN_OR_RETURN(
      SqliteStmt stmt,
      SqlitePrepare(db, "INSERT INTO " + QuoteIdent(snapshots_) +
                            " (stream_type, stream_id, version, state) VALUES (?1, ?2, ?3, ?4)"
                            " ON CONFLICT (stream_type, stream_id, version) DO UPDATE"
                            " SET state = excluded.state"));
  BindText(stmt.get(), 1, stream_type);
  BindText(stmt.get(), 2, stream_id);
  sqlite3_bind_int64(stmt.get(), 3, version);
  BindText(stmt.get(), 4, state);
  const int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_DONE)
    return SqliteError(db, rc, "save snapshot of " + stream_type + "/" + stream_id);
  return Status::Ok();
}

Result<std::optional<Snapshot>> EventStore::LoadLatest(sqlite3* db, const std::string& stream_type,
                                                       const std::string& stream_id) const {
  COURIER_ASSIGN_OR_RETURN(
      SqliteStmt stmt, SqlitePrepare(db, "SELECT version, state FROM " + QuoteIdent(snapshots_) +
                                             " WHERE stream_type = ?1 AND stream_id = ?2"
                                             " ORDER BY version DESC LIMIT 1"));
  BindText(stmt.get(), 1, stream_type);
  BindText(stmt.get(), 2, stream_id);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return std::optional<Snapshot>();
  if (rc != SQLITE_ROW) return SqliteError(db, rc, "load snapshot");
  return std::optional<Snapshot>(
      Snapshot{sqlite3_column_int64(stmt.get(), 0), ColumnText(stmt.get(), 1)});
}

Result<LoadedStream> EventStore::Load(sqlite3* db, const std::string& stream_type,
                                      const std::string& stream_id) const {
  LoadedStream out;
  COURIER_ASSIGN_OR_RETURN(out.snapshot, LoadLatest(db, stream_type, stream_id));
  const int64_t after = out.snapshot ? out.snapshot->version : 0;
  COURIER_ASSIGN_OR_RETURN(out.events, ReadStream(db, stream_type, stream_id, after + 1));
  out.version = out.events.empty() ? after : out.events.back().version;
  return out;
}

// Shared with event_store.cc.

Result<RecordedEvent> ToRecorded(RawEventRow row) {
  RecordedEvent e;
  if (row.headers && !row.headers->empty() && *row.headers != "null") {
    auto headers = HeadersFromJson(*row.headers);
    if (headers.ok()) {
      e.headers = std::move(headers).value();
    } else {
      // A row written by plain SQL before the headers check (or on SQLite, which has none):
      // refusing it would stop every reader at it for good. Delivered without its headers,
      // and said so; the row itself stays as it is.
      log::Warn("event delivered without its headers, which are not a JSON object",
                {{"position", row.position},
                 {"event_id", row.event_id},
                 {"error", headers.status().message()}});
    }
  }
  e.position = row.position;
  e.stream_type = std::move(row.stream_type);
  e.stream_id = std::move(row.stream_id);
  e.version = row.version;
  e.event_id = std::move(row.event_id);
  e.event_type = std::move(row.event_type);
  e.payload = std::move(row.payload);
  e.created_at = std::move(row.created_at);
  return e;
}

Status CheckAppend(int64_t expected_version, const std::vector<NewEvent>& events) {
  if (events.empty()) return InvalidArgumentError("append: no events given");
  if (expected_version < kAny) {
    return InvalidArgumentError("append: expected version " + std::to_string(expected_version) +
                                " is neither a version, kNoStream (0) nor kAny (-1)");
  }
  for (const NewEvent& e : events) {
    for (const auto& [key, value] : e.headers) {
      // The envelope sets them from the row (docs/event-sourcing.md): the event's own would be
      // overwritten without a word.
      if (key == "version" || key == "position") {
        return InvalidArgumentError("append: header '" + key +
                                    "' is courier's (the envelope sets it from the row); name "
                                    "yours otherwise");
      }
    }
  }
  return Status::Ok();
}

std::string ExpectedVersionMessage(const std::string& stream, int64_t expected, int64_t current) {
  if (expected == kNoStream) {
    return "stream " + stream + " exists (at version " + std::to_string(current) +
           "), expected none: re-read it and retry";
  }
  return "stream " + stream + " is at version " + std::to_string(current) + ", not the expected " +
         std::to_string(expected) + ": re-read it and retry";
}

}  // namespace courier
