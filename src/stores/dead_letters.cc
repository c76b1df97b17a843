#include "stores/dead_letters.h"

#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/url.h"
#include "sources/postgres_common.h"
#include "stores/dead_letters_internal.h"

namespace courier {
namespace dead_letters {

std::string Columns(const std::string& payload, const std::string& created_us,
                    const std::string& failed_at) {
  return "id, coalesce(outbox_id, 0), CAST(event_id AS text), aggregate_type, aggregate_id,"
         " event_type, " +
         payload + ", CAST(headers AS text), " + created_us + ", status, error, sink, attempts, " +
         failed_at;
}

std::string OwnedBy(const std::string& outbox) { return "outbox = " + QuoteLiteral(outbox); }

// The event of a dead letter through the row codec every source uses: a row that still
// cannot be an event (parked for a NULL column, say, and retried unfixed) is parked again.
// `row.id` is the outbox row's id; the event's id becomes the dead letter's.
// A CDC logical message has no outbox row (outbox_id 0 here): its problems are named after the
// dead letter instead.
void Decode(DeadLetter* d, int64_t dead_letter_id, OutboxRow row) {
  DecodedRow decoded = DecodeOutboxRow(row);
  d->event = std::move(decoded.event);
  d->event.id = dead_letter_id;
  d->decode_error = std::move(decoded.error);
  constexpr std::string_view kNoRow = "outbox row 0: ";
  if (d->decode_error.rfind(kNoRow, 0) == 0) {
    d->decode_error =
        "dead letter " + std::to_string(dead_letter_id) +
        " (a logical message, no outbox row): " + d->decode_error.substr(kNoRow.size());
  }
}

}  // namespace dead_letters

namespace {

constexpr const char* kMissing =
    " does not exist or predates per-outbox dead letters; upgrade it with: courier migrate"
    " --source ";

}  // namespace

Result<std::unique_ptr<DeadLetterStore>> DeadLetterStore::Open(const std::string& source_url,
                                                               const TableNames& tables,
                                                               const std::string& ready_filter) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(source_url));
  const std::string table = QuoteIdent(tables.dead_letter);
  if (loc.kind == SourceLocation::Kind::kPostgres) {
    COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(loc.target));
    COURIER_ASSIGN_OR_RETURN(
        PgResult res,
        PgExec(conn.get(),
               "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1)"
               " AND attname IN ('status', 'attempts', 'outbox') AND NOT attisdropped",
               {table}));
    if (std::string(PQgetvalue(res.get(), 0, 0)) != "3") {
      return NotFoundError("table " + table + kMissing + RedactUrl(source_url));
    }
    COURIER_ASSIGN_OR_RETURN(bool bytea, PayloadIsBytea(conn.get(), table));
    return std::unique_ptr<DeadLetterStore>(dead_letters::MakePostgresStore(
        std::move(conn), table, tables.outbox, bytea, ready_filter));
  }
  COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(loc.target, /*create=*/false));
  auto check =
      SqlitePrepare(db.get(), "SELECT status, attempts, outbox FROM " + table + " LIMIT 0");
  if (!check.ok()) return NotFoundError("table " + table + kMissing + source_url);
  return std::unique_ptr<DeadLetterStore>(
      dead_letters::MakeSqliteStore(std::move(db), table, tables.outbox));
}
}  // namespace courier
