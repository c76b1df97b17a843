#include "stores/dead_letters.h"

#include <algorithm>

#include "core/encoding.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/url.h"
#include "sources/postgres_common.h"
#include "sources/row_codec.h"

namespace courier {
namespace {

constexpr const char* kMissing =
    " does not exist or predates per-outbox dead letters; upgrade it with: courier migrate"
    " --source ";

// Everything a DeadLetter holds, in this order, for both databases (payload and times differ).
std::string Columns(const std::string& payload, const std::string& created_us,
                    const std::string& failed_at) {
  return "id, coalesce(outbox_id, 0), CAST(event_id AS text), aggregate_type, aggregate_id,"
         " event_type, " +
         payload + ", CAST(headers AS text), " + created_us + ", status, error, sink, attempts, " +
         failed_at;
}

// Several outboxes may share one dead-letter table: every statement touches only the rows
// of its own outbox (the `outbox` column, see schema/migrate.cc), so that one outbox's parked
// events never hold back, release or republish another's.
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

class PostgresDeadLetters final : public DeadLetterStore {
 public:
  PostgresDeadLetters(PgConn conn, std::string table, const std::string& outbox, bool bytea,
                      std::string ready_filter)
      : ready_filter_(std::move(ready_filter)),
        conn_(std::move(conn)),
        table_(std::move(table)),
        mine_(OwnedBy(outbox)),
        select_("SELECT " +
                Columns(bytea ? "payload" : "CAST(payload AS text)", PgCreatedAtSql("created_at"),
                        "to_char(failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')") +
                " FROM " + table_ + " d WHERE " + mine_),
        bytea_(bytea) {}

  Result<std::vector<AggregateKey>> Blocking() override {
    COURIER_ASSIGN_OR_RETURN(
        PgResult res,
        PgExec(conn_.get(),
               "SELECT DISTINCT aggregate_type,"
               " aggregate_id FROM " +
                   table_ + " WHERE " + mine_ + " AND status IN ('parked', 'held', 'retry')"));
    std::vector<AggregateKey> out;
    for (int i = 0; i < PQntuples(res.get()); ++i) {
      out.emplace_back(PQgetvalue(res.get(), i, 0), PQgetvalue(res.get(), i, 1));
    }
    return out;
  }

  Result<std::vector<DeadLetter>> Ready(size_t max, bool park) override {
    return Rows(select_ + " AND status IN ('held', 'retry')" +
                    (ready_filter_.empty() ? "" : " AND " + ready_filter_) +
                    (park ? " AND NOT EXISTS (SELECT 1 FROM " + table_ +
                                " p WHERE p.outbox = d.outbox AND p.status = 'parked' AND"
                                " p.aggregate_type ="
                                " d.aggregate_type AND p.aggregate_id = d.aggregate_id AND"
                                " p.id < d.id)"
                          : "") +
                    " ORDER BY id LIMIT $1",
                {std::to_string(max)});
  }

  Status Resolve(std::span<const int64_t> published, std::span<const Rejected> failed) override {
    std::vector<int64_t> ids;
    std::string errors = "{", statuses = "{";
    for (const Rejected& r : failed) {
      ids.push_back(r.id);
      errors += (errors.size() > 1 ? "," : "") + ArrayItem(r.error);
      statuses += (statuses.size() > 1 ? "," : "") + ArrayItem(r.status);
    }
    errors += "}";
    statuses += "}";
    COURIER_RETURN_IF_ERROR(PgRun(conn_.get(), "BEGIN"));
    Status st = PgExec(conn_.get(),
                       "DELETE FROM " + table_ + " WHERE " + mine_ + " AND id = ANY($1::int8[])",
                       {IdArray(published)})
                    .status();
    if (st.ok() && !failed.empty()) {
      st = PgExec(conn_.get(),
                  "UPDATE " + table_ +
                      " d SET status = e.status, error = e.error, attempts = d.attempts + 1,"
                      " failed_at = now() FROM unnest($1::int8[], $2::text[], $3::text[]) AS"
                      " e(id, error, status) WHERE d.id = e.id AND d." +
                      mine_,
                  {IdArray(ids), errors, statuses})
               .status();
    }
    if (st.ok()) st = PgRun(conn_.get(), "COMMIT");
    if (!st.ok()) (void)PgRun(conn_.get(), "ROLLBACK");
    return st;
  }

  Result<std::vector<DeadLetter>> List(size_t limit) override {
    COURIER_ASSIGN_OR_RETURN(std::vector<DeadLetter> rows,
                             Rows(select_ + " ORDER BY id DESC LIMIT $1", {std::to_string(limit)}));
    std::reverse(rows.begin(), rows.end());
    return rows;
  }

  Result<std::vector<DeadLetter>> Find(std::span<const int64_t> ids) override {
    return Rows(select_ + " AND id = ANY($1::int8[]) ORDER BY id", {IdArray(ids)});
  }

  Result<std::vector<int64_t>> Retry(std::span<const int64_t> ids) override {
    return Ids("UPDATE " + table_ + " SET status = 'retry' WHERE " + mine_ +
                   " AND status IN ('parked', 'skipped')" +
                   (ids.empty() ? "" : " AND id = ANY($1::int8[])") + " RETURNING id",
               ids);
  }

  Result<std::vector<int64_t>> Drop(std::span<const int64_t> ids) override {
    return Ids("DELETE FROM " + table_ + " WHERE " + mine_ +
                   (ids.empty() ? "" : " AND id = ANY($1::int8[])") + " RETURNING id",
               ids);
  }

 private:
  static std::string ArrayItem(const std::string& text) {
    std::string out = "\"";
    for (char c : text) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"";
  }

  // The ids a statement returned, in id order.
  Result<std::vector<int64_t>> Ids(const std::string& sql, std::span<const int64_t> ids) {
    PgParams params;
    if (!ids.empty()) params.push_back(IdArray(ids));
    COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), sql, params));
    std::vector<int64_t> out;
    for (int i = 0; i < PQntuples(res.get()); ++i) {
      out.push_back(ParseInt64(PQgetvalue(res.get(), i, 0)).value_or(0));
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  Result<std::vector<DeadLetter>> Rows(const std::string& sql, const PgParams& params) {
    COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), sql, params));
    PGresult* r = res.get();
    std::vector<DeadLetter> out;
    for (int i = 0; i < PQntuples(r); ++i) {
      auto text = [&](int col) {
        return std::string(PQgetvalue(r, i, col), PQgetlength(r, i, col));
      };
      auto column = [&](int col) -> std::optional<std::string> {
        if (PQgetisnull(r, i, col)) return std::nullopt;
        return text(col);
      };
      DeadLetter d;
      std::optional<std::string> payload = column(6);
      if (bytea_ && payload) payload = UnescapeBytea(*payload);
      Decode(&d, ParseInt64(text(0)).value_or(0),
             {text(1), column(2), column(3), column(4), column(5), payload, column(7), column(8)});
      d.status = text(9);
      d.error = text(10);
      d.sink = text(11);
      d.attempts = ParseInt64(text(12)).value_or(0);
      d.failed_at = text(13);
      out.push_back(std::move(d));
    }
    return out;
  }

  std::string ready_filter_;
  PgConn conn_;
  std::string table_;
  std::string mine_;  // the condition "the dead letter is this outbox's"
  std::string select_;
  bool bytea_;
};

class SqliteDeadLetters final : public DeadLetterStore {
 public:
  SqliteDeadLetters(SqliteDb db, std::string table, const std::string& outbox)
      : db_(std::move(db)),
        table_(std::move(table)),
        mine_(OwnedBy(outbox)),
        select_("SELECT " +
                Columns("payload", SqliteCreatedAtSql("created_at"),
                        "strftime('%Y-%m-%dT%H:%M:%SZ', failed_at)") +
                " FROM " + table_ + " d WHERE " + mine_) {}

  Result<std::vector<AggregateKey>> Blocking() override {
    COURIER_ASSIGN_OR_RETURN(
        SqliteStmt s,
        SqlitePrepare(db_.get(), "SELECT DISTINCT aggregate_type, aggregate_id FROM " + table_ +
                                     " WHERE " + mine_ +
                                     " AND status IN ('parked', 'held', 'retry')"));
    std::vector<AggregateKey> out;
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      out.emplace_back(Text(s.get(), 0), Text(s.get(), 1));
    }
    if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, "read dead letters");
    return out;
  }

  Result<std::vector<DeadLetter>> Ready(size_t max, bool park) override {
    return Rows(select_ + " AND status IN ('held', 'retry')" +
                (park ? " AND NOT EXISTS (SELECT 1 FROM " + table_ +
                            " p WHERE p.outbox = d.outbox AND p.status = 'parked' AND"
                            " p.aggregate_type ="
                            " d.aggregate_type AND p.aggregate_id = d.aggregate_id AND"
                            " p.id < d.id)"
                      : "") +
                " ORDER BY id LIMIT " + std::to_string(max));
  }

  Status Resolve(std::span<const int64_t> published, std::span<const Rejected> failed) override {
    COURIER_RETURN_IF_ERROR(SqliteExec(db_.get(), "BEGIN IMMEDIATE"));
    Status st = published.empty()
                    ? Status::Ok()
                    : SqliteExec(db_.get(), "DELETE FROM " + table_ + " WHERE " + mine_ +
                                                " AND id IN " + IdList(published));
    if (st.ok() && !failed.empty()) {
      auto update = SqlitePrepare(db_.get(), "UPDATE " + table_ +
                                                 " SET status = ?2, error = ?3,"
                                                 " attempts = attempts + 1, failed_at ="
                                                 " strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
                                                 " WHERE id = ?1 AND " +
                                                 mine_);
      st = update.status();
      for (size_t i = 0; st.ok() && i < failed.size(); ++i) {
        sqlite3_stmt* s = update->get();
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, failed[i].id);
        sqlite3_bind_text(s, 2, failed[i].status.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, failed[i].error.c_str(), -1, SQLITE_TRANSIENT);
        const int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE) st = SqliteError(db_.get(), rc, "park dead letter");
      }
    }
    if (st.ok()) st = SqliteExec(db_.get(), "COMMIT");
    if (!st.ok()) (void)SqliteExec(db_.get(), "ROLLBACK");
    return st;
  }

  Result<std::vector<DeadLetter>> List(size_t limit) override {
    COURIER_ASSIGN_OR_RETURN(std::vector<DeadLetter> rows,
                             Rows(select_ + " ORDER BY id DESC LIMIT " + std::to_string(limit)));
    std::reverse(rows.begin(), rows.end());
    return rows;
  }

  Result<std::vector<DeadLetter>> Find(std::span<const int64_t> ids) override {
    if (ids.empty()) return std::vector<DeadLetter>{};
    return Rows(select_ + " AND id IN " + IdList(ids) + " ORDER BY id");
  }

  Result<std::vector<int64_t>> Retry(std::span<const int64_t> ids) override {
    return Ids("UPDATE " + table_ + " SET status = 'retry' WHERE " + mine_ +
               " AND status IN ('parked', 'skipped')" +
               (ids.empty() ? "" : " AND id IN " + IdList(ids)) + " RETURNING id");
  }

  Result<std::vector<int64_t>> Drop(std::span<const int64_t> ids) override {
    return Ids("DELETE FROM " + table_ + " WHERE " + mine_ +
               (ids.empty() ? "" : " AND id IN " + IdList(ids)) + " RETURNING id");
  }

 private:
  static std::string IdList(std::span<const int64_t> ids) {
    std::string out = "(";
    for (size_t i = 0; i < ids.size(); ++i) out += (i > 0 ? "," : "") + std::to_string(ids[i]);
    return out + ")";
  }

  static std::string Text(sqlite3_stmt* s, int col) {
    const void* data = sqlite3_column_blob(s, col);
    const int len = sqlite3_column_bytes(s, col);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), len);
  }

  static std::optional<std::string> Column(sqlite3_stmt* s, int col) {
    if (sqlite3_column_type(s, col) == SQLITE_NULL) return std::nullopt;
    return Text(s, col);
  }

  // The ids a statement returned (SQLite 3.35+ RETURNING), in id order.
  Result<std::vector<int64_t>> Ids(const std::string& sql) {
    COURIER_ASSIGN_OR_RETURN(SqliteStmt stmt, SqlitePrepare(db_.get(), sql));
    std::vector<int64_t> out;
    int rc;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
      out.push_back(sqlite3_column_int64(stmt.get(), 0));
    }
    if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, "update dead letters");
    std::sort(out.begin(), out.end());
    return out;
  }

  Result<std::vector<DeadLetter>> Rows(const std::string& sql) {
    COURIER_ASSIGN_OR_RETURN(SqliteStmt stmt, SqlitePrepare(db_.get(), sql));
    sqlite3_stmt* s = stmt.get();
    std::vector<DeadLetter> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      DeadLetter d;
      Decode(&d, sqlite3_column_int64(s, 0),
             {Text(s, 1), Column(s, 2), Column(s, 3), Column(s, 4), Column(s, 5), Column(s, 6),
              Column(s, 7), Column(s, 8)});
      d.status = Text(s, 9);
      d.error = Text(s, 10);
      d.sink = Text(s, 11);
      d.attempts = sqlite3_column_int64(s, 12);
      d.failed_at = Text(s, 13);
      out.push_back(std::move(d));
    }
    if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, "read dead letters");
    return out;
  }

  SqliteDb db_;
  std::string table_;
  std::string mine_;  // the condition "the dead letter is this outbox's"
  std::string select_;
};

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
    return std::unique_ptr<DeadLetterStore>(std::make_unique<PostgresDeadLetters>(
        std::move(conn), table, tables.outbox, bytea, ready_filter));
  }
  COURIER_ASSIGN_OR_RETURN(SqliteDb db, SqliteOpen(loc.target, /*create=*/false));
  auto check =
      SqlitePrepare(db.get(), "SELECT status, attempts, outbox FROM " + table + " LIMIT 0");
  if (!check.ok()) return NotFoundError("table " + table + kMissing + source_url);
  return std::unique_ptr<DeadLetterStore>(
      std::make_unique<SqliteDeadLetters>(std::move(db), table, tables.outbox));
}

}  // namespace courier
