// `courier migrate`'s numbered migrations (src/schema/): recorded per outbox, applied once,
// databases of earlier versions adopted unchanged, newer ones refused, concurrent runs safe.
#include <algorithm>
#include <atomic>
#include <thread>

#include "support/fixtures.h"

namespace courier::test {
namespace {

class SchemaVersions : public ::testing::TestWithParam<bool> {
 protected:
  bool postgres() const { return GetParam(); }
  // A database nothing was migrated in yet (TestDb::Make migrates).
  void EmptyDatabase(TestDb* db) const {
    db->postgres = postgres();
    if (!postgres()) {
      db->url = "sqlite://" + db->dir.File("app.db");
      return;
    }
    auto url = SharedPostgres().NewDatabase();
    ASSERT_OK(url);
    db->url = *url;
  }
  // PostgreSQL knows 1 outbox … 8 cdc_capture_backfill; SQLite 1 outbox … 3 inbox.
  std::vector<std::string> Known() const {
    if (postgres()) {
      return {"1 outbox",
              "2 dead_letters",
              "3 leases",
              "4 inbox",
              "5 cdc_bookkeeping",
              "6 cdc_capture",
              "7 cdc_capture_snapshot",
              "8 cdc_capture_backfill"};
    }
    return {"1 outbox", "2 dead_letters", "3 inbox"};
  }
};

std::vector<std::string> Names(const std::vector<AppliedMigration>& applied) {
  std::vector<std::string> out;
  for (const AppliedMigration& m : applied) out.push_back(std::to_string(m.version) + " " + m.name);
  return out;
}

// First column of every row of `sql`, on either database.
std::vector<std::string> Query(const TestDb& db, const std::string& sql) {
  if (db.postgres) {
    auto rows = PgQuery(db.url, sql);
    EXPECT_OK(rows);
    return rows.ok() ? *rows : std::vector<std::string>{};
  }
  std::vector<std::string> out;
  auto sqlite = SqliteOpen(db.url.substr(9), false);
  EXPECT_OK(sqlite);
  if (!sqlite.ok()) return out;
  auto stmt = SqlitePrepare(sqlite->get(), sql);
  EXPECT_OK(stmt);
  if (!stmt.ok()) return out;
  while (sqlite3_step(stmt->get()) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt->get(), 0);
    out.push_back(text != nullptr ? reinterpret_cast<const char*>(text) : "NULL");
  }
  return out;
}

// The version records of `outbox`: "version name courier_version".
std::vector<std::string> Recorded(const TestDb& db, const std::string& outbox = "courier_outbox") {
  return Query(db, "SELECT version || ' ' || name || ' ' || courier_version FROM " +
                       QuoteIdent(SchemaVersionsTable(TableNames{.outbox = outbox})) +
                       " ORDER BY version");
}

// Everything migrate made, but the version table: every column with its type, nullability
// and default, every index and constraint, the UUID function (PostgreSQL); the stored DDL
// (SQLite). And the rows of every table.
std::vector<std::string> Snapshot(const TestDb& db) {
  std::vector<std::string> out;
  if (db.postgres) {
    out = Query(db,
                "SELECT c.relname || ' ' || c.relkind::text || ' ' || a.attnum || ' ' || a.attname "
                "|| ' ' ||"
                " format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' ' ||"
                " coalesce(pg_get_expr(d.adbin, d.adrelid), '-')"
                " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
                " AND NOT a.attisdropped LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND"
                " d.adnum = a.attnum WHERE c.relnamespace = 'public'::regnamespace AND"
                " c.relname NOT LIKE '%\\_schema%'"
                " UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND"
                " indexname NOT LIKE '%\\_schema%'"
                " UNION ALL SELECT conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM"
                " pg_constraint WHERE connamespace = 'public'::regnamespace AND conname NOT LIKE"
                " '%\\_schema%'"
                " UNION ALL SELECT pg_get_functiondef('courier_uuid_v7'::regproc) ORDER BY 1");
  } else {
    out = Query(db,
                "SELECT type || ' ' || name || ' ' || coalesce(sql, '-') FROM sqlite_master"
                " WHERE name NOT LIKE '%\\_schema%' ESCAPE '\\' ORDER BY name");
  }
  for (const std::string sql :
       {"SELECT 'outbox ' || id || ' ' || event_id || ' ' || aggregate_id || ' ' || payload ||"
        " ' ' || created_at FROM courier_outbox ORDER BY id",
        "SELECT 'dead letter ' || id || ' ' || outbox || ' ' || outbox_id || ' ' || event_id ||"
        " ' ' || error || ' ' || status || ' ' || attempts FROM courier_dead_letter ORDER BY id",
        "SELECT 'inbox ' || consumer || ' ' || event_id || ' ' || processed_at FROM"
        " courier_inbox ORDER BY 1"}) {
    for (const std::string& row : Query(db, sql)) out.push_back(row);
  }
  return out;
}

// A dead letter, an inbox row and two events, for tests that check rows survive.
void AddRows(const TestDb& db) {
  ASSERT_OK(db.Transaction(
      {InsertEventSql(NewUuidV7(), "agg-0", 1), InsertEventSql(NewUuidV7(), "agg-1", 2),
       "INSERT INTO courier_dead_letter (outbox, outbox_id, event_id, aggregate_type,"
       " aggregate_id, event_type, payload, created_at, error, sink) VALUES ('courier_outbox', 7,"
       " '" +
           NewUuidV7() +
           "', 'order', 'agg-0', 'Happened', '{}', '2026-01-01T00:00:00Z', 'too large',"
           " 'kafka://x/t')",
       "INSERT INTO courier_inbox (consumer, event_id) VALUES ('billing', 'e-1')"}));
}

// The version `courier --version` prints: what migrate records as courier_version.
std::string CourierVersion() {
  const CommandResult r = RunCourier({"--version"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const size_t space = r.out.find(' ');
  return space == std::string::npos ? "" : r.out.substr(space + 1, r.out.find('\n') - space - 1);
}

std::vector<std::string> WithVersion(std::vector<std::string> names) {
  const std::string version = CourierVersion();
  for (std::string& n : names) n += " " + version;
  return names;
}

TEST_P(SchemaVersions, FreshDatabaseRecordsEveryVersionThenAppliesNothing) {
  TestDb db;
  ASSERT_NO_FATAL_FAILURE(EmptyDatabase(&db));
  MigrateReport first;
  ASSERT_OK(Migrate(db.url, TableNames{}, CdcOptions{}, nullptr, &first));
  EXPECT_EQ(Names(first.applied), Known());
  EXPECT_EQ(first.recorded_before, 0);
  EXPECT_EQ(first.version, static_cast<int>(Known().size()));
  EXPECT_TRUE(first.existing.empty());
  EXPECT_EQ(Recorded(db), WithVersion(Known()));
  const std::vector<std::string> applied_at =
      Query(db, "SELECT applied_at FROM courier_outbox_schema ORDER BY version");
  const std::vector<std::string> before = Snapshot(db);

  MigrateReport second;
  ASSERT_OK(Migrate(db.url, TableNames{}, CdcOptions{}, nullptr, &second));
  EXPECT_TRUE(second.applied.empty()) << testing::PrintToString(Names(second.applied));
  EXPECT_EQ(second.recorded_before, static_cast<int>(Known().size()));
  EXPECT_EQ(second.version, static_cast<int>(Known().size()));
  EXPECT_TRUE(second.created.empty());
  EXPECT_EQ(Query(db, "SELECT applied_at FROM courier_outbox_schema ORDER BY version"), applied_at);
  EXPECT_EQ(Snapshot(db), before);
}

// A database an earlier courier migrated has the tables but no version table: every
// migration runs over what is there, is recorded, and changes no table and no row.
TEST_P(SchemaVersions, DatabaseOfAnEarlierCourierIsAdoptedUnchanged) {
  TestDb db = TestDb::Make(postgres());
  AddRows(db);
  ASSERT_OK(db.Transaction({"DROP TABLE courier_outbox_schema"}));
  const std::vector<std::string> before = Snapshot(db);
  ASSERT_GE(before.size(), 10u);

  MigrateReport report;
  ASSERT_OK(Migrate(db.url, TableNames{}, CdcOptions{}, nullptr, &report));
  EXPECT_EQ(Names(report.applied), Known());
  EXPECT_EQ(report.recorded_before, 0);
  EXPECT_TRUE(report.created.empty()) << testing::PrintToString(report.created);
  EXPECT_EQ(Recorded(db), WithVersion(Known()));
  EXPECT_EQ(Snapshot(db), before);
}

// A version above what this courier knows: one line, exit 2, and nothing changes (not even
// a table migrate would otherwise create again).
TEST_P(SchemaVersions, NewerRecordedVersionIsRefusedAndNothingChanges) {
  TestDb db = TestDb::Make(postgres());
  AddRows(db);
  ASSERT_OK(
      db.Transaction({"INSERT INTO courier_outbox_schema (version, name, courier_version)"
                      " VALUES (99, 'future', '9.9.9')",
                      "DROP TABLE courier_inbox_parked"}));
  const std::vector<std::string> before = Snapshot(db);
  const std::vector<std::string> recorded = Recorded(db);
  const CommandResult r = RunCourier({"migrate", "--source", db.url});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            "courier: error: table \"courier_outbox\" is at schema version 99 (recorded in"
            " \"courier_outbox_schema\"), this courier knows up to " +
                std::to_string(Known().size()) + ": upgrade courier\n");
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(Snapshot(db), before);
  EXPECT_EQ(Recorded(db), recorded);
  EXPECT_EQ(Query(db, "SELECT count(*) FROM courier_outbox_schema"),
            std::vector<std::string>{std::to_string(Known().size() + 1)});
}

// Each outbox has its own version table; migrating one never records or applies for another.
TEST_P(SchemaVersions, TwoOutboxesInOneDatabaseKeepSeparateRecords) {
  TestDb db = TestDb::Make(postgres());
  TableNames b;
  b.outbox = "b_outbox";
  MigrateReport report_b;
  ASSERT_OK(Migrate(db.url, b, CdcOptions{}, nullptr, &report_b));
  EXPECT_EQ(Names(report_b.applied), Known()) << "b has no record yet";
  EXPECT_EQ(Recorded(db, "b_outbox"), WithVersion(Known()));
  EXPECT_EQ(Recorded(db), WithVersion(Known()));

  ASSERT_OK(db.Transaction({"DROP TABLE b_outbox_schema"}));
  MigrateReport report_a;
  ASSERT_OK(Migrate(db.url, TableNames{}, CdcOptions{}, nullptr, &report_a));
  EXPECT_TRUE(report_a.applied.empty());
  EXPECT_EQ(
      Query(db, postgres() ? "SELECT count(*) FROM pg_class WHERE relname = 'b_outbox_schema'"
                           : "SELECT count(*) FROM sqlite_master WHERE name = 'b_outbox_schema'"),
      std::vector<std::string>{"0"})
      << "migrating a did not make b's record";
  ASSERT_OK(Migrate(db.url, b, CdcOptions{}, nullptr, &report_b));
  EXPECT_EQ(Names(report_b.applied), Known());
  EXPECT_EQ(Recorded(db), WithVersion(Known()));
}

// Migrates started at once (each its own connection, as separate processes would be):
// each version is applied by exactly one of them, and recorded once.
TEST_P(SchemaVersions, ConcurrentMigratesApplyEachVersionOnce) {
  TestDb db;
  ASSERT_NO_FATAL_FAILURE(EmptyDatabase(&db));
  constexpr int kRuns = 4;
  std::vector<MigrateReport> reports(kRuns);
  std::vector<Status> results(kRuns);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRuns; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kRuns) std::this_thread::yield();
      results[i] = Migrate(db.url, TableNames{}, CdcOptions{}, nullptr, &reports[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> applied;
  for (int i = 0; i < kRuns; ++i) {
    ASSERT_OK(results[i]);
    for (const std::string& name : Names(reports[i].applied)) applied.push_back(name);
    EXPECT_EQ(reports[i].version, static_cast<int>(Known().size()));
  }
  std::sort(applied.begin(), applied.end());
  EXPECT_EQ(applied, Known());
  EXPECT_EQ(Recorded(db), WithVersion(Known()));
}

// A dead-letter table of a new name after the versions are recorded is still created:
// a migration is applied again when a table it creates is missing.
TEST_P(SchemaVersions, TableOfANewNameIsCreatedAfterTheVersionsAreRecorded) {
  TestDb db = TestDb::Make(postgres());
  TableNames t;
  t.dead_letter = "other_dead_letter";
  MigrateReport report;
  ASSERT_OK(Migrate(db.url, t, CdcOptions{}, nullptr, &report));
  EXPECT_EQ(Names(report.applied), std::vector<std::string>{"2 dead_letters"});
  EXPECT_EQ(report.created, std::vector<std::string>{"other_dead_letter"});
  EXPECT_EQ(db.Count("other_dead_letter"), 0);
  EXPECT_EQ(Recorded(db), WithVersion(Known()));
}

INSTANTIATE_TEST_SUITE_P(Databases, SchemaVersions, ::testing::Values(true, false),
                         [](const auto& info) {
                           return std::string(info.param ? "Postgres" : "Sqlite");
                         });

// `courier migrate` prints the version it left the database at and what it applied.
TEST(SchemaVersionsCli, MigratePrintsTheVersionAndWhatItApplied) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  const CommandResult first = RunCourier({"migrate", "--source", *url, "--table", "orders"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("\nschema version 8 (orders_schema): applied 1 outbox, 2 dead_letters,"
                           " 3 leases, 4 inbox, 5 cdc_bookkeeping, 6 cdc_capture, 7 "
                           "cdc_capture_snapshot, 8 cdc_capture_backfill\n"),
            std::string::npos)
      << first.out;
  const CommandResult again = RunCourier({"migrate", "--source", *url, "--table", "orders"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("\nschema version 8 (orders_schema): up to date\n"), std::string::npos)
      << again.out;
}

// A role that may not create tables where the outbox goes: one line naming the grant,
// exit 2, nothing created.
TEST(SchemaVersionsCli, RoleWithoutCreateGetsOneClearLine) {
  TestDb db;
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  db.url = *url;
  const std::string role = "nocreate_" + db.url.substr(db.url.rfind('/') + 1);
  ASSERT_OK(PgQuery(db.url, "CREATE ROLE " + role + " LOGIN"));
  std::string as_role = db.url;
  as_role.replace(as_role.find("postgres@"), 9, role + "@");
  const CommandResult r = RunCourier({"migrate", "--source", as_role});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "courier: error: migrate \"courier_outbox\": role \"" + role +
                       "\" may not create tables in schema \"public\": run courier migrate as the"
                       " schema's owner, or GRANT CREATE ON SCHEMA \"public\" TO \"" +
                       role + "\"\n");
  auto nothing = PgQuery(db.url,
                         "SELECT to_regclass('courier_outbox') IS NULL AND"
                         " to_regclass('courier_outbox_schema') IS NULL");
  ASSERT_OK(nothing);
  EXPECT_EQ(*nothing, std::vector<std::string>{"t"}) << "nothing created";
}

}  // namespace
}  // namespace courier::test
