#include "sources/cdc/capture_setup.h"

#include <cctype>
#include <set>

#include "core/encoding.h"
#include "core/log.h"

namespace courier::cdc {
namespace {

constexpr const char* kInsufficientPrivilege = "42501";
constexpr const char* kAllChanges = "insert, update, delete, truncate";

// The server's one-line message of a failed statement (without "ERROR:" and the statement's
// position), for the one-line refusals.
std::string Primary(PGconn* conn, const PGresult* res) {
  const char* primary = res != nullptr ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  return primary != nullptr ? primary : PgError(conn, res).message();
}

// One identifier quoted (QuoteIdent would split a name holding a dot).
std::string QuoteOne(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  return out + "\"";
}

// The table as SQL names it.
std::string SqlName(const CapturedTable& t) { return QuoteOne(t.schema) + "." + QuoteOne(t.table); }

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// The end of the quoted text starting at `at` (its closing quote; a doubled quote is one
// character of it), or npos.
size_t QuoteEnd(std::string_view s, size_t at) {
  const char q = s[at];
  for (size_t i = at + 1; i < s.size(); ++i) {
    if (s[i] != q) continue;
    if (i + 1 < s.size() && s[i + 1] == q) {
      ++i;
      continue;
    }
    return i;
  }
  return std::string_view::npos;
}

// The index of the parenthesis closing the one at `at`, quotes respected, or npos.
size_t ParenEnd(std::string_view s, size_t at) {
  int depth = 0;
  for (size_t i = at; i < s.size(); ++i) {
    if (s[i] == '\'' || s[i] == '"') {
      i = QuoteEnd(s, i);
      if (i == std::string_view::npos) return i;
    } else if (s[i] == '(') {
      ++depth;
    } else if (s[i] == ')' && --depth == 0) {
      return i;
    }
  }
  return std::string_view::npos;
}

Status BadEntry(const std::string& entry, const std::string& why) {
  return InvalidArgumentError("--capture '" + entry + "': " + why +
                              "; write TABLE [(COLUMN, ...)] [WHERE (CONDITION)], entries "
                              "separated by commas");
}

Result<CaptureSpec> ParseEntry(const std::string& entry) {
  CaptureSpec spec;
  spec.text = entry;
  std::string_view s = entry;
  size_t i = 0;
  while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i])) && s[i] != '(') {
    if (s[i] == '"') {
      i = QuoteEnd(s, i);
      if (i == std::string_view::npos) return BadEntry(entry, "unterminated quote");
    }
    ++i;
  }
  spec.table = std::string(s.substr(0, i));
  if (spec.table.empty()) return BadEntry(entry, "no table named");
  std::string rest = Trim(s.substr(i));
  if (!rest.empty() && rest[0] == '(') {
    const size_t end = ParenEnd(rest, 0);
    if (end == std::string::npos) return BadEntry(entry, "unbalanced parentheses");
    spec.columns = rest.substr(0, end + 1);
    rest = Trim(std::string_view(rest).substr(end + 1));
  }
  if (!rest.empty()) {
    std::string head = rest.substr(0, 5);
    for (char& c : head) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (head != "WHERE" ||
        (rest.size() > 5 && rest[5] != '(' && !std::isspace(static_cast<unsigned char>(rest[5])))) {
      return BadEntry(entry, "unexpected '" + rest + "'");
    }
    const std::string condition = Trim(std::string_view(rest).substr(5));
    if (condition.empty()) return BadEntry(entry, "WHERE without a condition");
    if (ParenEnd("(" + condition + ")", 0) != condition.size() + 1) {
      return BadEntry(entry, "unbalanced parentheses or quotes in the condition");
    }
    // PostgreSQL requires the condition in parentheses.
    spec.where = "(" + condition + ")";
  }
  return spec;
}

// A table's identity as the catalog has it.
struct TableInfo {
  CapturedTable table;
  char kind = 'r';
  char identity = 'd';
  bool has_primary_key = false;
  bool has_identity_index = false;
  std::vector<std::string> toastable;  // columns whose values may be TOASTed
};

// kNotFound when the table does not exist.
Result<TableInfo> LookUp(PGconn* conn, const CaptureSpec& spec) {
  COURIER_ASSIGN_OR_RETURN(
      PgResult res,
      PgExec(conn,
             "SELECT c.oid::int8::text, n.nspname, c.relname, '', c.relkind,"
             " c.relreplident,"
             " EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),"
             " EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),"
             " coalesce((SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a"
             " WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND"
             " a.attstorage <> 'p'), '')"
             " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
             " WHERE c.oid = to_regclass($1)",
             {spec.table}));
  if (PQntuples(res.get()) == 0) {
    return NotFoundError("--capture " + spec.table + ": table " + spec.table + " does not exist");
  }
  TableInfo info;
  info.table.oid = static_cast<uint32_t>(ParseInt64(PQgetvalue(res.get(), 0, 0)).value_or(0));
  info.table.schema = PQgetvalue(res.get(), 0, 1);
  info.table.table = PQgetvalue(res.get(), 0, 2);
  info.table.qualified = info.table.schema + "." + info.table.table;
  info.table.spec = spec;
  info.kind = PQgetvalue(res.get(), 0, 4)[0];
  info.identity = PQgetvalue(res.get(), 0, 5)[0];
  info.has_primary_key = std::string(PQgetvalue(res.get(), 0, 6)) == "t";
  info.has_identity_index = std::string(PQgetvalue(res.get(), 0, 7)) == "t";
  const std::string toastable = PQgetvalue(res.get(), 0, 8);
  for (size_t b = 0; b < toastable.size();) {
    const size_t e = std::min(toastable.find(',', b), toastable.size());
    info.toastable.push_back(toastable.substr(b, e - b));
    b = e + 1;
  }
  return info;
}

// Courier's own tables beside the outbox, by OID.
Result<std::set<uint32_t>> OwnTables(PGconn* conn, const TableNames& t) {
  const std::vector<std::string> names = {
      t.outbox,        t.dead_letter,   t.CdcSlots(),
      t.CdcBackfill(), t.CdcCapture(),  t.Leases(),
      t.inbox,         t.InboxParked(), DerivedName(t.outbox, "_schema")};
  std::set<uint32_t> oids;
  for (const std::string& name : names) {
    COURIER_ASSIGN_OR_RETURN(
        PgResult res, PgExec(conn, "SELECT to_regclass($1)::oid::int8::text", {QuoteIdent(name)}));
    if (!PQgetisnull(res.get(), 0, 0)) {
      oids.insert(static_cast<uint32_t>(ParseInt64(PQgetvalue(res.get(), 0, 0)).value_or(0)));
    }
  }
  return oids;
}

// The checks that need only the catalog.
Status CheckTable(const TableInfo& info, const std::set<uint32_t>& own) {
  const std::string& name = info.table.qualified;
  const std::string flag = "--capture " + info.table.spec.table + ": ";
  if (own.count(info.table.oid) > 0) {
    return InvalidArgumentError(flag + "table " + name +
                                " is courier's own (the outbox's events are published already, "
                                "its bookkeeping is not for consumers); capture the "
                                "application's tables");
  }
  if (info.kind == 'p') {
    // Its changes are logged under its partitions, not under it.
    return InvalidArgumentError(flag + name +
                                " is a partitioned table, whose changes PostgreSQL logs under "
                                "its partitions; capture the partitions instead");
  }
  if (info.kind != 'r') {
    return InvalidArgumentError(flag + name + " is not a table; capture the tables it reads");
  }
  // The event names the table `schema.table` (aggregate_type), and keyed sinks put it in their
  // keys (`PREFIX:table:key`): a '.' or ':' in a name would let two tables share a name there,
  // and a delete or truncate of one reach the other's rows.
  for (const std::string* part : {&info.table.schema, &info.table.table}) {
    if (part->find_first_of(".:") != std::string::npos) {
      return InvalidArgumentError(
          flag + "table " + name +
          " has a '.' or ':' in its name, which would make its events' aggregate_type (and the "
          "keys of cache and search-index sinks) ambiguous with another table's; rename it");
    }
  }
  if (info.identity == 'n') {
    return InvalidArgumentError(flag + "table " + name +
                                " has REPLICA IDENTITY NOTHING, so its updates and deletes "
                                "cannot be captured; run ALTER TABLE " +
                                name + " REPLICA IDENTITY FULL (or DEFAULT, with a primary key)");
  }
  const bool keyed = (info.identity == 'd' && info.has_primary_key) ||
                     (info.identity == 'i' && info.has_identity_index) || info.identity == 'f';
  if (!keyed) {
    return InvalidArgumentError(flag + "table " + name +
                                " has no primary key; add a primary key or run ALTER TABLE " +
                                name + " REPLICA IDENTITY FULL");
  }
  return Status::Ok();
}

// Adds `t` to `publication` inside the caller's transaction (`replace`: re-adds it, when it
// is there with another row filter or column list; else a member is left as it is), then
// checks what PostgreSQL 15 would otherwise only refuse when the application updates or
// deletes a row: a row filter or column list must stay within the replica identity. True
// when the publication changed.
Result<bool> AddToPublication(PGconn* conn, const std::string& publication, const CapturedTable& t,
                              bool replace) {
  const std::string flag = "--capture " + t.spec.text + ": ";
  const std::string pub = QuoteIdent(publication);
  const std::string member_sql =
      "SELECT coalesce(pr.prqual::text, ''), coalesce(pr.prattrs::text, '') FROM"
      " pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid"
      " WHERE p.pubname = $1 AND pr.prrelid = $2::int8::oid";
  const PgParams member_params = {publication, std::to_string(t.oid)};
  COURIER_ASSIGN_OR_RETURN(PgResult before, PgExec(conn, member_sql, member_params));
  const bool member = PQntuples(before.get()) == 1;
  if (member && !replace) return false;
  if (member) {
    COURIER_RETURN_IF_ERROR(PgRun(conn, "ALTER PUBLICATION " + pub + " DROP TABLE " + SqlName(t)));
  }
  const std::string add = "ALTER PUBLICATION " + pub + " ADD TABLE " + SqlName(t) +
                          (t.spec.columns.empty() ? "" : " " + t.spec.columns) +
                          (t.spec.where.empty() ? "" : " WHERE " + t.spec.where);
  PgResult added(PQexec(conn, add.c_str()));
  if (PQresultStatus(added.get()) != PGRES_COMMAND_OK) {
    const std::string why = Primary(conn, added.get());
    if (PgSqlState(added.get()) == kInsufficientPrivilege) {
      return InvalidArgumentError(flag + "this role may not publish " + t.qualified + " (" + why +
                                  "); run courier migrate --capture as the owner of the table");
    }
    // A condition or column list PostgreSQL refuses (syntax, unknown column, a function it
    // does not allow in row filters).
    if (PQstatus(conn) == CONNECTION_BAD) return PgError(conn, added.get());
    return InvalidArgumentError(flag + why);
  }
  COURIER_ASSIGN_OR_RETURN(
      PgResult check,
      PgExec(conn,
             "WITH rel AS (SELECT oid, relreplident FROM pg_class WHERE oid = $2::int8::oid),"
             " ident AS (SELECT a.attnum, a.attname FROM rel JOIN pg_attribute a ON"
             " a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped WHERE"
             " rel.relreplident = 'f' OR a.attnum = ANY ((SELECT i.indkey::int2[] FROM"
             " pg_index i WHERE i.indrelid = rel.oid AND ((rel.relreplident = 'd' AND"
             " i.indisprimary) OR (rel.relreplident = 'i' AND i.indisreplident)))::int2[])),"
             " pr AS (SELECT r.* FROM pg_publication_rel r JOIN pg_publication p ON p.oid ="
             " r.prpubid WHERE p.pubname = $1 AND r.prrelid = $2::int8::oid)"
             " SELECT (SELECT rel.relreplident FROM rel),"
             " coalesce((SELECT string_agg(DISTINCT a.attname, ', ') FROM pr,"
             " regexp_matches(pr.prqual::text, ':varattno (\\d+)', 'g') m JOIN pg_attribute a"
             " ON a.attrelid = $2::int8::oid AND a.attnum = m[1]::int2 WHERE a.attnum NOT IN"
             " (SELECT attnum FROM ident)), ''),"
             " coalesce((SELECT string_agg(i.attname, ', ' ORDER BY i.attnum) FROM ident i, pr"
             " WHERE pr.prattrs IS NOT NULL AND NOT i.attnum = ANY (pr.prattrs::int2[])), ''),"
             " coalesce((SELECT string_agg(attname, ', ' ORDER BY attnum) FROM ident), '')",
             member_params));
  const bool full = PQgetvalue(check.get(), 0, 0)[0] == 'f';
  const std::string outside_filter = PQgetvalue(check.get(), 0, 1);
  const std::string left_out = PQgetvalue(check.get(), 0, 2);
  const std::string identity = PQgetvalue(check.get(), 0, 3);
  if (!outside_filter.empty()) {
    return InvalidArgumentError(
        flag + "the row filter uses " + outside_filter + ", not part of the replica identity (" +
        identity + ") of " + t.qualified +
        ": PostgreSQL would then refuse the application's UPDATEs and DELETEs of the table; "
        "filter on those columns only, or run ALTER TABLE " +
        t.qualified + " REPLICA IDENTITY FULL");
  }
  if (!left_out.empty()) {
    return InvalidArgumentError(
        flag + "the column list leaves out " + left_out + ", part of the replica identity (" +
        (full ? std::string("REPLICA IDENTITY FULL: every column") : identity) + ") of " +
        t.qualified +
        ": PostgreSQL would then refuse the application's UPDATEs and DELETEs of the table; "
        "list those columns too");
  }
  COURIER_ASSIGN_OR_RETURN(PgResult after, PgExec(conn, member_sql, member_params));
  return !member || std::string(PQgetvalue(before.get(), 0, 0)) != PQgetvalue(after.get(), 0, 0) ||
         std::string(PQgetvalue(before.get(), 0, 1)) != PQgetvalue(after.get(), 0, 1);
}

// Resolves and checks every spec; in kRelay mode a missing table is left out.
Result<std::vector<CapturedTable>> Resolve(PGconn* conn, const TableNames& tables,
                                           const std::vector<CaptureSpec>& specs, CaptureSetup mode,
                                           bool warn) {
  COURIER_ASSIGN_OR_RETURN(std::set<uint32_t> own, OwnTables(conn, tables));
  std::vector<CapturedTable> out;
  std::set<uint32_t> seen;
  for (const CaptureSpec& spec : specs) {
    Result<TableInfo> info = LookUp(conn, spec);
    if (!info.ok() && info.status().code() == StatusCode::kNotFound &&
        mode == CaptureSetup::kRelay) {
      log::Warn("a captured table does not exist (dropped or renamed); its capture ends",
                {{"table", spec.table}});
      continue;
    }
    if (!info.ok()) return InvalidArgumentError(info.status().message());
    COURIER_RETURN_IF_ERROR(CheckTable(*info, own));
    if (!seen.insert(info->table.oid).second) {
      return InvalidArgumentError("--capture " + spec.table + ": table " + info->table.qualified +
                                  " is listed twice");
    }
    if (warn && info->identity != 'f' && !info->toastable.empty()) {
      std::string columns;
      for (const std::string& c : info->toastable) columns += (columns.empty() ? "" : ",") + c;
      log::Warn(
          "captured table has TOASTable columns and is not REPLICA IDENTITY FULL: an UPDATE "
          "that leaves a large value unchanged cannot carry it (the event lists it under "
          "\"unavailable\"); ALTER TABLE ... REPLICA IDENTITY FULL carries it whole",
          {{"table", info->table.qualified}, {"columns", columns}});
    }
    out.push_back(std::move(info->table));
  }
  return out;
}

// Adds every table to `publication` (created when missing) in the caller's transaction.
Result<bool> AddAll(PGconn* conn, const std::string& publication,
                    const std::vector<CapturedTable>& captured, bool replace) {
  COURIER_ASSIGN_OR_RETURN(
      PgResult pub,
      PgExec(conn,
             "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate FROM pg_publication"
             " WHERE pubname = $1",
             {publication}));
  bool changed = false;
  const std::string name = QuoteIdent(publication);
  std::string sql;
  if (PQntuples(pub.get()) == 0) {
    sql = "CREATE PUBLICATION " + name + " WITH (publish = '" + kAllChanges + "')";
  } else if (std::string(PQgetvalue(pub.get(), 0, 0)) != "t") {
    sql = "ALTER PUBLICATION " + name + " SET (publish = '" + kAllChanges + "')";
  }
  if (!sql.empty()) {
    PgResult res(PQexec(conn, sql.c_str()));
    if (PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
      if (PgSqlState(res.get()) != kInsufficientPrivilege) return PgError(conn, res.get());
      return InvalidArgumentError("--capture: this role may not publish table changes (" +
                                  Primary(conn, res.get()) +
                                  "); run courier migrate --capture as the owner of the tables "
                                  "and of the database");
    }
    changed = true;
  }
  for (const CapturedTable& t : captured) {
    COURIER_ASSIGN_OR_RETURN(const bool added, AddToPublication(conn, publication, t, replace));
    changed = changed || added;
  }
  return changed;
}

}  // namespace

Result<std::vector<CaptureSpec>> ParseCaptureList(const std::vector<std::string>& values) {
  std::vector<CaptureSpec> specs;
  for (const std::string& value : values) {
    std::string_view s = value;
    size_t start = 0;
    int depth = 0;
    for (size_t i = 0; i <= s.size(); ++i) {
      if (i < s.size() && (s[i] == '\'' || s[i] == '"')) {
        const size_t end = QuoteEnd(s, i);
        if (end == std::string_view::npos) {
          return BadEntry(std::string(s.substr(start)), "unterminated quote");
        }
        i = end;
        continue;
      }
      if (i < s.size() && s[i] == '(') ++depth;
      if (i < s.size() && s[i] == ')') --depth;
      if (i < s.size() && (s[i] != ',' || depth > 0)) continue;
      const std::string entry = Trim(s.substr(start, i - start));
      start = i + 1;
      if (entry.empty()) {
        return BadEntry(value, "an empty entry (no table between two commas, or none at all)");
      }
      COURIER_ASSIGN_OR_RETURN(CaptureSpec spec, ParseEntry(entry));
      specs.push_back(std::move(spec));
    }
  }
  return specs;
}

Status CheckCapture(PGconn* conn, const TableNames& tables, const std::vector<CaptureSpec>& specs) {
  COURIER_ASSIGN_OR_RETURN(std::vector<CapturedTable> captured,
                           Resolve(conn, tables, specs, CaptureSetup::kMigrate, /*warn=*/false));
  // Row filters and column lists are checked on a publication of their own, never committed.
  COURIER_RETURN_IF_ERROR(PgRun(conn, "BEGIN"));
  Result<bool> added = AddAll(conn, "courier_capture_check", captured, /*replace=*/true);
  (void)PgRun(conn, "ROLLBACK");
  return added.status();
}

Result<std::vector<CapturedTable>> PrepareCapture(PGconn* conn, const TableNames& tables,
                                                  const std::string& publication,
                                                  const std::vector<CaptureSpec>& specs,
                                                  CaptureSetup mode) {
  COURIER_ASSIGN_OR_RETURN(std::vector<CapturedTable> captured,
                           Resolve(conn, tables, specs, mode, /*warn=*/true));
  if (captured.empty()) return captured;
  // The relay leaves tables already published as they are (their row filters and column
  // lists are migrate's), and changes nothing, not even the bookkeeping, when nothing is
  // missing: its role need not own anything then.
  const bool relay = mode == CaptureSetup::kRelay;
  COURIER_RETURN_IF_ERROR(PgRun(conn, "BEGIN"));
  Result<bool> changed = AddAll(conn, publication, captured, /*replace=*/!relay);
  Status st = changed.status();
  if (st.ok() && relay && !*changed) {
    COURIER_RETURN_IF_ERROR(PgRun(conn, "ROLLBACK"));
    return captured;
  }
  for (size_t i = 0; st.ok() && i < captured.size(); ++i) {
    const CapturedTable& t = captured[i];
    st = PgExec(conn,
                "INSERT INTO " + QuoteIdent(tables.CdcCapture()) +
                    " (table_name, relation, spec) VALUES ($1, $2::int8::oid, $3)"
                    " ON CONFLICT (table_name) DO UPDATE SET relation = excluded.relation,"
                    " spec = excluded.spec",
                {t.schema + "." + t.table, std::to_string(t.oid), t.spec.text})
             .status();
  }
  if (st.ok()) st = PgRun(conn, "COMMIT");
  if (!st.ok()) {
    (void)PgRun(conn, "ROLLBACK");
    return st;
  }
  if (*changed) {
    std::string names;
    for (const CapturedTable& t : captured) names += (names.empty() ? "" : ", ") + t.qualified;
    log::Info("publication captures tables", {{"publication", publication}, {"tables", names}});
  }
  return captured;
}

}  // namespace courier::cdc
