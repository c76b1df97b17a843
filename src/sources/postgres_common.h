// Pieces shared by the PostgreSQL polling and CDC sources.
//
// Thread-safety: functions over caller-owned connections.
#pragma once

#include <span>
#include <string>

#include "core/clock.h"
#include "core/postgres.h"
#include "sources/source.h"

namespace courier {

// The timestamptz `column` in Unix microseconds, as SQL. 'infinity', '-infinity' and years past
// 294246 do not fit an int8 (the cast failed the whole query, so one such outbox row stopped
// the relay for good): they read as the statement's time, as the CDC source takes the commit
// time for a created_at it cannot read.
std::string UnixMicrosSql(const std::string& column);

// "{1,2,3}": an int8[] literal.
std::string IdArray(std::span<const int64_t> ids);

// Retain mode's cleaner: runs `cleanup_sql` (a DELETE of at most 10 000 rows published longer
// than $1 milliseconds ago) until a round deletes fewer; returns the rows deleted.
Result<int64_t> DeletePublishedRows(PGconn* conn, const std::string& cleanup_sql,
                                    Duration retention);

// The privileges the relay's current role needs: on the outbox SELECT and DELETE (checkpoints
// delete published rows and move rejected ones out), UPDATE too in retain mode; on the
// dead-letter table SELECT, INSERT, UPDATE, DELETE and USAGE of its id sequence. The first
// one missing is kInvalidArgument with one line naming it and the GRANT that adds it: a role
// without it would publish a batch, fail to checkpoint it and publish it again, forever.
Status CheckRelayPrivileges(PGconn* conn, const TableNames& tables, CheckpointMode mode);

// kNotFound naming the first of the outbox (or events) table and the dead-letter table that
// does not exist in `where`, with the command that creates it (`migrate_command`, given the
// source URL to append).
Status CheckTablesExist(PGconn* conn, const TableNames& tables, const std::string& where,
                        const std::string& migrate_command);

// A checkpoint failed with `st`: when it is permanent (retrying republishes the batch and
// fails again), says which privilege is missing if one is (CheckRelayPrivileges), else
// returns `st` as it is.
Status ExplainCheckpointFailure(PGconn* conn, const TableNames& tables, CheckpointMode mode,
                                const Status& st);

// A bytea column's text (hex or escape format) as its bytes.
std::string UnescapeBytea(const std::string& escaped);

// Whether the outbox's payload column is bytea (else it is read as text).
Result<bool> PayloadIsBytea(PGconn* conn, const std::string& quoted_outbox);

// An event store's parking (sources/event_store_poll.cc), for its polling and CDC sources: one
// statement that copies the rows ($1 positions, $2 errors, $4 statuses; $3 the sink) to the
// dead-letter table and stamps their published_at. Events are never deleted: the relay is done
// with them, and `courier dead-letters` publishes them again from there.
Result<std::string> EventStoreParkSql(PGconn* conn, const TableNames& tables);
Status ParkEventStoreRows(PGconn* conn, const std::string& park_sql,
                          std::span<const Rejected> rejected, const std::string& sink);

}  // namespace courier
