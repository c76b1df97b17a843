// `courier backfill`: asks the running relay to publish a captured table's rows again (all of
// them, or those --where selects) as `read` events, chunk by chunk beside the stream
// (sources/cdc/snapshot.h). It records the request in <outbox>_cdc_capture; the relay picks it
// up within a second.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/postgres.h"
#include "core/url.h"
#include "sources/cdc/capture_setup.h"
#include "sources/source.h"

namespace courier::cli {
namespace {

Status RequestBackfill(const BackfillFlags& f, std::vector<std::string>* requested) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(f.source));
  if (loc.kind != SourceLocation::Kind::kPostgres) {
    return InvalidArgumentError("courier backfill needs PostgreSQL (table capture)");
  }
  COURIER_ASSIGN_OR_RETURN(std::vector<cdc::CaptureSpec> specs, cdc::ParseCaptureList(f.capture));
  if (specs.empty()) return InvalidArgumentError("--capture: name the tables to backfill");
  COURIER_ASSIGN_OR_RETURN(PgConn conn, PgConnect(loc.target));
  const std::string bookkeeping = QuoteIdent(f.tables.CdcCapture());
  COURIER_RETURN_IF_ERROR(PgRun(conn.get(), "BEGIN"));
  for (const cdc::CaptureSpec& spec : specs) {
    Result<PgResult> found = PgExec(conn.get(),
                                    "SELECT c.table_name, c.relation::regclass::text FROM " +
                                        bookkeeping + " c WHERE c.relation = to_regclass($1)",
                                    {spec.table});
    if (!found.ok() || PQntuples(found->get()) == 0) {
      (void)PgRun(conn.get(), "ROLLBACK");
      if (!found.ok() && found.status().code() != StatusCode::kNotFound) return found.status();
      return InvalidArgumentError("--capture " + spec.table +
                                  ": not a captured table of this outbox; capture it first with "
                                  "courier migrate --capture " +
                                  spec.table);
    }
    const std::string name = PQgetvalue(found->get(), 0, 0);
    const std::string sql_name = PQgetvalue(found->get(), 0, 1);
    if (!spec.columns.empty() || !spec.where.empty()) {
      (void)PgRun(conn.get(), "ROLLBACK");
      return InvalidArgumentError("--capture " + spec.text +
                                  ": name the table only; select rows with --where");
    }
    if (!f.where.empty()) {
      // The condition is checked by the server now rather than by the relay later.
      PgResult plan(PQexec(
          conn.get(), ("EXPLAIN SELECT 1 FROM " + sql_name + " WHERE (" + f.where + ")").c_str()));
      if (PQresultStatus(plan.get()) != PGRES_TUPLES_OK) {
        const char* why = PQresultErrorField(plan.get(), PG_DIAG_MESSAGE_PRIMARY);
        const std::string reason = why != nullptr ? why : "refused";
        (void)PgRun(conn.get(), "ROLLBACK");
        return InvalidArgumentError("--where: " + reason);
      }
    }
    COURIER_RETURN_IF_ERROR(
        PgExec(conn.get(),
               "UPDATE " + bookkeeping +
                   " SET snapshot_state = 'pending', snapshot_last_key = NULL,"
                   " snapshot_rows = 0, snapshot_where = nullif($2, ''),"
                   " snapshot_request = snapshot_request + 1 WHERE table_name = $1",
               {name, f.where})
            .status());
    requested->push_back(name);
  }
  return PgRun(conn.get(), "COMMIT");
}

}  // namespace

CLI::App* AddBackfillCommand(CLI::App& app, BackfillFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "backfill",
      "Publish captured tables' rows again as read events (all, or those --where selects),\n"
      "through the running relay, beside the stream and consistent with it.");
  AddSourceOption(cmd, &f->source);
  AddCaptureOption(cmd, &f->capture);
  cmd->add_option("--where", f->where, "SQL condition on the table's rows (default: all)")
      ->type_name("SQL");
  AddTableOptions(cmd, &f->tables.outbox, &f->tables.dead_letter);
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunBackfill(const BackfillFlags& f) {
  std::vector<std::string> requested;
  Status st = RequestBackfill(f, &requested);
  if (!st.ok()) return Fail(st);
  std::string names;
  for (const std::string& n : requested) names += (names.empty() ? "" : ", ") + n;
  std::printf("backfill of %s requested%s: the relay of %s publishes it as read events\n",
              names.c_str(), f.where.empty() ? "" : (" (WHERE " + f.where + ")").c_str(),
              RedactUrl(f.source).c_str());
  return 0;
}

}  // namespace courier::cli
