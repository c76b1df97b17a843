// Snapshots of captured tables: the rows that exist when capture starts, published as `read`
// events consistent with the stream, chunk by chunk, without a long transaction and without
// stopping the stream: watermarks as in Netflix's DBLog.
//
// A chunk: a transactional logical message `courier-watermark` (low), a SELECT of the next
// rows by primary key after the last one done (its own short transaction), a second message
// (high). The stream carries both messages in commit order: every key of the chunk that
// changes between them is dropped from it (the stream's event is as new or newer), and at the
// high watermark the remaining rows become read events positioned there (version = the high
// watermark's commit LSN and a position), so they order correctly against stream events of the
// same keys. A chunk's last key is saved (`<outbox>_cdc_capture`) in the checkpoint
// transaction that records a position past its high watermark: a crash resumes from the last
// chunk whose events are all done.
//
// Thread-safety: one thread (the relay's), on the source's connection.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/postgres.h"
#include "courier/status.h"
#include "sources/cdc/change.h"
#include "sources/pgoutput.h"
#include "sources/source.h"

namespace courier::cdc {

inline constexpr const char* kWatermarkPrefix = "courier-watermark";

class Snapshot {
 public:
  // The captured tables (by OID) whose snapshot is not done, from the bookkeeping table.
  Status Load(PGconn* conn, const TableNames& tables, const std::string& publication,
              const std::vector<uint32_t>& captured);
  // Once the snapshots are done and saved: reads the bookkeeping again, for backfills that
  // `courier backfill` requested since.
  Status Reload(PGconn* conn);

  // A chunk's watermarks are on their way through the stream.
  bool in_progress() const { return chunk_.has_value(); }
  bool done() const { return pending_.empty() && !chunk_; }

  // When no chunk is in progress, runs the next one's low watermark, SELECT and high
  // watermark.
  Status Step(PGconn* conn);

  // A change the stream carries: drops its key from the chunk while between the watermarks.
  void Saw(const RowChange& change);

  // A `courier-watermark` message, in a transaction that began at `begin`. At the chunk's
  // high watermark appends its remaining rows as read events.
  void OnWatermark(const pgoutput::Message& message, uint64_t commit_lsn, int64_t commit_time_us,
                   std::vector<RowChange>* out);

  // In the checkpoint transaction that records `lsn`: saves the progress of every chunk whose
  // high watermark committed before it.
  Status Save(PGconn* conn, pgoutput::Lsn lsn);
  // Saves at once the progress of chunks that published nothing and follow no unsaved one:
  // no event depends on them (an empty table's snapshot is done without waiting for one).
  Status SaveEmpty(PGconn* conn);

  // Forgets the chunk in progress (the stream restarts; it is read again).
  void Reset() { chunk_.reset(); }

 private:
  struct Table {
    uint32_t oid = 0;
    std::string schema, table, sql_name;
    std::vector<std::string> key_columns;
    std::vector<std::string> key_types;  // format_type of each
    std::vector<std::string> columns;    // published, in table order
    std::vector<uint32_t> column_types;  // their types, as relation messages give them
    std::string row_filter;              // the publication's, or ""
    std::string where;                   // a backfill's condition, or ""
    int64_t request = 0;                 // the backfill request it serves
    std::string last_key;                // JSON array of the key columns' text, or "" (start)
    int64_t rows = 0;
  };
  struct Chunk {
    std::string token;
    size_t table = 0;  // index into pending_
    bool low_seen = false;
    bool last = false;  // fewer rows than asked: the table is done after it
    std::string last_key;
    std::map<std::string, RowChange> rows;  // by key (the event's aggregate key)
  };
  Status ReadPending(PGconn* conn);

  struct Progress {
    uint32_t oid;
    int64_t request;
    std::string last_key;
    int64_t rows;
    bool done;
    bool empty;  // the chunk published nothing
  };

  std::string publication_;
  std::vector<uint32_t> captured_;
  std::string table_names_capture_;  // the bookkeeping table, quoted
  std::vector<Table> pending_;
  std::optional<Chunk> chunk_;
  std::map<pgoutput::Lsn, Progress> unsaved_;  // by the high watermark's commit LSN
  uint64_t next_token_ = 0;
};

// The key of a change as its event's aggregate id renders it, for matching snapshot rows
// with stream changes.
std::string ChangeKey(const RowChange& change);

}  // namespace courier::cdc
