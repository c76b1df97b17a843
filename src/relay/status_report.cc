#include "relay/status_report.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "core/postgres.h"
#include "core/sqlite.h"

namespace courier {
namespace {

Result<OutboxStatus> PostgresStatus(const std::string& conninfo, const TableNames& t) {
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(conninfo));
  const std::string outbox = QuoteIdent(t.outbox);
  auto res = PgExec(
      conn.get(),
      "SELECT count(*) FILTER (WHERE published_at IS NULL),"
      " coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE published_at IS NULL)),"
      " 0)::float8, count(*) FILTER (WHERE published_at IS NOT NULL),"
      " (SELECT count(*) FROM " +
          QuoteIdent(t.dead_letter) +
          " WHERE outbox = $2),"
          // pg_locks is cluster-wide: another database's relay of an outbox of the same name
          // holds the same key.
          " EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND"
          "  database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND"
          "  objid = (hashtext($1)::bigint & 4294967295)::oid)"
          " FROM " +
          outbox +
          // An event store keeps every event: only the unpublished ones are counted (its
          // partial index), never a scan of the whole history.
          (t.event_store() ? " WHERE published_at IS NULL" : ""),
      {"courier relay " + t.outbox, t.outbox});
  if (!res.ok()) {
    if (res.status().code() == StatusCode::kNotFound) {
      return NotFoundError(t.event_store()
                               ? "event store tables missing; create them with: courier "
                                 "migrate --event-store --source URL"
                               : "outbox tables missing; create them with: courier "
                                 "migrate --source URL");
    }
    return res.status();
  }
  PGresult* r = res->get();
  OutboxStatus s;
  s.pending = std::stoll(PQgetvalue(r, 0, 0));
  s.oldest_pending_age_s = std::stod(PQgetvalue(r, 0, 1));
  s.published_retained = std::stoll(PQgetvalue(r, 0, 2));
  s.dead_letters = std::stoll(PQgetvalue(r, 0, 3));
  s.relay_active = std::string(PQgetvalue(r, 0, 4)) == "t";
  auto slots =
      PgExec(conn.get(),
             "SELECT r.slot_name, s.slot_name IS NOT NULL, coalesce(s.active, false),"
             " coalesce(s.confirmed_flush_lsn::text, ''),"
             " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::int8,"
             " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn), 0)::int8,"
             " coalesce(s.wal_status, '')"
             " FROM " +
                 QuoteIdent(t.CdcSlots()) +
                 " r LEFT JOIN pg_replication_slots s ON s.slot_name = r.slot_name ORDER BY 1");
  // Outboxes migrated before CDC existed have no slot table: no slots then.
  if (!slots.ok() && slots.status().code() != StatusCode::kNotFound) return slots.status();
  for (int i = 0; slots.ok() && i < PQntuples(slots->get()); ++i) {
    PGresult* q = slots->get();
    SlotStatus slot;
    slot.name = PQgetvalue(q, i, 0);
    slot.exists = std::string(PQgetvalue(q, i, 1)) == "t";
    slot.active = std::string(PQgetvalue(q, i, 2)) == "t";
    slot.confirmed_lsn = PQgetvalue(q, i, 3);
    slot.lag_bytes = std::stoll(PQgetvalue(q, i, 4));
    slot.retained_bytes = std::stoll(PQgetvalue(q, i, 5));
    slot.wal_status = PQgetvalue(q, i, 6);
    s.slots.push_back(std::move(slot));
  }
  auto captured = PgExec(conn.get(), "SELECT table_name, snapshot_state, snapshot_rows FROM " +
                                         QuoteIdent(t.CdcCapture()) + " ORDER BY 1");
  // Outboxes migrated before table capture existed have no such table: nothing captured then.
  if (!captured.ok() && captured.status().code() != StatusCode::kNotFound) {
    return captured.status();
  }
  for (int i = 0; captured.ok() && i < PQntuples(captured->get()); ++i) {
    s.captured.push_back({PQgetvalue(captured->get(), i, 0), PQgetvalue(captured->get(), i, 1),
                          std::stoll(PQgetvalue(captured->get(), i, 2))});
  }
  auto leases = PgExec(conn.get(),
                       "SELECT name, holder, epoch, expires_at > now(),"
                       " extract(epoch FROM now() - renewed_at)::float8,"
                       " extract(epoch FROM expires_at - now())::float8, published, per_second"
                       " FROM " +
                           QuoteIdent(t.Leases()) + " ORDER BY name");
  // Outboxes migrated before leases existed have no lease table: the relay asks to migrate.
  if (!leases.ok() && leases.status().code() != StatusCode::kNotFound) return leases.status();
  for (int i = 0; leases.ok() && i < PQntuples(leases->get()); ++i) {
    PGresult* q = leases->get();
    LeaseStatus l;
    l.name = PQgetvalue(q, i, 0);
    l.holder = PQgetvalue(q, i, 1);
    l.epoch = std::stoll(PQgetvalue(q, i, 2));
    l.live = std::string(PQgetvalue(q, i, 3)) == "t";
    l.renewed_ago_s = std::stod(PQgetvalue(q, i, 4));
    l.expires_in_s = std::stod(PQgetvalue(q, i, 5));
    l.published = std::stoll(PQgetvalue(q, i, 6));
    l.per_second = std::stod(PQgetvalue(q, i, 7));
    if (l.live) s.relay_active = true;
    s.leases.push_back(std::move(l));
  }
  if (t.event_store()) {
    COURIER_ASSIGN_OR_RETURN(std::vector<HorizonBlocker> writers,
                             TableWriters(conn.get(), t.outbox));
    for (HorizonBlocker& w : writers) {
      if (w.age_seconds > 1) s.horizon_waits_on.push_back(std::move(w));
    }
    COURIER_ASSIGN_OR_RETURN(s.projections, ReadProjectionStatus(conn.get(), t.outbox));
  }
  COURIER_ASSIGN_OR_RETURN(s.projection_offsets,
                           ReadProjectionOffsetStatus(conn.get(), "courier_projection_offsets"));
  return s;
}

Result<OutboxStatus> SqliteStatus(const std::string& path, const TableNames& t) {
  COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(path, /*create=*/false));
  auto stmt = SqlitePrepare(
      db.get(), "SELECT (SELECT count(*) FROM " + QuoteIdent(t.outbox) +
                    " WHERE published_at IS NULL),"
                    " coalesce((julianday('now') - (SELECT min(julianday(created_at)) FROM " +
                    QuoteIdent(t.outbox) +
                    " WHERE published_at IS NULL)) * 86400.0, 0),"
                    " (SELECT count(*) FROM " +
                    QuoteIdent(t.outbox) +
                    " WHERE published_at IS NOT NULL),"
                    " (SELECT count(*) FROM " +
                    QuoteIdent(t.dead_letter) + " WHERE outbox = " + QuoteLiteral(t.outbox) + ")");
  if (!stmt.ok()) {
    if (stmt.status().code() == StatusCode::kNotFound) {
      return NotFoundError("outbox tables missing; create them with: courier migrate --source URL");
    }
    return stmt.status();
  }
  OutboxStatus s;
  const int rc = sqlite3_step(stmt->get());
  if (rc != SQLITE_ROW) return SqliteError(db.get(), rc, "status");
  s.pending = sqlite3_column_int64(stmt->get(), 0);
  s.oldest_pending_age_s = sqlite3_column_double(stmt->get(), 1);
  s.published_retained = sqlite3_column_int64(stmt->get(), 2);
  s.dead_letters = sqlite3_column_int64(stmt->get(), 3);
  // The relay holds an flock on the lock file while active (sources/sqlite_poll.cc).
  const std::string lock_path = path + ".courier-relay.lock";
  const int fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (::flock(fd, LOCK_SH | LOCK_NB) != 0) s.relay_active = true;
    ::close(fd);
  }
  return s;
}

}  // namespace

Result<std::vector<ProjectionStatus>> ReadProjectionStatus(PGconn* conn,
                                                           const std::string& events_table) {
  auto rows =
      PgExec(conn,
             "SELECT p.name, p.position,"
             " greatest(coalesce((SELECT max(position) FROM " +
                 QuoteIdent(events_table) +
                 "), 0) - p.position, 0),"
                 " extract(epoch FROM now() - p.updated_at)::float8 FROM " +
                 QuoteIdent(DerivedName(events_table, "_projections")) + " p ORDER BY p.name");
  std::vector<ProjectionStatus> out;
  // Event stores migrated before projections existed have no such table: none then.
  if (!rows.ok() && rows.status().code() == StatusCode::kNotFound) return out;
  COURIER_RETURN_IF_ERROR(rows.status());
  PGresult* q = rows->get();
  for (int i = 0; i < PQntuples(q); ++i) {
    out.push_back({PQgetvalue(q, i, 0), std::stoll(PQgetvalue(q, i, 1)),
                   std::stoll(PQgetvalue(q, i, 2)), std::stod(PQgetvalue(q, i, 3))});
  }
  return out;
}

Result<std::vector<ProjectionOffsetStatus>> ReadProjectionOffsetStatus(
    PGconn* conn, const std::string& offsets_table) {
  auto rows = PgExec(conn, "SELECT name, topic, partition, next_offset FROM " +
                               QuoteIdent(offsets_table) + " ORDER BY name, topic, partition");
  std::vector<ProjectionOffsetStatus> out;
  // Made by the first Kafka-sourced projection: none before.
  if (!rows.ok() && rows.status().code() == StatusCode::kNotFound) return out;
  COURIER_RETURN_IF_ERROR(rows.status());
  PGresult* q = rows->get();
  for (int i = 0; i < PQntuples(q); ++i) {
    out.push_back({PQgetvalue(q, i, 0), PQgetvalue(q, i, 1), std::stoi(PQgetvalue(q, i, 2)),
                   std::stoll(PQgetvalue(q, i, 3))});
  }
  return out;
}

Result<OutboxStatus> ReadOutboxStatus(const std::string& source_url, const TableNames& tables) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(source_url));
  if (loc.kind == SourceLocation::Kind::kPostgres) return PostgresStatus(loc.target, tables);
  return SqliteStatus(loc.target, tables);
}

}  // namespace courier
