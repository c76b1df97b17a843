// The dead-letter store on PostgreSQL: parking (in the sources' checkpoint transactions),
// holding and release.
#include <algorithm>

#include "core/encoding.h"
#include "core/postgres.h"
#include "sources/postgres_common.h"
#include "stores/dead_letters_internal.h"
#include "stores/parking.h"

namespace courier {
namespace {

using dead_letters::Columns;
using dead_letters::Decode;
using dead_letters::OwnedBy;

// One element of a text[] literal: double-quoted with \ and " escaped.
std::string ArrayItem(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

// A dead letter's bytea payload, as decode($6, 'hex') reads it.
std::string Hex(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char ch : bytes) {
    out.push_back(kHex[ch >> 4]);
    out.push_back(kHex[ch & 0x0f]);
  }
  return out;
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
    // Every one: every one that failed. Held events never did; they go out next.
    return Ids("DELETE FROM " + table_ + " WHERE " + mine_ +
                   (ids.empty() ? " AND status <> '" + std::string(kHeld) + "'"
                                : " AND id = ANY($1::int8[])") +
                   " RETURNING id",
               ids);
  }

 private:
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

}  // namespace

PgOutboxParking::PgOutboxParking(const TableNames& tables)
    : sql_(
          "WITH e AS (SELECT * FROM unnest($1::int8[], $2::text[], $4::text[]) AS e(id, error,"
          " status)),"
          " moved AS (DELETE FROM " +
          QuoteIdent(tables.outbox) +
          " o USING e WHERE o.id = e.id"
          " RETURNING o.id, o.event_id, o.aggregate_type, o.aggregate_id, o.event_type,"
          " o.payload, o.headers, o.created_at, e.error, e.status)"
          " INSERT INTO " +
          QuoteIdent(tables.dead_letter) + dead_letters::kParkColumns +
          // A malformed row's NULLs become values the dead-letter table takes (the error
          // says which column was NULL).
          " SELECT " + QuoteLiteral(tables.outbox) +
          ", id, coalesce(event_id, '00000000-0000-0000-0000-000000000000'),"
          " coalesce(aggregate_type, ''), coalesce(aggregate_id, ''), coalesce(event_type, ''),"
          " payload, headers, coalesce(created_at, now()), error, $3, status FROM moved ORDER"
          " BY id") {}

Status PgOutboxParking::Park(PGconn* conn, std::span<const Rejected> rejected,
                             const std::string& sink) const {
  if (rejected.empty()) return Status::Ok();
  std::vector<int64_t> ids;
  std::string errors = "{", statuses = "{";
  for (const Rejected& r : rejected) {
    ids.push_back(r.id);
    errors += (errors.size() > 1 ? "," : "") + ArrayItem(r.error);
    statuses += (statuses.size() > 1 ? "," : "") + ArrayItem(r.status);
  }
  return PgExec(conn, sql_, {IdArray(ids), errors + "}", sink, statuses + "}"}).status();
}

Result<PgEventParking> PgEventParking::Prepare(PGconn* conn, const TableNames& tables) {
  COURIER_ASSIGN_OR_RETURN(PgResult res,
                           PgExec(conn,
                                  "SELECT (SELECT format_type(atttypid, atttypmod) FROM"
                                  " pg_attribute WHERE attrelid = $1::regclass AND"
                                  " attname = 'payload'),"
                                  " (SELECT format_type(atttypid, atttypmod) FROM"
                                  " pg_attribute WHERE attrelid = $1::regclass AND"
                                  " attname = 'headers')",
                                  {QuoteIdent(tables.dead_letter)}));
  const std::string payload = PQgetvalue(res.get(), 0, 0);
  PgEventParking p;
  p.bytea_ = payload == "bytea";
  p.sql_ = "INSERT INTO " + QuoteIdent(tables.dead_letter) + dead_letters::kParkColumns +
           " VALUES (" + QuoteLiteral(tables.outbox) + ", $1::int8, $2::uuid, $3, $4, $5, " +
           (p.bytea_ ? "decode($6, 'hex')" : "$6::" + payload) +
           ", $7::" + std::string(PQgetvalue(res.get(), 0, 1)) +
           ", to_timestamp($8::float8 / 1000000), $9, $10, $11)";
  return p;
}

Status PgEventParking::Park(PGconn* conn, const Event& e, int64_t row_id, const Rejected& r,
                            const std::string& sink) const {
  std::optional<std::string> payload;
  if (!e.payload.empty()) payload = bytea_ ? Hex(e.payload) : e.payload;
  PgParams params = {
      row_id > 0 ? std::optional<std::string>(std::to_string(row_id)) : std::nullopt, e.event_id,
      e.aggregate_type, e.aggregate_id, e.event_type, payload,
      e.headers.empty() ? std::nullopt : std::optional<std::string>(HeadersToJson(e.headers)),
      std::to_string(e.created_at_us),
      // It may quote the bytes that made the event unpublishable (a logical message's).
      StorableText(r.error), sink, r.status};
  return PgExec(conn, sql_, params).status();
}

namespace dead_letters {

std::unique_ptr<DeadLetterStore> MakePostgresStore(PgConn conn, std::string table,
                                                   const std::string& outbox, bool bytea,
                                                   std::string ready_filter) {
  return std::make_unique<PostgresDeadLetters>(std::move(conn), std::move(table), outbox, bytea,
                                               std::move(ready_filter));
}

}  // namespace dead_letters
}  // namespace courier
