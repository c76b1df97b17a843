// libpq behind RAII handles, with errors classed by SQLSTATE (never by message text) for the
// caller: lost connections, shutdowns, lock and serialization failures are retriable; a
// missing table or column is kNotFound; a missing privilege, a type mismatch, bad data or a
// violated constraint is kInvalidArgument (permanent: fix the table, the role or the row).
//
// Thread-safety: a connection belongs to one thread at a time (libpq's rule).
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "courier/status.h"

namespace courier {

struct PgConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

using PgParams = std::vector<std::optional<std::string>>;

// Connects with a 10 s connect timeout; failure to reach the server is kRetriable. With
// `replication`, a logical replication connection (replication=database) to the same database.
Result<PgConn> PgConnect(const std::string& url, bool replication = false);

// Runs one statement (text parameters, text results) and classes any error.
Result<PgResult> PgExec(PGconn* conn, const std::string& sql, const PgParams& params = {});

// Runs a script of several statements (simple protocol, no parameters).
Status PgRun(PGconn* conn, const std::string& sql);

// Runs one command with the simple protocol and returns its result: what replication
// connections accept (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT, ...).
Result<PgResult> PgSimple(PGconn* conn, const std::string& sql);

// Waits up to `timeout_ms` until the connection has input to consume (or is closed).
void PgWaitReadable(PGconn* conn, int timeout_ms);

// Classes the error of a failed result (or of the connection when `res` is null).
Status PgError(PGconn* conn, const PGresult* res);

// The SQLSTATE of a failed result ("42704"), or "" when there is none (no result, or the
// connection was lost): for callers that tell one error apart from its class.
std::string PgSqlState(const PGresult* res);

// The code for a SQLSTATE (PgError's classification): kRetriable, kNotFound,
// kInvalidArgument, kFailedPrecondition or, for states it does not know, kInternal.
StatusCode PgStatusCode(std::string_view sqlstate);

// A text[] literal for a parameter ("{\"a\",NULL}"): each value double-quoted with \ and "
// escaped, nullopt as NULL.
std::string PgTextArray(const std::vector<std::optional<std::string>>& values);

// "schema.table" or "table" as a quoted identifier: "schema"."table".
std::string QuoteIdent(std::string_view name);
// The text as a single-quoted SQL literal.
std::string QuoteLiteral(std::string_view text);

}  // namespace courier
