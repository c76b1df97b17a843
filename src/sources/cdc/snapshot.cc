#include "sources/cdc/snapshot.h"

#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "core/log.h"

namespace courier::cdc {
namespace {

constexpr int kChunkRows = 1000;

std::string QuoteOne(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

std::string ChangeKey(const RowChange& change) {
  const auto& image = change.after ? change.after : change.before;
  std::string key;
  if (!image) return key;
  for (const std::string& k : change.key_columns) {
    for (const ColumnValue& c : *image) {
      if (c.name == k) key += c.json + '\x1f';
    }
  }
  return key;
}

Status Snapshot::Load(PGconn* conn, const TableNames& tables, const std::string& publication,
                      const std::vector<uint32_t>& captured) {
  pending_.clear();
  chunk_.reset();
  unsaved_.clear();
  table_names_capture_ = QuoteIdent(tables.CdcCapture());
  publication_ = publication;
  captured_ = captured;
  return ReadPending(conn);
}

Status Snapshot::Reload(PGconn* conn) {
  if (!done() || !unsaved_.empty()) return Status::Ok();
  return ReadPending(conn);
}

Status Snapshot::ReadPending(PGconn* conn) {
  pending_.clear();
  const std::string& publication = publication_;
  for (uint32_t oid : captured_) {
    COURIER_ASSIGN_OR_RETURN(
        PgResult row,
        PgExec(conn,
               "SELECT coalesce(c.snapshot_last_key::text, ''), c.snapshot_rows::text,"
               " n.nspname, r.relname,"
               " '',"
               " coalesce(array_to_string(pt.attnames, ','), ''), coalesce(pt.rowfilter, ''),"
               " coalesce(c.snapshot_where, ''), c.snapshot_request::text"
               " FROM " +
                   table_names_capture_ +
                   " c JOIN pg_class r ON r.oid = c.relation JOIN pg_namespace n ON n.oid ="
                   " r.relnamespace LEFT JOIN pg_publication_tables pt ON pt.pubname = $2 AND"
                   " pt.schemaname = n.nspname AND pt.tablename = r.relname"
                   " WHERE c.relation = $1::int8::oid AND c.snapshot_state <> 'done'",
               {std::to_string(oid), publication}));
    if (PQntuples(row.get()) == 0) continue;
    Table t;
    t.oid = oid;
    t.last_key = PQgetvalue(row.get(), 0, 0);
    t.rows = ParseInt64(PQgetvalue(row.get(), 0, 1)).value_or(0);
    t.schema = PQgetvalue(row.get(), 0, 2);
    t.table = PQgetvalue(row.get(), 0, 3);
    t.sql_name = QuoteOne(t.schema) + "." + QuoteOne(t.table);
    // The primary key's columns and types, in key order.
    COURIER_ASSIGN_OR_RETURN(
        PgResult key,
        PgExec(conn,
               "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i CROSS"
               " JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n) JOIN"
               " pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE"
               " i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.n",
               {std::to_string(oid)}));
    for (int i = 0; i < PQntuples(key.get()); ++i) {
      t.key_columns.push_back(PQgetvalue(key.get(), i, 0));
      t.key_types.push_back(PQgetvalue(key.get(), i, 1));
    }
    // The published columns and their types, in table order, as the stream's relation
    // messages list them (generated columns are not published).
    COURIER_ASSIGN_OR_RETURN(
        PgResult cols,
        PgExec(conn,
               "SELECT a.attname, a.atttypid::int8 FROM pg_attribute a WHERE a.attrelid ="
               " $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"
               " AND a.attname = ANY(coalesce((SELECT pt.attnames FROM pg_publication_tables pt"
               " WHERE pt.pubname = $2 AND pt.schemaname = $3 AND pt.tablename = $4),"
               " '{}'::name[])) ORDER BY a.attnum",
               {std::to_string(oid), publication, t.schema, t.table}));
    for (int i = 0; i < PQntuples(cols.get()); ++i) {
      t.columns.push_back(PQgetvalue(cols.get(), i, 0));
      t.column_types.push_back(
          static_cast<uint32_t>(ParseInt64(PQgetvalue(cols.get(), i, 1)).value_or(0)));
    }
    t.row_filter = PQgetvalue(row.get(), 0, 6);
    t.where = PQgetvalue(row.get(), 0, 7);
    t.request = ParseInt64(PQgetvalue(row.get(), 0, 8)).value_or(0);
    if (t.key_columns.empty() || t.columns.empty()) {
      log::Warn("captured table has no primary key: its existing rows are not snapshotted",
                {{"table", t.schema + "." + t.table}});
      continue;
    }
    pending_.push_back(std::move(t));
  }
  return Status::Ok();
}

Status Snapshot::Step(PGconn* conn) {
  if (chunk_ || pending_.empty()) return Status::Ok();
  Chunk chunk;
  chunk.token = std::to_string(UnixMicrosNow()) + "-" + std::to_string(++next_token_);
  const Table& t = pending_.front();
  auto mark = [&](const char* which) {
    const nlohmann::json j = {{"token", chunk.token}, {"mark", which}};
    return PgExec(conn, "SELECT pg_logical_emit_message(true, $1, $2)",
                  {kWatermarkPrefix, j.dump()})
        .status();
  };
  COURIER_RETURN_IF_ERROR(mark("low"));
  std::string keys, select, after, params;
  for (size_t i = 0; i < t.key_columns.size(); ++i) {
    const std::string k = "t." + QuoteOne(t.key_columns[i]);
    keys += (i ? ", " : "") + k;
    select += k + "::text, ";
    params +=
        std::string(i ? ", " : "") + "($1::jsonb->>" + std::to_string(i) + ")::" + t.key_types[i];
  }
  // Each value as its type's output function writes it (libpq's text format, as pgoutput's;
  // not a cast to text, which for bool says 'true' where the output function says 't'), under
  // the stream's session settings, rendered as the stream's are (RenderColumn): a row then
  // reads the same, and keys match, whichever way it came.
  for (const std::string& c : t.columns) select += "t." + QuoteOne(c) + ", ";
  select.resize(select.size() - 2);
  std::string where = t.last_key.empty() ? "true" : "(" + keys + ") > (" + params + ")";
  if (!t.row_filter.empty()) where += " AND (" + t.row_filter + ")";
  if (!t.where.empty()) where += " AND (" + t.where + ")";
  for (const char* setting : kValueSettings) COURIER_RETURN_IF_ERROR(PgRun(conn, setting));
  const std::string sql = "SELECT " + select + " FROM " + t.sql_name + " t WHERE " + where +
                          " ORDER BY " + keys + " LIMIT " + std::to_string(kChunkRows);
  COURIER_ASSIGN_OR_RETURN(
      PgResult rows, t.last_key.empty() ? PgExec(conn, sql) : PgExec(conn, sql, {t.last_key}));
  const int n = PQntuples(rows.get());
  const int nkeys = static_cast<int>(t.key_columns.size());
  for (int r = 0; r < n; ++r) {
    RowChange c;
    c.op = RowChange::Op::kRead;
    c.schema = t.schema;
    c.table = t.table;
    c.key_columns = t.key_columns;
    c.snapshot = true;
    std::vector<ColumnValue> image;
    for (size_t i = 0; i < t.columns.size(); ++i) {
      const int col = nkeys + static_cast<int>(i);
      image.push_back(
          {t.columns[i], PQgetisnull(rows.get(), r, col)
                             ? std::string("null")
                             : RenderColumn(t.column_types[i], PQgetvalue(rows.get(), r, col))});
    }
    c.after = std::move(image);
    if (r == n - 1) {
      nlohmann::json last = nlohmann::json::array();
      for (int i = 0; i < nkeys; ++i) last.push_back(PQgetvalue(rows.get(), r, i));
      chunk.last_key = last.dump();
    }
    chunk.rows.emplace(ChangeKey(c), std::move(c));
  }
  chunk.last = n < kChunkRows;
  if (chunk.last_key.empty()) chunk.last_key = t.last_key;
  COURIER_RETURN_IF_ERROR(mark("high"));
  chunk_ = std::move(chunk);
  return Status::Ok();
}

void Snapshot::Saw(const RowChange& change) {
  if (!chunk_ || !chunk_->low_seen) return;
  const Table& t = pending_[chunk_->table];
  if (change.schema != t.schema || change.table != t.table) return;
  if (change.op == RowChange::Op::kTruncate) {
    chunk_->rows.clear();
    return;
  }
  chunk_->rows.erase(ChangeKey(change));
  // An update of the key: the old key's row is stale too.
  if (change.before && change.after) {
    RowChange old = change;
    old.after.reset();
    chunk_->rows.erase(ChangeKey(old));
  }
}

void Snapshot::OnWatermark(const pgoutput::Message& m, uint64_t commit_lsn, int64_t commit_time_us,
                           std::vector<RowChange>* out) {
  if (!chunk_) return;
  const nlohmann::json j = nlohmann::json::parse(m.content, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("token", "") != chunk_->token) return;  // an older run's
  if (j.value("mark", "") == "low") {
    chunk_->low_seen = true;
    return;
  }
  if (!chunk_->low_seen) return;
  Table& t = pending_[chunk_->table];
  uint64_t position = 0;
  for (auto& [key, change] : chunk_->rows) {
    change.commit_lsn = commit_lsn;
    change.position = ++position;
    change.commit_time_us = commit_time_us;
    out->push_back(std::move(change));
  }
  t.rows += static_cast<int64_t>(position);
  t.last_key = chunk_->last_key;
  unsaved_[commit_lsn] =
      Progress{t.oid, t.request, t.last_key, t.rows, chunk_->last, position == 0};
  if (chunk_->last) {
    log::Info("snapshot of captured table done",
              {{"table", t.schema + "." + t.table}, {"rows", t.rows}});
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(chunk_->table));
  }
  chunk_.reset();
}

Status Snapshot::SaveEmpty(PGconn* conn) {
  pgoutput::Lsn through = 0;
  for (const auto& [lsn, p] : unsaved_) {
    if (!p.empty) break;
    through = lsn + 1;
  }
  return through == 0 ? Status::Ok() : Save(conn, through);
}

Status Snapshot::Save(PGconn* conn, pgoutput::Lsn lsn) {
  for (auto it = unsaved_.begin(); it != unsaved_.end() && it->first < lsn;) {
    const Progress& p = it->second;
    COURIER_RETURN_IF_ERROR(
        PgExec(conn,
               "UPDATE " + table_names_capture_ +
                   " SET snapshot_last_key = $2::jsonb, snapshot_rows = $3,"
                   " snapshot_state = $4 WHERE relation = $1::int8::oid"
                   // A backfill requested since starts the table over.
                   " AND snapshot_request = $5",
               {std::to_string(p.oid),
                p.last_key.empty() ? std::nullopt : PgParams::value_type(p.last_key),
                std::to_string(p.rows), p.done ? "done" : "running", std::to_string(p.request)})
            .status());
    it = unsaved_.erase(it);
  }
  return Status::Ok();
}

}  // namespace courier::cdc
