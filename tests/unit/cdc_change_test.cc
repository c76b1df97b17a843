// RenderChange (sources/cdc/change.h): the event of a table change, in courier's shape and in
// Debezium's envelope, for each operation.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "core/uuid.h"
#include "sources/cdc/change.h"

namespace courier::cdc {
namespace {

using nlohmann::json;

constexpr uint64_t kSystem = 7300000000000000001ULL;
constexpr int64_t kCommitUs = 1795731503123456;  // 2026-11-26T22:18:23.123456Z

RowChange Products(RowChange::Op op) {
  RowChange c;
  c.op = op;
  c.database = "shop";
  c.schema = "public";
  c.table = "products";
  c.key_columns = {"id"};
  c.commit_lsn = 0x16B3748;
  c.position = 3;
  c.xid = 742;
  c.commit_time_us = kCommitUs;
  const std::vector<ColumnValue> row = {
      {"id", "42"}, {"name", "\"Tea\""}, {"price", "12345678901234567890.0100"}};
  if (op == RowChange::Op::kUpdate || op == RowChange::Op::kDelete) c.before = row;
  if (op != RowChange::Op::kDelete && op != RowChange::Op::kTruncate) c.after = row;
  if (op == RowChange::Op::kRead) c.snapshot = true, c.xid = 0;
  if (op == RowChange::Op::kTruncate) c.key_columns.clear();
  return c;
}

Event Render(const RowChange& c, ChangeFormat f = ChangeFormat::kCourier) {
  Event e;
  RenderChange(c, f, kSystem, &e);
  return e;
}

TEST(CdcChange, InsertInCouriersShape) {
  const Event e = Render(Products(RowChange::Op::kInsert));
  EXPECT_TRUE(e.table_change);
  EXPECT_EQ(e.aggregate_type, "products");
  EXPECT_EQ(e.aggregate_id, "42");
  EXPECT_EQ(e.event_type, "insert");
  EXPECT_TRUE(IsUuid(e.event_id)) << e.event_id;
  EXPECT_EQ(e.version.major, 0x16B3748u);
  EXPECT_EQ(e.version.minor, 3u);
  EXPECT_EQ(e.created_at_us, kCommitUs);
  // Values are written as RenderColumn made them: the numeric keeps all its digits.
  EXPECT_EQ(e.payload,
            R"({"op":"insert","before":null,"after":{"id":42,"name":"Tea",)"
            R"("price":12345678901234567890.0100},"source":{"lsn":"0/16B3748","xid":742,)"
            R"("commit_time":"2026-11-26T22:18:23.123456Z","schema":"public",)"
            R"("table":"products","snapshot":false}})");
}

TEST(CdcChange, UpdateDeleteReadAndTruncate) {
  RowChange u = Products(RowChange::Op::kUpdate);
  u.unavailable = {"description"};
  json p = json::parse(Render(u).payload);
  EXPECT_EQ(p["op"], "update");
  EXPECT_EQ(p["before"]["name"], "Tea");
  EXPECT_EQ(p["after"]["id"], 42);
  EXPECT_EQ(p["unavailable"], json::array({"description"}));

  const Event d = Render(Products(RowChange::Op::kDelete));
  EXPECT_EQ(d.event_type, "delete");
  EXPECT_EQ(d.aggregate_id, "42");  // from the old row
  p = json::parse(d.payload);
  EXPECT_TRUE(p["after"].is_null());
  EXPECT_EQ(p["before"]["id"], 42);

  const Event r = Render(Products(RowChange::Op::kRead));
  EXPECT_EQ(r.event_type, "read");
  p = json::parse(r.payload);
  EXPECT_EQ(p["source"]["snapshot"], true);
  EXPECT_EQ(p["source"]["xid"], 0);

  const Event t = Render(Products(RowChange::Op::kTruncate));
  EXPECT_EQ(t.event_type, "truncate");
  EXPECT_EQ(t.aggregate_id, "");
  p = json::parse(t.payload);
  EXPECT_TRUE(p["before"].is_null());
  EXPECT_TRUE(p["after"].is_null());
  EXPECT_EQ(p["source"]["table"], "products");
}

TEST(CdcChange, AggregateTypeAndIdOfKeys) {
  RowChange c = Products(RowChange::Op::kInsert);
  c.schema = "sales";
  c.after = std::vector<ColumnValue>{{"id", "\"a\\\"b\""}, {"region", "\"eu\""}, {"n", "7"}};
  EXPECT_EQ(Render(c).aggregate_type, "sales.products");
  EXPECT_EQ(Render(c).aggregate_id, "a\"b");  // a string key unquoted
  c.key_columns = {"n", "region"};
  EXPECT_EQ(Render(c).aggregate_id, R"([7,"eu"])");
}

TEST(CdcChange, EventIdsAreStableAndDistinct) {
  // The stub's id of lsn+position collided: (100, 2) and (101, 1). Every pair here is distinct.
  std::set<std::string> ids;
  for (uint64_t lsn : {100ULL, 101ULL, 102ULL, 0x16B3748ULL, ~0ULL}) {
    for (uint64_t pos : {0ULL, 1ULL, 2ULL, 3ULL, 1ULL << 40}) {
      const std::string id = ChangeEventId(lsn, pos, kSystem);
      EXPECT_TRUE(IsUuid(id)) << id;
      EXPECT_EQ(id[14], '8');  // version 8
      EXPECT_TRUE(ids.insert(id).second) << lsn << "/" << pos;
      EXPECT_EQ(id, ChangeEventId(lsn, pos, kSystem));
    }
  }
  EXPECT_NE(ChangeEventId(100, 1, kSystem), ChangeEventId(100, 1, kSystem + 1));
  RowChange a = Products(RowChange::Op::kInsert), b = a;
  a.commit_lsn = 100, a.position = 2, b.commit_lsn = 101, b.position = 1;
  EXPECT_NE(Render(a).event_id, Render(b).event_id);
}

TEST(CdcChange, DebeziumEnvelope) {
  const Event e = Render(Products(RowChange::Op::kInsert), ChangeFormat::kDebezium);
  EXPECT_EQ(e.event_type, "insert");  // courier's names in both formats
  EXPECT_EQ(e.aggregate_id, R"({"id":42})");
  std::string payload = e.payload;
  const size_t v = payload.find("\"courier-");
  ASSERT_NE(v, std::string::npos);
  payload.replace(v + 9, payload.find('"', v + 1) - v - 9, "V");
  EXPECT_EQ(payload,
            R"({"before":null,"after":{"id":42,"name":"Tea","price":12345678901234567890.0100},)"
            R"("source":{"version":"courier-V","connector":"postgresql",)"
            R"("name":"courier","ts_ms":1795731503123,"snapshot":"false","db":"shop",)"
            R"("sequence":"[\"23803720\",\"23803720\"]","schema":"public","table":"products",)"
            R"("txId":742,"lsn":23803720,"xmin":null},"op":"c","ts_ms":1795731503123,)"
            R"("transaction":null})");

  const struct {
    RowChange::Op op;
    const char* code;
  } kOps[] = {{RowChange::Op::kUpdate, "u"},
              {RowChange::Op::kDelete, "d"},
              {RowChange::Op::kRead, "r"},
              {RowChange::Op::kTruncate, "t"}};
  for (const auto& [op, code] : kOps) {
    const Event ev = Render(Products(op), ChangeFormat::kDebezium);
    const json p = json::parse(ev.payload);
    EXPECT_EQ(p["op"], code);
    EXPECT_EQ(p["source"]["snapshot"], op == RowChange::Op::kRead ? "true" : "false");
    if (op == RowChange::Op::kTruncate) {
      EXPECT_EQ(ev.aggregate_id, "");
      EXPECT_TRUE(p["before"].is_null() && p["after"].is_null());
    } else {
      EXPECT_EQ(ev.aggregate_id, R"({"id":42})");
    }
    if (op == RowChange::Op::kRead) {
      EXPECT_TRUE(p["source"]["txId"].is_null());
    }
  }
}

}  // namespace
}  // namespace courier::cdc
