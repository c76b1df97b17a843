// Table capture's decoding (sources/cdc/capture.h) and the --capture list
// (sources/cdc/capture_setup.h), without a database: relations keyed by the columns pgoutput
// flags (no catalog to look the primary key up in).
#include "sources/cdc/capture.h"

#include <gtest/gtest.h>

#include "sources/cdc/capture_setup.h"
#include "support/matchers.h"

namespace courier::cdc {
namespace {

constexpr uint32_t kProducts = 16390;
constexpr uint32_t kInt4 = 23;
constexpr uint32_t kText = 25;

pgoutput::Relation Products(char identity = 'd') {
  pgoutput::Relation r;
  r.id = kProducts;
  r.schema = "public";
  r.name = "products";
  r.replica_identity = identity;
  r.columns = {{"id", kInt4, -1, true},
               {"name", kText, -1, identity == 'f'},
               {"body", kText, -1, identity == 'f'}};
  return r;
}

pgoutput::Value Text(std::string_view text) { return {pgoutput::Value::Kind::kText, text}; }
pgoutput::Value Null() { return {}; }
pgoutput::Value Toast() { return {pgoutput::Value::Kind::kUnchangedToast, {}}; }

pgoutput::Message Begin() {
  pgoutput::Message b;
  b.kind = pgoutput::Message::Kind::kBegin;
  b.final_lsn = 0x16B3748;
  b.xid = 742;
  b.commit_time_us = 1795456201500000;
  return b;
}

pgoutput::Message Change(pgoutput::Message::Kind kind, std::vector<pgoutput::Value> values,
                         char old_kind = 0, std::vector<pgoutput::Value> old_values = {}) {
  pgoutput::Message m;
  m.kind = kind;
  m.relation_id = kProducts;
  m.values = std::move(values);
  m.old_kind = old_kind;
  m.old_values = std::move(old_values);
  return m;
}

std::string Dump(const std::optional<std::vector<ColumnValue>>& image) {
  if (!image) return "none";
  std::string out;
  for (const ColumnValue& c : *image) out += (out.empty() ? "" : " ") + c.name + "=" + c.json;
  return out;
}

class TableCaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    capture_.SetTables({kProducts});
    ASSERT_OK(capture_.OnRelation(Products(), nullptr));
    capture_.Begin(Begin());
  }
  std::vector<RowChange> On(const pgoutput::Message& m) {
    std::vector<RowChange> out;
    capture_.OnChange(m, &out);
    return out;
  }
  TableCapture capture_;
};

TEST_F(TableCaptureTest, InsertIsTheNewRowPositionedInItsTransaction) {
  const auto first =
      On(Change(pgoutput::Message::Kind::kInsert, {Text("7"), Text("lamp"), Null()}));
  ASSERT_EQ(first.size(), 1u);
  const RowChange& c = first[0];
  EXPECT_EQ(c.op, RowChange::Op::kInsert);
  EXPECT_EQ(c.schema, "public");
  EXPECT_EQ(c.table, "products");
  EXPECT_EQ(c.key_columns, std::vector<std::string>{"id"});
  EXPECT_EQ(Dump(c.after), "id=7 name=\"lamp\" body=null");
  EXPECT_FALSE(c.before.has_value());
  EXPECT_EQ(c.commit_lsn, 0x16B3748u);
  EXPECT_EQ(c.xid, 742u);
  EXPECT_EQ(c.commit_time_us, 1795456201500000);
  EXPECT_EQ(c.position, 1u);
  EXPECT_FALSE(c.snapshot);
  const auto second =
      On(Change(pgoutput::Message::Kind::kInsert, {Text("8"), Text("desk"), Null()}));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].position, 2u);
  capture_.Begin(Begin());
  EXPECT_EQ(On(Change(pgoutput::Message::Kind::kInsert, {Text("9"), Null(), Null()}))[0].position,
            1u)
      << "positions count from 1 in every transaction";
}

TEST_F(TableCaptureTest, OtherTablesAreNotCaptured) {
  pgoutput::Message m = Change(pgoutput::Message::Kind::kInsert, {Text("1")});
  m.relation_id = 99;
  EXPECT_TRUE(On(m).empty());
  TableCapture unset;
  std::vector<RowChange> out;
  ASSERT_OK(unset.OnRelation(Products(), nullptr));
  unset.OnChange(Change(pgoutput::Message::Kind::kInsert, {Text("1"), Null(), Null()}), &out);
  EXPECT_TRUE(out.empty()) << "a relation of the publication that is not captured";
}

TEST_F(TableCaptureTest, UpdateWithoutOldTupleHasTheKeyAsBeforeAndListsUnchangedToast) {
  const auto out = On(Change(pgoutput::Message::Kind::kUpdate, {Text("7"), Text("lamp"), Toast()}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].op, RowChange::Op::kUpdate);
  EXPECT_EQ(Dump(out[0].before), "id=7");
  EXPECT_EQ(Dump(out[0].after), "id=7 name=\"lamp\"") << "never a placeholder";
  EXPECT_EQ(out[0].unavailable, std::vector<std::string>{"body"});
}

// Without a catalog (no connection) the key is what pgoutput flags: no primary key known, so
// the update stays one event carrying the old key. With the primary key from the catalog it is
// a delete of the old key and an insert of the new (TableCdcTest.PrimaryKeyUpdate...).
TEST_F(TableCaptureTest, UpdateOfTheKeyCarriesTheOldKey) {
  const auto out = On(Change(pgoutput::Message::Kind::kUpdate, {Text("8"), Text("lamp"), Null()},
                             'K', {Text("7"), Null(), Null()}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Dump(out[0].before), "id=7");
  EXPECT_EQ(Dump(out[0].after), "id=8 name=\"lamp\" body=null");
}

TEST_F(TableCaptureTest, UnchangedToastComesFromTheOldRowUnderReplicaIdentityFull) {
  ASSERT_OK(capture_.OnRelation(Products('f'), nullptr));
  const std::string big(100000, 'x');
  const auto out = On(Change(pgoutput::Message::Kind::kUpdate, {Text("7"), Text("lamp 2"), Toast()},
                             'O', {Text("7"), Text("lamp"), Text(big)}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].unavailable.empty());
  ASSERT_TRUE(out[0].after.has_value());
  ASSERT_EQ(out[0].after->size(), 3u);
  EXPECT_EQ((*out[0].after)[2].json, "\"" + big + "\"");
  EXPECT_EQ(Dump(out[0].before), "id=7 name=\"lamp\" body=\"" + big + "\"");
  // Every column is flagged as key under FULL: without a catalog, all of them key the row.
  EXPECT_EQ(out[0].key_columns, (std::vector<std::string>{"id", "name", "body"}));
}

TEST_F(TableCaptureTest, DeleteCarriesTheOldKeyOrTheOldRow) {
  auto key = On(Change(pgoutput::Message::Kind::kDelete, {}, 'K', {Text("7"), Null(), Null()}));
  ASSERT_EQ(key.size(), 1u);
  EXPECT_EQ(key[0].op, RowChange::Op::kDelete);
  EXPECT_EQ(Dump(key[0].before), "id=7");
  EXPECT_FALSE(key[0].after.has_value());
  auto row =
      On(Change(pgoutput::Message::Kind::kDelete, {}, 'O', {Text("7"), Text("lamp"), Null()}));
  EXPECT_EQ(Dump(row[0].before), "id=7 name=\"lamp\" body=null");
}

TEST_F(TableCaptureTest, TruncateIsOneChangePerCapturedTable) {
  pgoutput::Message t;
  t.kind = pgoutput::Message::Kind::kTruncate;
  t.relation_ids = {99, kProducts};
  const auto out = On(t);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].op, RowChange::Op::kTruncate);
  EXPECT_EQ(out[0].table, "products");
  EXPECT_FALSE(out[0].before.has_value());
  EXPECT_FALSE(out[0].after.has_value());
}

TEST_F(TableCaptureTest, ANewRelationMessageGivesLaterChangesTheNewShape) {
  pgoutput::Relation added = Products();
  added.columns.push_back({"price", 1700, -1, false});
  ASSERT_OK(capture_.OnRelation(added, nullptr));
  auto out =
      On(Change(pgoutput::Message::Kind::kInsert, {Text("7"), Text("lamp"), Null(), Text("9.50")}));
  EXPECT_EQ(Dump(out[0].after).substr(0, 33), "id=7 name=\"lamp\" body=null price=");
  pgoutput::Relation renamed = Products();
  renamed.columns[1].name = "title";
  renamed.columns.pop_back();
  ASSERT_OK(capture_.OnRelation(renamed, nullptr));
  out = On(Change(pgoutput::Message::Kind::kInsert, {Text("8"), Text("desk")}));
  EXPECT_EQ(Dump(out[0].after), "id=8 title=\"desk\"");
}

TEST(CaptureList, SplitsOnCommasOutsideParenthesesAndQuotes) {
  auto specs = ParseCaptureList(
      {"public.products, public.orders (id, status) WHERE (status <> 'a,b' AND id > 0)",
       "\"Odd, Name\".t WHERE (x IN (1, 2))"});
  ASSERT_OK(specs);
  ASSERT_EQ(specs->size(), 3u);
  EXPECT_EQ((*specs)[0].table, "public.products");
  EXPECT_EQ((*specs)[0].columns, "");
  EXPECT_EQ((*specs)[0].where, "");
  EXPECT_EQ((*specs)[1].table, "public.orders");
  EXPECT_EQ((*specs)[1].columns, "(id, status)");
  EXPECT_EQ((*specs)[1].where, "((status <> 'a,b' AND id > 0))");
  EXPECT_EQ((*specs)[2].table, "\"Odd, Name\".t");
  EXPECT_EQ((*specs)[2].where, "((x IN (1, 2)))");
}

TEST(CaptureList, ColumnListWithoutSpaceAndLowerCaseWhere) {
  auto specs = ParseCaptureList({"orders(id,status) where status <> 'draft'"});
  ASSERT_OK(specs);
  ASSERT_EQ(specs->size(), 1u);
  EXPECT_EQ((*specs)[0].table, "orders");
  EXPECT_EQ((*specs)[0].columns, "(id,status)");
  EXPECT_EQ((*specs)[0].where, "(status <> 'draft')");
}

TEST(CaptureList, RefusesWhatItCannotRead) {
  EXPECT_STATUS(ParseCaptureList({"public.orders WHERE (status <> 'x"}),
                StatusCode::kInvalidArgument);
  auto junk = ParseCaptureList({"public.orders junk"});
  EXPECT_EQ(junk.status().message(),
            "--capture 'public.orders junk': unexpected 'junk'; write TABLE [(COLUMN, ...)] "
            "[WHERE (CONDITION)], entries separated by commas");
  EXPECT_STATUS(ParseCaptureList({"orders WHERE"}), StatusCode::kInvalidArgument);
  EXPECT_STATUS(ParseCaptureList({"orders (id"}), StatusCode::kInvalidArgument);
  // An empty entry is a typo (or an unset variable), not "capture nothing".
  EXPECT_EQ(ParseCaptureList({"a,,b"}).status().message(),
            "--capture 'a,,b': an empty entry (no table between two commas, or none at all); "
            "write TABLE [(COLUMN, ...)] [WHERE (CONDITION)], entries separated by commas");
  EXPECT_STATUS(ParseCaptureList({" , "}), StatusCode::kInvalidArgument);
  EXPECT_STATUS(ParseCaptureList({""}), StatusCode::kInvalidArgument);
  EXPECT_STATUS(ParseCaptureList({"a,"}), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace courier::cdc
