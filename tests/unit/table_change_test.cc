// What the row-mirroring sinks read of a table change: the row's text cut out untouched, in
// courier's shape and Debezium's envelope.
#include "brokers/table_change.h"

#include <gtest/gtest.h>

#include "support/matchers.h"

namespace courier {
namespace {

Event Change(const std::string& type, const std::string& payload, const std::string& key = "1") {
  Event e;
  e.table_change = true;
  e.aggregate_type = "products";
  e.aggregate_id = key;
  e.event_type = type;
  e.payload = payload;
  return e;
}

TEST(TableChange, TheRowIsCutOutByteForByte) {
  auto change = ReadTableChange(Change(
      "update",
      R"({"op":"update","before":{"id":1},"after":{"id":1,"n":1.50,"big":123456789012345678901234567890,"s":"a \"}\" b"},"unavailable":["body"],"source":{}})"));
  ASSERT_OK(change);
  EXPECT_EQ(change->kind, TableChange::Kind::kUpsert);
  EXPECT_EQ(change->after,
            R"({"id":1,"n":1.50,"big":123456789012345678901234567890,"s":"a \"}\" b"})");
  EXPECT_EQ(change->unavailable, std::vector<std::string>{"body"});
  EXPECT_EQ(change->table, "products");
  EXPECT_EQ(change->key, "1");
}

TEST(TableChange, DebeziumEnvelopeWithAndWithoutSchema) {
  for (const std::string payload :
       {R"({"before":null,"after":{"id":1},"source":{},"op":"c","ts_ms":1})",
        R"({"schema":{"type":"struct"},"payload":{"before":null,"after":{"id":1},"op":"c"}})"}) {
    auto change = ReadTableChange(Change("c", payload));
    ASSERT_OK(change);
    EXPECT_EQ(change->kind, TableChange::Kind::kUpsert);
    EXPECT_EQ(change->after, R"({"id":1})") << payload;
  }
  auto deleted = ReadTableChange(Change("d", R"({"before":{"id":1},"after":null,"op":"d"})"));
  ASSERT_OK(deleted);
  EXPECT_EQ(deleted->kind, TableChange::Kind::kDelete);
  auto truncated = ReadTableChange(Change("truncate", R"({"op":"truncate"})", ""));
  ASSERT_OK(truncated);
  EXPECT_EQ(truncated->kind, TableChange::Kind::kTruncate);
}

TEST(TableChange, WhatIsNoRowChangeIsRejected) {
  for (const auto& [event, message] : std::vector<std::pair<Event, std::string>>{
           {Change("insert", "not json"),
            "the insert of products 1 has a payload that is no JSON object"},
           {Change("insert", R"({"after":null})"),
            "the insert of products 1 carries no row: its payload has no \"after\" object"},
           {Change("delete", "{}", ""), "a delete of products without its key"},
           {Change("merge", "{}"),
            "a table change of type 'merge': expected insert, update, read, delete or truncate"},
       }) {
    auto change = ReadTableChange(event);
    EXPECT_STATUS(change, StatusCode::kRejected);
    EXPECT_EQ(change.status().message(), message);
  }
}

TEST(TableChange, JsonMemberAndCompactJson) {
  EXPECT_EQ(JsonMember(R"( { "a" : [1, {"x":"]"}] , "b":"c" } )", "b"), R"("c")");
  EXPECT_EQ(JsonMember(R"({"a":[1,{"x":"]"}],"b":"c"})", "a"), R"([1,{"x":"]"}])");
  EXPECT_EQ(JsonMember(R"({"a":-1.5e3,"b":true})", "a"), "-1.5e3");
  EXPECT_EQ(JsonMember(R"({"a":1})", "b"), "");
  EXPECT_EQ(JsonMember(R"([1])", "a"), "");
  EXPECT_EQ(CompactJson("{ \"a b\" : [ 1 , \"\\\" x\" ]\n}"), R"({"a b":[1,"\" x"]})");
}

}  // namespace
}  // namespace courier
