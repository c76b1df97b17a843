// Table capture's set-up (`courier migrate --capture`, and `courier relay --capture` when the
// set-up is missing): the --capture list parsed, each table checked (it exists, is not
// courier's own, has a replica identity the stream can key its changes by), the tables added
// to the outbox's publication (PostgreSQL 15 row filters and column lists as given) with
// updates, deletes and truncates published, and the captured set recorded in the bookkeeping
// table `<outbox>_cdc_capture`.
//
// Thread-safety: functions over a caller-owned connection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/postgres.h"
#include "courier/status.h"
#include "sources/source.h"

namespace courier::cdc {

// One entry of --capture: `public.orders`, `public.orders (id, status)`,
// `public.orders WHERE (status <> 'draft')`, or both, column list first.
struct CaptureSpec {
  std::string text;     // the entry as given, for messages
  std::string table;    // possibly schema-qualified, quoted identifiers kept as written
  std::string columns;  // "(id, status)" or ""
  std::string where;    // "(status <> 'draft')" or ""
};

// Splits each value on commas outside parentheses and quotes (a flag may also be repeated)
// and parses the entries. kInvalidArgument names the entry it cannot read.
Result<std::vector<CaptureSpec>> ParseCaptureList(const std::vector<std::string>& values);

// A captured table as the catalog names it.
struct CapturedTable {
  uint32_t oid = 0;
  std::string schema;
  std::string table;
  std::string qualified;  // schema.table, quoted where needed
  CaptureSpec spec;
};

// What PrepareCapture may do.
enum class CaptureSetup {
  // `courier migrate`: a table that does not exist is refused.
  kMigrate,
  // `courier relay`: a table that no longer exists (dropped or renamed since) is left out with
  // a warning, so that the relay keeps publishing the others.
  kRelay,
};

// Checks every table of `specs` (nothing changes when one is refused: kInvalidArgument, one
// line saying what to do), warns about TOASTable columns without REPLICA IDENTITY FULL, then
// in one transaction adds them to `publication` (created if missing), makes it publish
// updates, deletes and truncates, checks the row filters and column lists against the replica
// identity, and records the set in TableNames::CdcCapture. Returns the tables captured.
Result<std::vector<CapturedTable>> PrepareCapture(PGconn* conn, const TableNames& tables,
                                                  const std::string& publication,
                                                  const std::vector<CaptureSpec>& specs,
                                                  CaptureSetup mode);

// The checks of PrepareCapture alone, changing nothing: run by `courier migrate` before it
// creates anything (the outbox and its publication need not exist yet).
Status CheckCapture(PGconn* conn, const TableNames& tables, const std::vector<CaptureSpec>& specs);

}  // namespace courier::cdc
