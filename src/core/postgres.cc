#include "core/postgres.h"

#include <poll.h>

#include <cstring>

#include "core/log.h"
#include "core/url.h"

namespace courier {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// libpq's messages may repeat the password (a bad percent-escape, say): hide it, as written
// and as decoded.
std::string Scrubbed(PGconn* conn, std::string message) {
  const char* password = conn != nullptr ? PQpass(conn) : nullptr;
  if (password == nullptr || *password == '\0') return message;
  return ScrubSecrets(std::move(message), {password});
}

}  // namespace

Result<PgConn> PgConnect(const std::string& url, bool replication) {
  // libpq splits a URL whose password holds an unencoded '/', '?', '@' or '#' in surprising
  // places and echoes the pieces in its errors: such a URL is refused before libpq sees it,
  // with how to write it.
  if (url.find("://") != std::string::npos) {
    if (auto parsed = ParseUrl(url); !parsed.ok()) {
      return InvalidArgumentError("bad PostgreSQL URL: " + parsed.status().message());
    }
  }
  // Later keywords override what the URL (expanded from dbname) sets.
  const char* keys[] = {"connect_timeout", "application_name", "dbname",
                        replication ? "replication" : nullptr, nullptr};
  const char* values[] = {"10", "courier", url.c_str(), "database", nullptr};
  PgConn conn(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
  if (conn == nullptr) return InternalError("libpq could not allocate a connection");
  // Server notices ("already exists, skipping") are for debugging, not for stderr.
  PQsetNoticeProcessor(
      conn.get(),
      [](void*, const char* message) {
        std::string m = message;
        while (!m.empty() && m.back() == '\n') m.pop_back();
        log::Debug("postgres notice", {{"message", m}});
      },
      nullptr);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    std::string err =
        ScrubSecrets(Scrubbed(conn.get(), Trim(PQerrorMessage(conn.get()))), UrlSecrets(url));
    if (err.find("invalid") != std::string::npos && err.find("URI") != std::string::npos) {
      return InvalidArgumentError("bad PostgreSQL URL " + RedactUrl(url) + ": " + err +
                                  " (percent-encode reserved characters in the user, password "
                                  "or database name, e.g. '/' as %2F, '@' as %40)");
    }
    if (replication && (err.find("no pg_hba.conf entry for replication") != std::string::npos ||
                        err.find("replication role") != std::string::npos)) {
      return InvalidArgumentError("cannot open a replication connection to " + RedactUrl(url) +
                                  ": " + err +
                                  "; add a 'host replication USER ADDRESS METHOD' line to "
                                  "pg_hba.conf and grant the user REPLICATION");
    }
    if (err.find("password authentication failed") != std::string::npos ||
        (err.find("database \"") != std::string::npos &&
         err.find("does not exist") != std::string::npos)) {
      return InvalidArgumentError("cannot connect to " + RedactUrl(url) + ": " + err);
    }
    return RetriableError("cannot connect to " + RedactUrl(url) + ": " + err);
  }
  // courier works in UTF-8: a database in another encoding (LATIN1, ...) is read converted,
  // by queries and by the walsender alike (it arrived as the database's own bytes). Not
  // SQL_ASCII, which has nothing to convert from: asked for UTF-8, the server would refuse
  // every value stored in it that is not, and stop the relay at such a row.
  const char* encoding = PQparameterStatus(conn.get(), "server_encoding");
  if (encoding != nullptr && std::strcmp(encoding, "UTF8") != 0 &&
      std::strcmp(encoding, "SQL_ASCII") != 0 && PQsetClientEncoding(conn.get(), "UTF8") != 0) {
    return RetriableError("cannot read " + RedactUrl(url) + " (encoding " + encoding +
                          ") as UTF-8: " + Trim(PQerrorMessage(conn.get())));
  }
  return conn;
}

Status PgError(PGconn* conn, const PGresult* res) {
  std::string message =
      Scrubbed(conn, Trim(res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn)));
  if (message.empty()) message = Scrubbed(conn, Trim(PQerrorMessage(conn)));
  if (PQstatus(conn) == CONNECTION_BAD)
    return RetriableError("PostgreSQL connection lost: " + message);
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  if (state == nullptr) return RetriableError(message);
  const StatusCode code = PgStatusCode(state);
  if (code == StatusCode::kInternal) return InternalError(message + " (SQLSTATE " + state + ")");
  return Status(code, message);
}

void PgWaitReadable(PGconn* conn, int timeout_ms) {
  pollfd p{PQsocket(conn), POLLIN, 0};
  (void)::poll(&p, 1, timeout_ms);
}

std::string PgSqlState(const PGresult* res) {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  return state != nullptr ? state : "";
}

StatusCode PgStatusCode(std::string_view sqlstate) {
  const std::string_view cls = sqlstate.substr(0, 2);
  // The table, column or function is not there: the schema needs courier migrate or fixing.
  if (sqlstate == "42P01" || sqlstate == "42703" || sqlstate == "42883" || sqlstate == "42704") {
    return StatusCode::kNotFound;
  }
  // Connection exceptions, serialization failures and deadlocks, lack of resources, operator
  // intervention (shutdown, cannot_connect_now, a cancelled statement), lock timeouts and
  // system (I/O) errors pass: the same statement can work later.
  if (cls == "08" || cls == "40" || cls == "53" || cls == "57" || cls == "58" ||
      sqlstate == "55P03" || sqlstate == "55006") {
    return StatusCode::kRetriable;
  }
  // A unique violation: another writer inserted the same key first (an event store append
  // whose expected version was taken). Re-read and decide again.
  if (sqlstate == "23505") return StatusCode::kAborted;
  // Insufficient privilege (42501), wrong types (42804), other syntax or access rules, data
  // exceptions and constraint violations: the same statement fails the same way until the
  // table, the role or the row is fixed.
  if (cls == "42" || cls == "22" || cls == "23" || cls == "0A") return StatusCode::kInvalidArgument;
  if (cls == "55") return StatusCode::kFailedPrecondition;
  return StatusCode::kInternal;
}

Result<PgResult> PgExec(PGconn* conn, const std::string& sql, const PgParams& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  PgResult res(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                            values.data(), nullptr, nullptr, 0));
  if (res == nullptr) return PgError(conn, nullptr);
  const ExecStatusType st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return PgError(conn, res.get());
  return res;
}

Result<PgResult> PgSimple(PGconn* conn, const std::string& sql) {
  PgResult res(PQexec(conn, sql.c_str()));
  if (res == nullptr) return PgError(conn, nullptr);
  const ExecStatusType st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return PgError(conn, res.get());
  return res;
}

Status PgRun(PGconn* conn, const std::string& sql) { return PgSimple(conn, sql).status(); }

std::string QuoteIdent(std::string_view name) {
  std::string out;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string_view part =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    out.push_back('"');
    for (char c : part) {
      if (c == '"') out.push_back('"');
      out.push_back(c);
    }
    out.push_back('"');
    if (dot == std::string_view::npos) break;
    out.push_back('.');
    start = dot + 1;
  }
  return out;
}

std::string PgTextArray(const std::vector<std::optional<std::string>>& values) {
  std::string out = "{";
  for (const auto& v : values) {
    if (out.size() > 1) out += ",";
    if (!v) {
      out += "NULL";
      continue;
    }
    out += "\"";
    for (char c : *v) {
      if (c == '"' || c == '\\') out += "\\";
      out += c;
    }
    out += "\"";
  }
  return out + "}";
}

std::string QuoteLiteral(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out.push_back('\'');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

}  // namespace courier
