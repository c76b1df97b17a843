// What the dead-letter store's per-database files share (stores/dead_letters_*.cc).
#pragma once

#include <memory>
#include <string>

#include "core/postgres.h"
#include "core/sqlite.h"
#include "sources/row_codec.h"
#include "stores/dead_letters.h"

namespace courier::dead_letters {

// The columns a parked event fills, in the order of the values the parking statements give.
inline constexpr const char* kParkColumns =
    " (outbox, outbox_id, event_id, aggregate_type, aggregate_id, event_type, payload, headers,"
    " created_at, error, sink, status)";

// Everything a DeadLetter holds, in this order, for both databases (payload and times differ).
std::string Columns(const std::string& payload, const std::string& created_us,
                    const std::string& failed_at);

// Several outboxes may share one dead-letter table: every statement touches only the rows
// of its own outbox (the `outbox` column, see schema/migrate.cc), so that one outbox's parked
// events never hold back, release or republish another's.
std::string OwnedBy(const std::string& outbox);

// The event of a dead letter through the row codec every source uses.
void Decode(DeadLetter* d, int64_t dead_letter_id, OutboxRow row);

std::unique_ptr<DeadLetterStore> MakePostgresStore(PgConn conn, std::string table,
                                                   const std::string& outbox, bool bytea,
                                                   std::string ready_filter);
std::unique_ptr<DeadLetterStore> MakeSqliteStore(SqliteDb db, std::string table,
                                                 const std::string& outbox);

}  // namespace courier::dead_letters
