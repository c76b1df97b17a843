// The CDC source's default CheckpointStore: the `checkpoint_lsn` column of the outbox's CDC slot
// table, written in the transaction that marks the rows done.
#pragma once

#include <memory>
#include <string>

#include "core/postgres.h"
#include "sources/source.h"
#include "stores/checkpoint_store.h"

namespace courier {

// `slot`'s row in TableNames::CdcSlots, read and written on `conn` (not owned: the source's
// connection, so that Save joins the transaction it has open).
std::unique_ptr<CheckpointStore> MakeSlotTableCheckpoints(PGconn* conn, const TableNames& tables,
                                                          std::string slot);

}  // namespace courier
