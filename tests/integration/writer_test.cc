// The outbox writer and the table contract, against real PostgreSQL and SQLite.
#include "courier/outbox.h"

#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

OutboxEvent Created(const std::string& id) {
  return OutboxEvent{.aggregate_type = "order",
                     .aggregate_id = id,
                     .event_type = "OrderCreated",
                     .payload = "{\"id\":\"" + id + "\"}",
                     .headers = {{"trace_id", "t-1"}}};
}

TEST(Migrate, IsIdempotentAndQuotesConfiguredNames) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  ASSERT_OK(PgQuery(*url, "CREATE SCHEMA app"));
  const TableNames names{
      .outbox = "app.Order Events", .dead_letter = "app.Parked \"Events\"", .inbox = "app.Inbox"};
  ASSERT_OK(Migrate(*url, names));
  ASSERT_OK(Migrate(*url, names));
  ASSERT_OK(Migrate(*url, TableNames{}));
  auto tables = PgQuery(*url,
                        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                        "WHERE table_schema IN ('app', 'public') ORDER BY 1");
  ASSERT_OK(tables);
  EXPECT_EQ(
      *tables,
      (std::vector<std::string>{
          "app.Inbox", "app.Inbox_parked", "app.Order Events", "app.Order Events_cdc_backfill",
          "app.Order Events_cdc_capture", "app.Order Events_cdc_slot", "app.Order Events_lease",
          "app.Order Events_schema", "app.Parked \"Events\"", "public.courier_dead_letter",
          "public.courier_inbox", "public.courier_inbox_parked", "public.courier_outbox",
          "public.courier_outbox_cdc_backfill", "public.courier_outbox_cdc_capture",
          "public.courier_outbox_cdc_slot", "public.courier_outbox_lease",
          "public.courier_outbox_schema"}));
}

TEST(Migrate, SqliteIsIdempotent) {
  TempDir dir;
  const std::string url = "sqlite://" + dir.File("a.db");
  ASSERT_OK(Migrate(url, TableNames{}));
  ASSERT_OK(Migrate(url, TableNames{}));
}

TEST(PostgresWriter, EventCommitsAndRollsBackWithTheBusinessRows) {
  TestDb db = TestDb::Make(true);
  ASSERT_OK(PgQuery(db.url, "CREATE TABLE orders (id text PRIMARY KEY)"));
  auto conn = PgConnect(db.url);
  ASSERT_OK(conn);
  OutboxWriter writer;

  ASSERT_OK(PgRun(conn->get(), "BEGIN; INSERT INTO orders VALUES ('a')"));
  ASSERT_OK(writer.Append(conn->get(), Created("a")));
  ASSERT_OK(PgRun(conn->get(), "ROLLBACK"));
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  EXPECT_EQ(db.Count("orders"), 0);

  ASSERT_OK(PgRun(conn->get(), "BEGIN; INSERT INTO orders VALUES ('b')"));
  auto id = writer.Append(conn->get(), Created("b"));
  ASSERT_OK(id);
  ASSERT_OK(PgRun(conn->get(), "COMMIT"));
  EXPECT_TRUE(IsUuid(*id));
  auto row = PgQuery(db.url,
                     "SELECT event_id || '|' || aggregate_id || '|' || payload::text || '|' || "
                     "(headers->>'trace_id') FROM courier_outbox");
  ASSERT_OK(row);
  ASSERT_EQ(row->size(), 1u);
  EXPECT_EQ((*row)[0], *id + "|b|{\"id\":\"b\"}|t-1");
}

TEST(PostgresWriter, RefusesToWriteOutsideATransaction) {
  TestDb db = TestDb::Make(true);
  auto conn = PgConnect(db.url);
  ASSERT_OK(conn);
  EXPECT_STATUS(OutboxWriter().Append(conn->get(), Created("x")), StatusCode::kFailedPrecondition);
  EXPECT_EQ(db.Count("courier_outbox"), 0);
}

TEST(PostgresWriter, MissingTableSaysToMigrate) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  auto conn = PgConnect(*url);
  ASSERT_OK(conn);
  ASSERT_OK(PgRun(conn->get(), "BEGIN"));
  auto id = OutboxWriter().Append(conn->get(), Created("x"));
  EXPECT_STATUS(id, StatusCode::kNotFound);
  EXPECT_NE(id.status().message().find("courier migrate"), std::string::npos);
}

TEST(PlainSqlContract, PostgresDefaultsEventIdAndCreatedAt) {
  TestDb db = TestDb::Make(true);
  ASSERT_OK(
      db.Transaction({"INSERT INTO courier_outbox (aggregate_type, aggregate_id, "
                      "event_type, payload) VALUES ('order', '7', 'OrderCreated', "
                      "'{\"total\": 12.5}')"}));
  auto row = PgQuery(db.url,
                     "SELECT event_id::text || '|' || (created_at > now() - interval '1 minute') "
                     "|| '|' || payload::text FROM courier_outbox");
  ASSERT_OK(row);
  ASSERT_EQ(row->size(), 1u);
  const std::string& r = (*row)[0];
  EXPECT_TRUE(IsUuid(r.substr(0, 36))) << r;
  EXPECT_EQ(r[14], '7') << "event_id defaults to a UUIDv7: " << r;
  // The json column keeps the payload text exactly as written.
  EXPECT_EQ(r.substr(36), "|true|{\"total\": 12.5}");
}

TEST(PlainSqlContract, PostgresRejectsMalformedJsonAtInsert) {
  TestDb db = TestDb::Make(true);
  Status st =
      db.Transaction({"INSERT INTO courier_outbox (aggregate_type, aggregate_id, "
                      "event_type, payload) VALUES ('order', '7', 'X', '{oops')"});
  EXPECT_STATUS(st, StatusCode::kInvalidArgument);
  EXPECT_EQ(db.Count("courier_outbox"), 0);
}

TEST(SqliteWriter, EventCommitsAndRollsBackWithTheBusinessRows) {
  TestDb db = TestDb::Make(false);
  auto lite = SqliteOpen(db.url.substr(9), false);
  ASSERT_OK(lite);
  sqlite3* h = lite->get();
  ASSERT_OK(SqliteExec(h, "CREATE TABLE orders (id TEXT PRIMARY KEY)"));
  OutboxWriter writer;
  EXPECT_STATUS(writer.Append(h, Created("x")), StatusCode::kFailedPrecondition);

  ASSERT_OK(SqliteExec(h, "BEGIN; INSERT INTO orders VALUES ('a')"));
  ASSERT_OK(writer.Append(h, Created("a")));
  ASSERT_OK(SqliteExec(h, "ROLLBACK"));
  EXPECT_EQ(db.Count("courier_outbox"), 0);

  ASSERT_OK(SqliteExec(h, "BEGIN; INSERT INTO orders VALUES ('b')"));
  auto id = writer.Append(h, Created("b"));
  ASSERT_OK(id);
  ASSERT_OK(SqliteExec(h, "COMMIT"));
  EXPECT_EQ(db.Count("courier_outbox WHERE event_id = '" + *id + "' AND aggregate_id = 'b'"), 1);
}

TEST(PlainSqlContract, SqliteDefaultsEventIdAndCreatedAt) {
  TestDb db = TestDb::Make(false);
  ASSERT_OK(
      db.Transaction({"INSERT INTO courier_outbox (aggregate_type, aggregate_id, "
                      "event_type, payload) VALUES ('order', '7', 'OrderCreated', '{}')"}));
  auto lite = SqliteOpen(db.url.substr(9), false);
  ASSERT_OK(lite);
  auto stmt = SqlitePrepare(lite->get(), "SELECT event_id, created_at FROM courier_outbox");
  ASSERT_OK(stmt);
  ASSERT_EQ(sqlite3_step(stmt->get()), SQLITE_ROW);
  const std::string event_id = reinterpret_cast<const char*>(sqlite3_column_text(stmt->get(), 0));
  EXPECT_TRUE(IsUuid(event_id)) << event_id;
  EXPECT_EQ(event_id[14], '4') << event_id;
  EXPECT_NE(sqlite3_column_text(stmt->get(), 1), nullptr);
}

}  // namespace
}  // namespace courier::test
