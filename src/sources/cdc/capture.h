// Table capture's decoding: what the replication stream says of a captured table (relation
// messages, inserts, updates, deletes, truncates) as cdc::RowChange values (change.h), which the
// CDC source renders into events.
//
// Keys: a table's key columns are its primary key, looked up in the catalog when its relation
// message arrives (pgoutput flags every column as key under REPLICA IDENTITY FULL); without a
// primary key, the columns pgoutput flags. Values: rendered by the relation's column types
// (RenderColumn). An unchanged TOASTed value of an UPDATE comes from the old row when the
// server sent it (REPLICA IDENTITY FULL); otherwise the column is listed in `unavailable` and
// left out of `after`, never filled with a placeholder. A relation message after ADD, DROP or
// RENAME COLUMN or a type change replaces what was known: later changes carry the new shape.
//
// Thread-safety: one thread (the relay's).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/postgres.h"
#include "courier/status.h"
#include "sources/cdc/change.h"
#include "sources/pgoutput.h"

namespace courier::cdc {

class TableCapture {
 public:
  // The captured tables by OID (pgoutput's relation id); empty: none.
  void SetTables(std::set<uint32_t> oids);
  bool empty() const { return tables_.empty(); }

  // A relation message. A captured table's key columns are looked up on `conn` (the source's
  // ordinary connection; null: no catalog); a table dropped since, or without a primary key,
  // keeps the columns pgoutput flags.
  Status OnRelation(const pgoutput::Relation& relation, PGconn* conn);

  // A transaction begins: its commit LSN (the Begin message's final_lsn), xid and time.
  void Begin(const pgoutput::Message& begin);

  // An insert, update, delete or truncate: the changes of captured tables it makes (none for
  // other tables; a truncate, one per captured table it names), positioned in the transaction.
  void OnChange(const pgoutput::Message& message, std::vector<RowChange>* out);

  // Forgets the relations (a new stream sends them again).
  void Reset() { relations_.clear(); }

 private:
  struct Relation {
    pgoutput::Relation relation;
    std::vector<std::string> key_columns;
    bool primary_key = false;  // key_columns are the catalog's primary key
  };
  RowChange Start(const Relation& r, RowChange::Op op);

  std::set<uint32_t> tables_;
  std::unordered_map<uint32_t, Relation> relations_;  // captured ones only
  uint64_t commit_lsn_ = 0;
  uint32_t xid_ = 0;
  int64_t commit_time_us_ = 0;
  uint64_t position_ = 0;  // of the last change of the current transaction
};

}  // namespace courier::cdc
