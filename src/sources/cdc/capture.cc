#include "sources/cdc/capture.h"

#include <algorithm>
#include <optional>

namespace courier::cdc {
namespace {

using Kind = pgoutput::Value::Kind;

std::string Render(const pgoutput::Column& column, const pgoutput::Value& value) {
  return value.kind == Kind::kText ? RenderColumn(column.type_oid, value.text) : "null";
}

// The image of `values` (a tuple as the server sent it); `keys_only`: only the columns the
// relation flags as key (an old key tuple holds nulls for the others). A value the tuple does
// not carry (unchanged TOAST) is left out.
std::vector<ColumnValue> Image(const pgoutput::Relation& r,
                               const std::vector<pgoutput::Value>& values, bool keys_only) {
  std::vector<ColumnValue> out;
  const size_t n = std::min(values.size(), r.columns.size());
  for (size_t i = 0; i < n; ++i) {
    if (keys_only && !r.columns[i].key) continue;
    if (values[i].kind == Kind::kUnchangedToast) continue;
    out.push_back({r.columns[i].name, Render(r.columns[i], values[i])});
  }
  return out;
}

// The values of `keys` in `image`, or nullopt when it lacks one of them.
std::optional<std::vector<std::string>> KeyOf(const std::vector<std::string>& keys,
                                              const std::vector<ColumnValue>& image) {
  std::vector<std::string> out;
  for (const std::string& k : keys) {
    auto v =
        std::find_if(image.begin(), image.end(), [&](const ColumnValue& c) { return c.name == k; });
    if (v == image.end()) return std::nullopt;
    out.push_back(v->json);
  }
  return out;
}

}  // namespace

void TableCapture::SetTables(std::set<uint32_t> oids) {
  tables_ = std::move(oids);
  relations_.clear();
}

Status TableCapture::OnRelation(const pgoutput::Relation& relation, PGconn* conn) {
  if (tables_.count(relation.id) == 0) return Status::Ok();
  Relation r{relation, {}};
  if (conn != nullptr) {
    // The primary key, in key order.
    COURIER_ASSIGN_OR_RETURN(
        PgResult res,
        PgExec(conn,
               "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[])"
               " WITH ORDINALITY k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid AND"
               " a.attnum = k.attnum WHERE i.indrelid = $1::int8::oid AND i.indisprimary"
               " ORDER BY k.n",
               {std::to_string(relation.id)}));
    for (int i = 0; i < PQntuples(res.get()); ++i) {
      r.key_columns.push_back(PQgetvalue(res.get(), i, 0));
    }
  }
  // The stream's shape may lag the catalog (a key column renamed since): then, and without a
  // primary key (a dropped table too), the columns pgoutput flags.
  auto in_relation = [&](const std::string& name) {
    return std::any_of(relation.columns.begin(), relation.columns.end(),
                       [&](const pgoutput::Column& c) { return c.name == name; });
  };
  r.primary_key = !r.key_columns.empty();
  if (r.key_columns.empty() ||
      !std::all_of(r.key_columns.begin(), r.key_columns.end(), in_relation)) {
    r.key_columns.clear();
    r.primary_key = false;
    for (const pgoutput::Column& c : relation.columns) {
      if (c.key) r.key_columns.push_back(c.name);
    }
  }
  // Replaces the shape known so far (a column added, dropped, renamed or retyped).
  relations_[relation.id] = std::move(r);
  return Status::Ok();
}

void TableCapture::Begin(const pgoutput::Message& begin) {
  commit_lsn_ = begin.final_lsn;
  xid_ = begin.xid;
  commit_time_us_ = begin.commit_time_us;
  position_ = 0;
}

RowChange TableCapture::Start(const Relation& r, RowChange::Op op) {
  RowChange c;
  c.op = op;
  c.schema = r.relation.schema;
  c.table = r.relation.name;
  c.key_columns = r.key_columns;
  c.commit_lsn = commit_lsn_;
  c.position = ++position_;
  c.xid = xid_;
  c.commit_time_us = commit_time_us_;
  return c;
}

void TableCapture::OnChange(const pgoutput::Message& m, std::vector<RowChange>* out) {
  using MKind = pgoutput::Message::Kind;
  if (m.kind == MKind::kTruncate) {
    for (uint32_t id : m.relation_ids) {
      auto it = relations_.find(id);
      if (it != relations_.end()) out->push_back(Start(it->second, RowChange::Op::kTruncate));
    }
    return;
  }
  auto it = relations_.find(m.relation_id);
  if (it == relations_.end()) return;
  const pgoutput::Relation& rel = it->second.relation;
  switch (m.kind) {
    case MKind::kInsert: {
      RowChange c = Start(it->second, RowChange::Op::kInsert);
      c.after = Image(rel, m.values, /*keys_only=*/false);
      out->push_back(std::move(c));
      return;
    }
    case MKind::kUpdate: {
      RowChange c = Start(it->second, RowChange::Op::kUpdate);
      const bool old_row = m.old_kind == 'O';
      std::vector<ColumnValue> after;
      const size_t n = std::min(m.values.size(), rel.columns.size());
      for (size_t i = 0; i < n; ++i) {
        const pgoutput::Value& v = m.values[i];
        if (v.kind != Kind::kUnchangedToast) {
          after.push_back({rel.columns[i].name, Render(rel.columns[i], v)});
        } else if (old_row && i < m.old_values.size() &&
                   m.old_values[i].kind != Kind::kUnchangedToast) {
          // Unchanged, and the old row (REPLICA IDENTITY FULL) has it whole.
          after.push_back({rel.columns[i].name, Render(rel.columns[i], m.old_values[i])});
        } else {
          c.unavailable.push_back(rel.columns[i].name);
        }
      }
      if (old_row) {
        c.before = Image(rel, m.old_values, /*keys_only=*/false);
      } else if (m.old_kind == 'K') {
        c.before = Image(rel, m.old_values, /*keys_only=*/true);
      } else {
        // The key did not change: the old key is the new one.
        c.before = Image(rel, m.values, /*keys_only=*/true);
      }
      c.after = std::move(after);
      // An update of the primary key is, for every keyed consumer (a cache, a search index,
      // a compacted topic), the end of one row and the start of another: a delete of the old
      // key, then an insert of the new one, as Debezium does. One update event under the new
      // key would leave the old key's row alive downstream.
      const auto old_key = KeyOf(c.key_columns, *c.before);
      const auto new_key = KeyOf(c.key_columns, *c.after);
      // (Only for a primary key: without one, every column of a REPLICA IDENTITY FULL table
      // keys the row, and every update would be split.)
      if (it->second.primary_key && old_key && new_key && *old_key != *new_key) {
        RowChange gone = c;
        gone.op = RowChange::Op::kDelete;
        gone.after.reset();
        gone.unavailable.clear();
        out->push_back(std::move(gone));
        RowChange born = Start(it->second, RowChange::Op::kInsert);
        born.after = std::move(c.after);
        born.unavailable = std::move(c.unavailable);
        c = std::move(born);
      }
      out->push_back(std::move(c));
      return;
    }
    case MKind::kDelete: {
      RowChange c = Start(it->second, RowChange::Op::kDelete);
      c.before = Image(rel, m.old_values, /*keys_only=*/m.old_kind != 'O');
      out->push_back(std::move(c));
      return;
    }
    default:
      return;
  }
}

}  // namespace courier::cdc
