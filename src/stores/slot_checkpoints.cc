#include "stores/slot_checkpoints.h"

#include "sources/pgoutput.h"

namespace courier {
namespace {

class SlotTableCheckpoints final : public CheckpointStore {
 public:
  SlotTableCheckpoints(PGconn* conn, const TableNames& tables, std::string slot)
      : conn_(conn), table_(QuoteIdent(tables.CdcSlots())), slot_(std::move(slot)) {}

  Result<std::optional<uint64_t>> Load() override {
    COURIER_ASSIGN_OR_RETURN(
        PgResult res,
        PgExec(conn_, "SELECT checkpoint_lsn::text FROM " + table_ + " WHERE slot_name = $1",
               {slot_}));
    if (PQntuples(res.get()) != 1 || PQgetisnull(res.get(), 0, 0)) {
      return std::optional<uint64_t>();
    }
    COURIER_ASSIGN_OR_RETURN(pgoutput::Lsn lsn, pgoutput::ParseLsn(PQgetvalue(res.get(), 0, 0)));
    return std::optional<uint64_t>(lsn);
  }

  Status Save(uint64_t position) override {
    return PgExec(conn_,
                  "UPDATE " + table_ + " SET checkpoint_lsn = $2::pg_lsn WHERE slot_name = $1",
                  {slot_, pgoutput::FormatLsn(position)})
        .status();
  }

 private:
  PGconn* conn_;
  std::string table_;
  std::string slot_;
};

}  // namespace

std::unique_ptr<CheckpointStore> MakeSlotTableCheckpoints(PGconn* conn, const TableNames& tables,
                                                          std::string slot) {
  return std::make_unique<SlotTableCheckpoints>(conn, tables, std::move(slot));
}

}  // namespace courier
