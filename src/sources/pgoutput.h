// Decoding of PostgreSQL's streaming-replication copy messages and of the built-in `pgoutput`
// logical decoding protocol (version 1, with logical messages), as documented in
// "Streaming Replication Protocol" and "Logical Replication Message Formats".
//
// Decoded: transaction boundaries, relations (with their replica identity and key columns),
// types, inserts, updates and deletes (with the old key or old row when the server sends it),
// truncates and logical messages. Origin and streaming messages are recognised and skipped.
//
// Thread-safety: plain functions over caller-owned buffers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "courier/status.h"

namespace courier::pgoutput {

using Lsn = uint64_t;

// "16/B374D848" <-> 0x16B374D848.
std::string FormatLsn(Lsn lsn);
Result<Lsn> ParseLsn(std::string_view text);

// Microseconds since 2000-01-01 (PostgreSQL's epoch) <-> since the Unix epoch.
constexpr int64_t kPgEpochOffsetUs = 946684800LL * 1000000;

// One CopyData message of a START_REPLICATION stream.
struct XLogData {
  Lsn start = 0;
  Lsn wal_end = 0;
  std::string_view payload;  // a pgoutput message; points into the caller's buffer
};
struct Keepalive {
  Lsn wal_end = 0;
  bool reply_requested = false;
};
struct CopyMessage {
  enum class Kind { kXLogData, kKeepalive, kOther } kind = Kind::kOther;
  XLogData data;
  Keepalive keepalive;
};
Result<CopyMessage> ParseCopyMessage(std::string_view buf);

// The standby status update ('r') confirming `flush` (and everything before it).
std::string StandbyStatusUpdate(Lsn received, Lsn flush, int64_t now_unix_us, bool reply);

struct Column {
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_modifier = -1;
  // Part of the replica identity (the primary key, the REPLICA IDENTITY index, or every
  // column under REPLICA IDENTITY FULL).
  bool key = false;
};
struct Relation {
  uint32_t id = 0;  // the table's OID
  std::string schema;
  std::string name;
  // relreplident: 'd' default (the primary key), 'n' nothing, 'f' full, 'i' an index.
  char replica_identity = 'd';
  std::vector<Column> columns;
};

// A column value of a tuple: absent (SQL NULL), unchanged TOAST (updates only), or text.
struct Value {
  enum class Kind { kNull, kUnchangedToast, kText } kind = Kind::kNull;
  std::string_view text;  // points into the caller's buffer
};

struct Message {
  enum class Kind {
    kBegin,
    kCommit,
    kRelation,
    kInsert,
    kUpdate,
    kDelete,
    kTruncate,
    kType,
    kLogicalMessage,
    kOther  // origin, streaming: not used
  } kind = Kind::kOther;
  // kBegin
  Lsn final_lsn = 0;
  int64_t commit_time_us = 0;  // Unix epoch
  uint32_t xid = 0;
  // kCommit
  Lsn commit_lsn = 0;
  Lsn end_lsn = 0;
  // kRelation
  Relation relation;
  // kInsert, kUpdate: the relation id and the new tuple's values, in the relation's column
  // order. kDelete: the relation id (values empty).
  uint32_t relation_id = 0;
  std::vector<Value> values;
  // kUpdate, kDelete: the old tuple as the server sent it: 'K' only the replica identity's
  // columns (the others are null), 'O' the whole old row (REPLICA IDENTITY FULL), or 0 when
  // an update sent none (its key did not change). Always 'K' or 'O' for a delete.
  char old_kind = 0;
  std::vector<Value> old_values;
  // kTruncate: the tables truncated together, and TRUNCATE's options.
  std::vector<uint32_t> relation_ids;
  bool truncate_cascade = false;
  bool truncate_restart_identity = false;
  // kType: a type the relations use that is not built in (its OID is `type_oid`).
  uint32_t type_oid = 0;
  std::string type_schema;
  std::string type_name;
  // kLogicalMessage
  bool transactional = false;
  Lsn message_lsn = 0;
  std::string prefix;
  std::string_view content;
};
Result<Message> ParseMessage(std::string_view payload);
// The same into `out`, whose vectors and strings keep their capacity: a stream's messages
// parsed one after the other into one Message allocate nothing once it has grown. On error
// `out` holds what was read.
Status ParseMessage(std::string_view payload, Message* out);

// Parses a timestamptz in PostgreSQL's ISO output form ("2026-11-23 17:50:01.123456+00",
// offsets like +05:30 accepted) into microseconds since the Unix epoch.
std::optional<int64_t> ParseTimestamp(std::string_view text);

}  // namespace courier::pgoutput
