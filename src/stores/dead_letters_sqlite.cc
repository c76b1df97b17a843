// The dead-letter store on SQLite: parking (in the source's checkpoint transaction), holding
// and release.
#include <algorithm>

#include "core/postgres.h"  // QuoteIdent, QuoteLiteral: the same quoting rules apply
#include "core/sqlite.h"
#include "stores/dead_letters_internal.h"
#include "stores/parking.h"

namespace courier {
namespace {

using dead_letters::Columns;
using dead_letters::Decode;
using dead_letters::OwnedBy;

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
    // Every one: every one that failed. Held events never did; they go out next.
    return Ids("DELETE FROM " + table_ + " WHERE " + mine_ +
               (ids.empty() ? " AND status <> '" + std::string(kHeld) + "'"
                            : " AND id IN " + IdList(ids)) +
               " RETURNING id");
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

Result<SqliteOutboxParking> SqliteOutboxParking::Prepare(sqlite3* db, const TableNames& tables) {
  const std::string outbox = QuoteIdent(tables.outbox);
  SqliteOutboxParking p;
  COURIER_ASSIGN_OR_RETURN(
      p.insert_,
      SqlitePrepare(db, "INSERT INTO " + QuoteIdent(tables.dead_letter) +
                            dead_letters::kParkColumns +
                            // A malformed row's NULLs become values the table takes (the
                            // error says which column was NULL).
                            " SELECT " + QuoteLiteral(tables.outbox) +
                            ", id, coalesce(event_id, '00000000-0000-0000-0000-000000000000'),"
                            " coalesce(aggregate_type, ''), coalesce(aggregate_id, ''),"
                            " coalesce(event_type, ''), payload, headers,"
                            " coalesce(created_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
                            " ?2, ?3, ?4 FROM " +
                            outbox + " WHERE id = ?1"));
  COURIER_ASSIGN_OR_RETURN(p.delete_,
                           SqlitePrepare(db, "DELETE FROM " + outbox + " WHERE id = ?1"));
  return p;
}

Status SqliteOutboxParking::Park(sqlite3* db, std::span<const Rejected> rejected,
                                 const std::string& sink) const {
  for (const Rejected& r : rejected) {
    for (sqlite3_stmt* s : {insert_.get(), delete_.get()}) {
      sqlite3_reset(s);
      sqlite3_bind_int64(s, 1, r.id);
      if (s == insert_.get()) {
        sqlite3_bind_text(s, 2, r.error.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, sink.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 4, r.status.c_str(), -1, SQLITE_TRANSIENT);
      }
      const int rc = sqlite3_step(s);
      sqlite3_reset(s);
      if (rc != SQLITE_DONE) return SqliteError(db, rc, "dead letter");
    }
  }
  return Status::Ok();
}

namespace dead_letters {

std::unique_ptr<DeadLetterStore> MakeSqliteStore(SqliteDb db, std::string table,
                                                 const std::string& outbox) {
  return std::make_unique<SqliteDeadLetters>(std::move(db), std::move(table), outbox);
}

}  // namespace dead_letters
}  // namespace courier
