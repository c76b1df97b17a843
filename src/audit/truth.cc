// The audit's truth readers (audit/truth.h): keyset pages of 10 000 rows, so the table is never
// held whole by the client library; the rows are decoded into events by the relay's own row
// codec (sources/row_codec.h) when they are to be published again.
#include "audit/truth.h"

#include <algorithm>
#include <optional>
#include <set>

#include "core/encoding.h"
#include "core/postgres.h"
#include "core/sqlite.h"
#include "core/url.h"
#include "sources/postgres_common.h"
#include "sources/row_codec.h"

namespace courier {
namespace {

constexpr int kPage = 10000;
// Event ids per lookup query (SQLite allows 32 766 parameters since 3.32, 999 before).
constexpr size_t kLookupBatch = 900;

// The events of decoded rows, or the first row that cannot be one (it could not have been
// published either).
Result<std::vector<Event>> EventsOf(FetchedBatch batch) {
  if (!batch.malformed.empty()) {
    return InvalidArgumentError("cannot publish again: " + batch.malformed.front().error);
  }
  return std::move(batch.events);
}

// The table's columns against the ones the audit reads: an event store audited as an outbox
// (or the reverse), or --table naming some other table, is said in one line, not as the
// database's "column ... does not exist".
Status CheckColumns(const std::set<std::string>& have, const AuditOptions& options) {
  const bool store = options.tables.event_store();
  const std::vector<std::string> outbox = {"id",           "event_id",   "aggregate_type",
                                           "aggregate_id", "event_type", "published_at",
                                           "created_at"};
  const std::vector<std::string> events = {"position",   "event_id", "stream_type",  "stream_id",
                                           "event_type", "version",  "published_at", "created_at"};
  auto lacks = [&have](const std::vector<std::string>& needed) {
    std::string missing;
    for (const std::string& c : needed) {
      if (have.count(c) == 0) missing += (missing.empty() ? "" : ", ") + c;
    }
    return missing;
  };
  const std::string missing = lacks(store ? events : outbox);
  if (missing.empty()) return Status::Ok();
  const std::string table = "table " + QuoteIdent(options.tables.outbox);
  if (!store && lacks(events).empty()) {
    return InvalidArgumentError(table + " is an event store: audit it with --event-store");
  }
  if (store && lacks(outbox).empty()) {
    return InvalidArgumentError(table + " is an outbox: audit it without --event-store");
  }
  return InvalidArgumentError(table + " is not " + (store ? "an event store" : "an outbox") +
                              " (it has no column " + missing + "); --table names the " +
                              (store ? "event store" : "outbox") + " the relay publishes");
}

class PostgresTruth final : public TruthReader {
 public:
  PostgresTruth(const AuditOptions& o, std::string conninfo)
      : options_(o), conninfo_(std::move(conninfo)) {}

  Status Open() {
    COURIER_ASSIGN_OR_RETURN(conn_, PgConnect(conninfo_));
    const std::string table = QuoteIdent(options_.tables.outbox);
    COURIER_ASSIGN_OR_RETURN(PgResult exists,
                             PgExec(conn_.get(), "SELECT to_regclass($1) IS NOT NULL", {table}));
    if (std::string(PQgetvalue(exists.get(), 0, 0)) != "t") {
      return NotFoundError("table " + table + " does not exist in " +
                           RedactUrl(options_.source_url) + "; create it with: courier migrate " +
                           (options_.tables.event_store() ? "--event-store " : "") + "--source " +
                           RedactUrl(options_.source_url));
    }
    COURIER_ASSIGN_OR_RETURN(
        PgResult columns,
        PgExec(conn_.get(),
               "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0"
               " AND NOT attisdropped",
               {table}));
    std::set<std::string> have;
    for (int i = 0; i < PQntuples(columns.get()); ++i) have.insert(PQgetvalue(columns.get(), i, 0));
    COURIER_RETURN_IF_ERROR(CheckColumns(have, options_));
    COURIER_ASSIGN_OR_RETURN(
        PgResult now,
        PgExec(conn_.get(), "SELECT (extract(epoch FROM now()) * 1000000)::int8", {}));
    opened_at_us_ = ParseInt64(PQgetvalue(now.get(), 0, 0)).value_or(0);
    if (!options_.since.empty()) {
      auto since =
          PgExec(conn_.get(), "SELECT (extract(epoch FROM $1::timestamptz) * 1000000)::int8",
                 {options_.since});
      // The server's message runs over several lines; what it refused is the time.
      if (!since.ok() && since.status().code() == StatusCode::kInvalidArgument) {
        return InvalidArgumentError("--since '" + options_.since +
                                    "' is no time PostgreSQL reads (e.g. '2026-11-27 "
                                    "04:00:00+00')");
      }
      if (!since.ok()) return since.status();
      since_us_ = ParseInt64(PQgetvalue(since->get(), 0, 0)).value_or(0);
    }
    return Status::Ok();
  }

  Status ForEach(const std::function<void(const TruthEvent&)>& each) override {
    const bool store = options_.tables.event_store();
    const std::string key = store ? "position" : "id";
    const std::string sql = "SELECT " + key + ", event_id::text, " +
                            (store ? "stream_type, stream_id, event_type, version"
                                   : "aggregate_type, aggregate_id, event_type, id") +
                            ", published_at IS NOT NULL, " + UnixMicrosSql("created_at") +
                            " FROM " + QuoteIdent(options_.tables.outbox) + " WHERE " + key +
                            " > $1 ORDER BY " + key + " LIMIT " + std::to_string(kPage);
    int64_t after = std::numeric_limits<int64_t>::min();
    while (true) {
      COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), sql, {std::to_string(after)}));
      PGresult* r = res.get();
      const int rows = PQntuples(r);
      for (int i = 0; i < rows; ++i) {
        TruthEvent t{PQgetvalue(r, i, 1),
                     PQgetvalue(r, i, 2),
                     PQgetvalue(r, i, 3),
                     PQgetvalue(r, i, 4),
                     ParseInt64(PQgetvalue(r, i, 5)).value_or(0),
                     std::string(PQgetvalue(r, i, 6)) == "t",
                     ParseInt64(PQgetvalue(r, i, 7)).value_or(0)};
        each(t);
        after = ParseInt64(PQgetvalue(r, i, 0)).value_or(after);
      }
      if (rows < kPage) return Status::Ok();
    }
  }

  Result<std::vector<Event>> Events(const std::vector<std::string>& event_ids) override {
    const bool store = options_.tables.event_store();
    const std::string table = QuoteIdent(options_.tables.outbox);
    // The columns the relay's sources read (sources/postgres_poll.cc, event_store_poll.cc).
    COURIER_ASSIGN_OR_RETURN(const bool bytea, PayloadIsBytea(conn_.get(), table));
    const std::string sql =
        store ? "SELECT position, event_id::text, stream_type, stream_id, event_type,"
                " payload::text, headers::text, " +
                    PgCreatedAtSql("o.created_at") + ", version FROM " + table +
                    " o WHERE event_id::text = ANY($1::text[]) ORDER BY position"
              : "SELECT id, event_id::text, aggregate_type, aggregate_id, event_type, payload" +
                    std::string(bytea ? "" : "::text") + ", headers::text, " +
                    PgCreatedAtSql("o.created_at") + " FROM " + table +
                    " o WHERE event_id::text = ANY($1::text[]) ORDER BY id";
    std::vector<std::optional<std::string>> ids(event_ids.begin(), event_ids.end());
    COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), sql, {PgTextArray(ids)}));
    PGresult* r = res.get();
    FetchedBatch batch;
    for (int i = 0; i < PQntuples(r); ++i) {
      auto column = [r, i](int col) -> std::optional<std::string> {
        if (PQgetisnull(r, i, col)) return std::nullopt;
        return std::string(PQgetvalue(r, i, col), PQgetlength(r, i, col));
      };
      OutboxRow row{column(0), column(1), column(2), column(3),
                    column(4), column(5), column(6), column(7)};
      if (bytea && !store && row.payload) row.payload = UnescapeBytea(*row.payload);
      COURIER_RETURN_IF_ERROR(store ? AddEventStoreRow(row, column(8), &batch)
                                    : AddOutboxRow(row, &batch));
    }
    return EventsOf(std::move(batch));
  }

  Result<std::set<std::string>> Present(const std::vector<std::string>& event_ids) override {
    const std::string sql = "SELECT event_id::text FROM " + QuoteIdent(options_.tables.outbox) +
                            " WHERE event_id::text = ANY($1::text[])";
    std::set<std::string> found;
    for (size_t start = 0; start < event_ids.size(); start += kLookupBatch) {
      const size_t end = std::min(event_ids.size(), start + kLookupBatch);
      std::vector<std::optional<std::string>> ids(event_ids.begin() + start,
                                                  event_ids.begin() + end);
      COURIER_ASSIGN_OR_RETURN(PgResult res, PgExec(conn_.get(), sql, {PgTextArray(ids)}));
      for (int i = 0; i < PQntuples(res.get()); ++i) found.insert(PQgetvalue(res.get(), i, 0));
    }
    return found;
  }

  int64_t since_us() const override { return since_us_; }
  int64_t opened_at_us() const override { return opened_at_us_; }
  std::string Describe() const override {
    return options_.tables.outbox + " in " + RedactUrl(options_.source_url);
  }

 private:
  AuditOptions options_;
  std::string conninfo_;
  PgConn conn_;
  int64_t since_us_ = 0;
  int64_t opened_at_us_ = 0;
};

std::optional<std::string> Column(sqlite3_stmt* s, int col) {
  if (sqlite3_column_type(s, col) == SQLITE_NULL) return std::nullopt;
  const void* data = sqlite3_column_blob(s, col);
  const int len = sqlite3_column_bytes(s, col);
  return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), len);
}

class SqliteTruth final : public TruthReader {
 public:
  SqliteTruth(const AuditOptions& o, std::string path) : options_(o), path_(std::move(path)) {}

  Status Open() {
    COURIER_ASSIGN_OR_RETURN(db_, SqliteOpen(path_, /*create=*/false));
    COURIER_ASSIGN_OR_RETURN(
        SqliteStmt check,
        SqlitePrepare(db_.get(), "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1"));
    sqlite3_bind_text(check.get(), 1, options_.tables.outbox.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(check.get()) != SQLITE_ROW) {
      return NotFoundError("table " + QuoteIdent(options_.tables.outbox) + " does not exist in " +
                           RedactUrl(options_.source_url) +
                           "; create it with: courier migrate --source " +
                           RedactUrl(options_.source_url));
    }
    COURIER_ASSIGN_OR_RETURN(SqliteStmt columns,
                             SqlitePrepare(db_.get(), "SELECT name FROM pragma_table_info(?1)"));
    sqlite3_bind_text(columns.get(), 1, options_.tables.outbox.c_str(), -1, SQLITE_TRANSIENT);
    std::set<std::string> have;
    while (sqlite3_step(columns.get()) == SQLITE_ROW) {
      have.insert(Column(columns.get(), 0).value_or(""));
    }
    COURIER_RETURN_IF_ERROR(CheckColumns(have, options_));
    COURIER_ASSIGN_OR_RETURN(
        SqliteStmt now,
        SqlitePrepare(db_.get(),
                      "SELECT CAST(round((julianday('now') - 2440587.5) * 86400000000.0) AS "
                      "INTEGER)"));
    if (sqlite3_step(now.get()) == SQLITE_ROW) opened_at_us_ = sqlite3_column_int64(now.get(), 0);
    if (!options_.since.empty()) {
      COURIER_ASSIGN_OR_RETURN(
          SqliteStmt since,
          SqlitePrepare(db_.get(),
                        "SELECT CAST(round((julianday(?1) - 2440587.5) * 86400000000.0) AS "
                        "INTEGER)"));
      sqlite3_bind_text(since.get(), 1, options_.since.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(since.get()) != SQLITE_ROW ||
          sqlite3_column_type(since.get(), 0) == SQLITE_NULL) {
        return InvalidArgumentError("--since '" + options_.since +
                                    "' is no time SQLite reads (e.g. '2026-11-27 04:00:00')");
      }
      since_us_ = sqlite3_column_int64(since.get(), 0);
    }
    return Status::Ok();
  }

  Status ForEach(const std::function<void(const TruthEvent&)>& each) override {
    COURIER_ASSIGN_OR_RETURN(
        SqliteStmt page,
        SqlitePrepare(db_.get(),
                      "SELECT id, event_id, aggregate_type, aggregate_id, event_type,"
                      " published_at IS NOT NULL, " +
                          SqliteCreatedAtSql("created_at") + " FROM " +
                          QuoteIdent(options_.tables.outbox) + " WHERE id > ?1 ORDER BY id LIMIT " +
                          std::to_string(kPage)));
    int64_t after = std::numeric_limits<int64_t>::min();
    while (true) {
      sqlite3_reset(page.get());
      sqlite3_bind_int64(page.get(), 1, after);
      int rows = 0;
      int rc;
      while ((rc = sqlite3_step(page.get())) == SQLITE_ROW) {
        ++rows;
        after = sqlite3_column_int64(page.get(), 0);
        TruthEvent t{Column(page.get(), 1).value_or(""),
                     Column(page.get(), 2).value_or(""),
                     Column(page.get(), 3).value_or(""),
                     Column(page.get(), 4).value_or(""),
                     after,
                     sqlite3_column_int(page.get(), 5) != 0,
                     ParseInt64(Column(page.get(), 6).value_or("")).value_or(0)};
        each(t);
      }
      if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, "reading the outbox");
      if (rows < kPage) return Status::Ok();
    }
  }

  Result<std::vector<Event>> Events(const std::vector<std::string>& event_ids) override {
    COURIER_ASSIGN_OR_RETURN(
        SqliteStmt one,
        SqlitePrepare(db_.get(),
                      "SELECT id, event_id, aggregate_type, aggregate_id, event_type,"
                      " payload, headers, " +
                          SqliteCreatedAtSql("created_at") + " FROM " +
                          QuoteIdent(options_.tables.outbox) + " WHERE event_id = ?1"));
    FetchedBatch batch;
    for (const std::string& id : event_ids) {
      sqlite3_reset(one.get());
      sqlite3_bind_text(one.get(), 1, id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_stmt* s = one.get();
      if (sqlite3_step(s) != SQLITE_ROW) continue;
      OutboxRow row{Column(s, 0), Column(s, 1), Column(s, 2), Column(s, 3),
                    Column(s, 4), Column(s, 5), Column(s, 6), Column(s, 7)};
      COURIER_RETURN_IF_ERROR(AddOutboxRow(row, &batch));
    }
    std::sort(batch.events.begin(), batch.events.end(),
              [](const Event& a, const Event& b) { return a.row_id < b.row_id; });
    return EventsOf(std::move(batch));
  }

  Result<std::set<std::string>> Present(const std::vector<std::string>& event_ids) override {
    std::set<std::string> found;
    for (size_t start = 0; start < event_ids.size(); start += kLookupBatch) {
      const size_t end = std::min(event_ids.size(), start + kLookupBatch);
      std::string params;
      for (size_t i = start; i < end; ++i) params += (i == start ? "?" : ", ?");
      COURIER_ASSIGN_OR_RETURN(
          SqliteStmt stmt,
          SqlitePrepare(db_.get(), "SELECT event_id FROM " + QuoteIdent(options_.tables.outbox) +
                                       " WHERE event_id IN (" + params + ")"));
      for (size_t i = start; i < end; ++i) {
        sqlite3_bind_text(stmt.get(), static_cast<int>(i - start + 1), event_ids[i].c_str(), -1,
                          SQLITE_TRANSIENT);
      }
      int rc;
      while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
        found.insert(Column(stmt.get(), 0).value_or(""));
      }
      if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, "looking event ids up");
    }
    return found;
  }

  int64_t since_us() const override { return since_us_; }
  int64_t opened_at_us() const override { return opened_at_us_; }
  std::string Describe() const override {
    return options_.tables.outbox + " in " + RedactUrl(options_.source_url);
  }

 private:
  AuditOptions options_;
  std::string path_;
  SqliteDb db_;
  int64_t since_us_ = 0;
  int64_t opened_at_us_ = 0;
};

}  // namespace

Result<std::unique_ptr<TruthReader>> OpenTruth(const AuditOptions& options) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation where, ParseSourceUrl(options.source_url));
  if (where.kind == SourceLocation::Kind::kSqlite) {
    if (options.tables.event_store()) {
      return InvalidArgumentError(
          "--event-store: the relay publishes event stores from "
          "PostgreSQL; a SQLite source is audited as a retained outbox");
    }
    auto truth = std::make_unique<SqliteTruth>(options, where.target);
    COURIER_RETURN_IF_ERROR(truth->Open());
    return std::unique_ptr<TruthReader>(std::move(truth));
  }
  auto truth = std::make_unique<PostgresTruth>(options, where.target);
  COURIER_RETURN_IF_ERROR(truth->Open());
  return std::unique_ptr<TruthReader>(std::move(truth));
}

}  // namespace courier
