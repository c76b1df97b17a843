// SQLite polling source. SQLite has one writer at a time and assigns ids inside the writing
// transaction, so ids commit in order; the source still reads every pending row rather than
// keeping a watermark, like the PostgreSQL source. New commits by other connections are
// noticed cheaply through PRAGMA data_version.
#include "core/encoding.h"
#include "core/postgres.h"  // QuoteIdent: the same double-quote rules apply
#include "core/sqlite.h"
#include "core/url.h"
#include "schema/table_shape.h"
#include "sources/row_codec.h"
#include "sources/source.h"
#include "stores/parking.h"

namespace courier {
namespace {

class SqlitePollSource final : public Source {
 public:
  SqlitePollSource(SourceOptions options, std::string path)
      : options_(std::move(options)), path_(std::move(path)) {}

  Status Open() override {
    Close();
    COURIER_ASSIGN_OR_RETURN(db_, SqliteOpen(path_, /*create=*/false));
    const std::string outbox = QuoteIdent(options_.tables.outbox);
    for (const std::string* table : {&options_.tables.outbox, &options_.tables.dead_letter}) {
      COURIER_ASSIGN_OR_RETURN(
          SqliteStmt check,
          SqlitePrepare(db_.get(), "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1"));
      sqlite3_bind_text(check.get(), 1, table->c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(check.get()) != SQLITE_ROW) {
        Close();
        return NotFoundError("table " + QuoteIdent(*table) + " does not exist in " + Describe() +
                             "; create it with: courier migrate --source " + Describe());
      }
    }
    if (Status shape = CheckTableShapes(db_.get(), options_.tables); !shape.ok()) {
      Close();
      return shape;
    }
    COURIER_ASSIGN_OR_RETURN(
        fetch_, SqlitePrepare(db_.get(),
                              "SELECT id, event_id, aggregate_type, aggregate_id, event_type,"
                              " payload, headers, " +
                                  SqliteCreatedAtSql("created_at") + " FROM " + outbox +
                                  " WHERE published_at IS NULL ORDER BY id LIMIT ?1"));
    COURIER_ASSIGN_OR_RETURN(
        checkpoint_, SqlitePrepare(db_.get(), options_.mode == CheckpointMode::kDelete
                                                  ? "DELETE FROM " + outbox + " WHERE id = ?1"
                                                  : "UPDATE " + outbox +
                                                        " SET published_at = strftime('%Y-%m-%dT"
                                                        "%H:%M:%fZ', 'now') WHERE id = ?1"));
    COURIER_ASSIGN_OR_RETURN(parking_, SqliteOutboxParking::Prepare(db_.get(), options_.tables));
    COURIER_ASSIGN_OR_RETURN(
        cleanup_, SqlitePrepare(db_.get(), "DELETE FROM " + outbox +
                                               " WHERE id IN (SELECT id"
                                               " FROM " +
                                               outbox +
                                               " WHERE published_at IS NOT NULL AND"
                                               " julianday(published_at) < julianday('now') -"
                                               " ?1 / 86400000.0 LIMIT 10000)"));
    COURIER_ASSIGN_OR_RETURN(data_version_, SqlitePrepare(db_.get(), "PRAGMA data_version"));
    return Status::Ok();
  }

  // The relay holds the file lock (stores/leadership.h); nothing here is only the leader's.
  Status Activate(const StopSignal&) override { return Status::Ok(); }

  Result<FetchedBatch> Fetch(size_t max) override {
    sqlite3_stmt* s = fetch_.get();
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(max));
    FetchedBatch batch;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      OutboxRow row{Column(s, 0), Column(s, 1), Column(s, 2), Column(s, 3),
                    Column(s, 4), Column(s, 5), Column(s, 6), Column(s, 7)};
      COURIER_RETURN_IF_ERROR(AddOutboxRow(row, &batch));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, "fetch outbox rows");
    return batch;
  }

  void Wait(const StopSignal& stop) override {
    // data_version changes when another connection commits; checking it is a few
    // instructions, so poll it often and go back to Fetch only when something changed.
    const int64_t start = DataVersion();
    const TimePoint deadline = ClockOf(options_).Now() + options_.poll_interval;
    while (!stop.requested() && ClockOf(options_).Now() < deadline) {
      if (DataVersion() != start) return;
      ClockOf(options_).SleepFor(Duration(2), stop);
    }
  }

  Status Checkpoint(std::span<const int64_t> acked, std::span<const Rejected> rejected,
                    const std::string& sink_name) override {
    if (acked.empty() && rejected.empty()) return Status::Ok();
    COURIER_RETURN_IF_ERROR(SqliteExec(db_.get(), "BEGIN IMMEDIATE"));
    Status st = Status::Ok();
    for (int64_t id : acked) {
      st = StepWithId(checkpoint_.get(), id, "checkpoint");
      if (!st.ok()) break;
    }
    if (st.ok()) st = parking_.Park(db_.get(), rejected, sink_name);
    if (st.ok()) st = SqliteExec(db_.get(), "COMMIT");
    if (!st.ok()) (void)SqliteExec(db_.get(), "ROLLBACK");
    return st;
  }

  Result<int64_t> DeletePublishedBefore(Duration retention) override {
    int64_t total = 0;
    while (true) {
      sqlite3_stmt* s = cleanup_.get();
      sqlite3_reset(s);
      sqlite3_bind_int64(s, 1, retention.count());
      const int rc = sqlite3_step(s);
      sqlite3_reset(s);
      if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, "delete published rows");
      const int n = sqlite3_changes(db_.get());
      total += n;
      if (n < 10000) return total;
    }
  }

  void Close() override {
    fetch_.reset();
    checkpoint_.reset();
    parking_ = SqliteOutboxParking{};
    cleanup_.reset();
    data_version_.reset();
    db_.reset();
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  // The column's text (an integer id as decimal, a blob as its bytes); nullopt for NULL.
  static std::optional<std::string> Column(sqlite3_stmt* s, int col) {
    if (sqlite3_column_type(s, col) == SQLITE_NULL) return std::nullopt;
    const void* data = sqlite3_column_blob(s, col);
    const int len = sqlite3_column_bytes(s, col);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), len);
  }

  Status StepWithId(sqlite3_stmt* s, int64_t id, std::string_view what) {
    sqlite3_bind_int64(s, 1, id);
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return SqliteError(db_.get(), rc, what);
    return Status::Ok();
  }

  int64_t DataVersion() {
    sqlite3_stmt* s = data_version_.get();
    sqlite3_reset(s);
    int64_t v = -1;
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return v;
  }

  SourceOptions options_;
  std::string path_;
  SqliteDb db_;
  SqliteStmt fetch_, checkpoint_, cleanup_, data_version_;
  SqliteOutboxParking parking_;
};

}  // namespace

std::unique_ptr<Source> MakeSqlitePollSource(const SourceOptions& options, std::string path) {
  return std::make_unique<SqlitePollSource>(options, std::move(path));
}

}  // namespace courier
