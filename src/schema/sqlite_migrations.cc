// The SQLite migrations (schema/migrations.h). Each is idempotent, so that it adopts the
// tables an earlier courier made without recording anything. Append new ones; never edit one.
#include "core/sqlite.h"
#include "schema/migrations.h"

namespace courier {
namespace {

// A version-4 UUID from SQLite's own randomness, for rows inserted by plain SQL.
constexpr const char* kUuidV4 =
    "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||"
    " substr(lower(hex(randomblob(2))), 2) || '-' ||"
    " substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) ||"
    " '-' || lower(hex(randomblob(6))))";
constexpr const char* kNowText = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))";

// 1: the outbox and its index of pending rows.
Status Outbox(sqlite3* db, const TableNames& t) {
  // AUTOINCREMENT: ids are never reused, so a dead letter's outbox_id stays unambiguous.
  return SqliteExec(db, "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.outbox) +
                            " ("
                            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                            " event_id TEXT NOT NULL DEFAULT " +
                            kUuidV4 +
                            ","
                            " aggregate_type TEXT NOT NULL,"
                            " aggregate_id TEXT NOT NULL,"
                            " event_type TEXT NOT NULL,"
                            " payload BLOB,"
                            " headers TEXT,"
                            " created_at TEXT NOT NULL DEFAULT " +
                            kNowText +
                            ","
                            " published_at TEXT);"
                            "CREATE INDEX IF NOT EXISTS " +
                            QuoteIdent(BaseName(t.outbox) + "_pending") + " ON " +
                            QuoteIdent(BaseName(t.outbox)) + " (id) WHERE published_at IS NULL;");
}

// 2: the dead-letter table, and the columns earlier versions' tables lack.
Status DeadLetters(sqlite3* db, const TableNames& t) {
  const std::string dead = QuoteIdent(t.dead_letter);
  COURIER_RETURN_IF_ERROR(SqliteExec(db, "CREATE TABLE IF NOT EXISTS " + dead +
                                             " ("
                                             " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                             " outbox TEXT,"
                                             " outbox_id INTEGER NOT NULL,"
                                             " event_id TEXT NOT NULL,"
                                             " aggregate_type TEXT NOT NULL,"
                                             " aggregate_id TEXT NOT NULL,"
                                             " event_type TEXT NOT NULL,"
                                             " payload BLOB,"
                                             " headers TEXT,"
                                             " created_at TEXT NOT NULL,"
                                             " error TEXT NOT NULL,"
                                             " sink TEXT NOT NULL,"
                                             " failed_at TEXT NOT NULL DEFAULT " +
                                             kNowText +
                                             ","
                                             " status TEXT NOT NULL DEFAULT 'parked',"
                                             " attempts INTEGER NOT NULL DEFAULT 1);"));
  // Columns added since the first version. Dead letters of versions without a status did not
  // hold their aggregates back; the outbox as on PostgreSQL (schema/postgres_migrations.cc).
  for (const char* column : {"status TEXT NOT NULL DEFAULT 'skipped'",
                             "attempts INTEGER NOT NULL DEFAULT 1", "outbox TEXT"}) {
    const std::string name = std::string(column).substr(0, std::string(column).find(' '));
    COURIER_ASSIGN_OR_RETURN(SqliteStmt has,
                             SqlitePrepare(db, "SELECT 1 FROM pragma_table_info(" +
                                                   QuoteLiteral(BaseName(t.dead_letter)) +
                                                   ") WHERE name = '" + name + "'"));
    if (sqlite3_step(has.get()) != SQLITE_ROW) {
      COURIER_RETURN_IF_ERROR(SqliteExec(db, "ALTER TABLE " + dead + " ADD COLUMN " + column));
    }
  }
  // Rows without an outbox become this one's.
  return SqliteExec(db, "UPDATE " + dead + " SET outbox = " + QuoteLiteral(t.outbox) +
                            " WHERE outbox IS NULL;"
                            "DROP INDEX IF EXISTS " +
                            QuoteIdent(DerivedName(BaseName(t.dead_letter), "_aggregate")) +
                            ";"
                            "CREATE INDEX IF NOT EXISTS " +
                            QuoteIdent(DerivedName(BaseName(t.dead_letter), "_outbox_aggregate")) +
                            " ON " + QuoteIdent(BaseName(t.dead_letter)) +
                            " (outbox, aggregate_type, aggregate_id, id)");
}

// 3: the inbox and the events `courier consume` gave up on.
Status Inbox(sqlite3* db, const TableNames& t) {
  return SqliteExec(db, "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.inbox) +
                            " ("
                            " consumer TEXT NOT NULL,"
                            " event_id TEXT NOT NULL,"
                            " processed_at TEXT NOT NULL DEFAULT " +
                            kNowText +
                            ","
                            " PRIMARY KEY (consumer, event_id));"
                            "CREATE INDEX IF NOT EXISTS " +
                            QuoteIdent(BaseName(t.inbox) + "_processed") + " ON " +
                            QuoteIdent(BaseName(t.inbox)) +
                            " (consumer, processed_at);"
                            "CREATE TABLE IF NOT EXISTS " +
                            QuoteIdent(t.InboxParked()) +
                            " ("
                            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                            " consumer TEXT NOT NULL,"
                            " event_id TEXT NOT NULL,"
                            " event TEXT NOT NULL,"
                            " error TEXT NOT NULL,"
                            " attempts INTEGER NOT NULL,"
                            " parked_at TEXT NOT NULL DEFAULT " +
                            kNowText + ");");
}

// Event store 1 (schema/postgres_migrations.cc's EventStore): one writer at a time, so
// AUTOINCREMENT positions commit in order.
Status EventStore(sqlite3* db, const TableNames& t) {
  const std::string base = BaseName(t.outbox);
  return SqliteExec(db, "CREATE TABLE IF NOT EXISTS " + QuoteIdent(t.outbox) +
                            " ("
                            " position INTEGER PRIMARY KEY AUTOINCREMENT,"
                            " stream_type TEXT NOT NULL,"
                            " stream_id TEXT NOT NULL,"
                            " version INTEGER NOT NULL CHECK (version > 0),"
                            " event_id TEXT NOT NULL UNIQUE DEFAULT " +
                            kUuidV4 +
                            ","
                            " event_type TEXT NOT NULL,"
                            " payload TEXT NOT NULL,"
                            " headers TEXT,"
                            " created_at TEXT NOT NULL DEFAULT " +
                            kNowText +
                            ","
                            " published_at TEXT,"
                            " UNIQUE (stream_type, stream_id, version));"
                            "CREATE INDEX IF NOT EXISTS " +
                            QuoteIdent(DerivedName(base, "_unpublished")) + " ON " +
                            QuoteIdent(base) +
                            " (position) WHERE published_at IS NULL;"
                            "CREATE TABLE IF NOT EXISTS " +
                            QuoteIdent(t.Snapshots()) +
                            " ("
                            " stream_type TEXT NOT NULL,"
                            " stream_id TEXT NOT NULL,"
                            " version INTEGER NOT NULL,"
                            " state TEXT NOT NULL,"
                            " created_at TEXT NOT NULL DEFAULT " +
                            kNowText +
                            ","
                            " PRIMARY KEY (stream_type, stream_id, version));"
                            "CREATE TABLE IF NOT EXISTS " +
                            QuoteIdent(t.Projections()) +
                            " ("
                            " name TEXT PRIMARY KEY,"
                            " position INTEGER NOT NULL DEFAULT 0,"
                            " updated_at TEXT NOT NULL DEFAULT " +
                            kNowText + ");");
}

}  // namespace

std::vector<Migration> SqliteMigrations(sqlite3* db, const TableNames& t) {
  auto bind = [db, t](Status (*step)(sqlite3*, const TableNames&)) {
    return [db, t, step] { return step(db, t); };
  };
  if (t.event_store()) {
    return {
        {1, "event_store", {t.outbox, t.Snapshots(), t.Projections()}, bind(EventStore)},
        {2, "dead_letters", {t.dead_letter}, bind(DeadLetters)},
    };
  }
  return {
      {1, "outbox", {t.outbox}, bind(Outbox)},
      {2, "dead_letters", {t.dead_letter}, bind(DeadLetters)},
      {3, "inbox", {t.inbox, t.InboxParked()}, bind(Inbox)},
  };
}

}  // namespace courier
