// The row codec every source uses, the checked integer parsing under it, and the SQLSTATE
// classification of PostgreSQL errors.
#include <gtest/gtest.h>

#include <cstdint>

#include "core/encoding.h"
#include "core/postgres.h"
#include "sources/row_codec.h"

namespace courier {
namespace {

OutboxRow GoodRow() {
  return {"7",
          "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
          "order",
          "o-1",
          "Made",
          "{}",
          "{\"k\":\"v\"}",
          "1700000000000000"};
}

TEST(RowCodec, DecodesAGoodRow) {
  const DecodedRow d = DecodeOutboxRow(GoodRow());
  EXPECT_EQ(d.error, "");
  EXPECT_EQ(d.event.id, 7);
  EXPECT_EQ(d.event.row_id, 7);
  EXPECT_EQ(d.event.version, (Version{7, 0}));
  EXPECT_EQ(d.event.aggregate_id, "o-1");
  EXPECT_EQ(d.event.created_at_us, 1700000000000000);
  ASSERT_EQ(d.event.headers.size(), 1u);
}

TEST(RowCodec, NullPayloadIsAnEventWithoutABody) {
  OutboxRow row = GoodRow();
  row.payload.reset();
  const DecodedRow d = DecodeOutboxRow(row);
  EXPECT_EQ(d.error, "");
  EXPECT_EQ(d.event.payload, "");
}

TEST(RowCodec, NamesTheRowAndTheColumn) {
  struct Case {
    void (*spoil)(OutboxRow*);
    const char* error;
  };
  const Case cases[] = {
      {[](OutboxRow* r) { r->created_at_us.reset(); }, "outbox row 7: column created_at is NULL"},
      {[](OutboxRow* r) { r->created_at_us = "'infinity'"; },
       "outbox row 7: column created_at is 'infinity', not a finite time"},
      {[](OutboxRow* r) { r->aggregate_type.reset(); },
       "outbox row 7: column aggregate_type is NULL"},
      {[](OutboxRow* r) { r->aggregate_id = ""; }, "outbox row 7: column aggregate_id is empty"},
      {[](OutboxRow* r) { r->event_type.reset(); }, "outbox row 7: column event_type is NULL"},
      {[](OutboxRow* r) { r->event_id.reset(); }, "outbox row 7: column event_id is NULL"},
      {[](OutboxRow* r) { r->event_id = "abc"; },
       "outbox row 7: column event_id 'abc' is not a UUID"},
      {[](OutboxRow* r) { r->headers = "[1]"; },
       "outbox row 7: column headers: headers must be a JSON object"},
      {[](OutboxRow* r) { r->id = "x"; }, "outbox row x: column id 'x' is not an integer"},
  };
  for (const Case& c : cases) {
    OutboxRow row = GoodRow();
    c.spoil(&row);
    const DecodedRow d = DecodeOutboxRow(row);
    EXPECT_EQ(d.error.substr(0, std::string(c.error).size()), c.error);
    EXPECT_EQ(d.event.aggregate_id, row.aggregate_id.value_or("")) << "kept for the dead letter";
  }
}

TEST(ParseInt64, AcceptsOnlyAWholeInRangeInteger) {
  EXPECT_EQ(ParseInt64("42"), 42);
  EXPECT_EQ(ParseInt64("-9223372036854775808"), INT64_MIN);
  EXPECT_EQ(ParseInt64(""), std::nullopt);
  EXPECT_EQ(ParseInt64("12x"), std::nullopt);
  EXPECT_EQ(ParseInt64(" 1"), std::nullopt);
  EXPECT_EQ(ParseInt64("9223372036854775808"), std::nullopt);
  EXPECT_EQ(ParseInt64("Infinity"), std::nullopt);
}

TEST(PgStatusCode, ClassesBySqlState) {
  EXPECT_EQ(PgStatusCode("42501"), StatusCode::kInvalidArgument);  // insufficient privilege
  EXPECT_EQ(PgStatusCode("42804"), StatusCode::kInvalidArgument);  // datatype mismatch
  EXPECT_EQ(PgStatusCode("22003"), StatusCode::kInvalidArgument);  // out of range
  EXPECT_EQ(PgStatusCode("23502"), StatusCode::kInvalidArgument);  // not null violation
  // A unique violation: another writer took the key (an append's expected version) first.
  EXPECT_EQ(PgStatusCode("23505"), StatusCode::kAborted);
  EXPECT_EQ(PgStatusCode("42P01"), StatusCode::kNotFound);
  EXPECT_EQ(PgStatusCode("42703"), StatusCode::kNotFound);
  for (const char* retriable :
       {"08006", "40001", "40P01", "57P01", "57P02", "57P03", "55P03", "53300", "58030"}) {
    EXPECT_EQ(PgStatusCode(retriable), StatusCode::kRetriable) << retriable;
  }
  EXPECT_EQ(PgStatusCode("XX000"), StatusCode::kInternal);
}

// The version orders an aggregate's changes, and its text (what the redis-cache sink stores and
// compares in Lua) sorts the same way; a version without a minor part keeps the 20-digit form
// caches written by earlier releases hold.
TEST(EventVersion, TextSortsAsVersionsCompare) {
  const Version versions[] = {{0, 0}, {7, 0},  {7, 1},  {7, 12},
                              {8, 0}, {10, 0}, {10, 3}, {UINT64_MAX, 0}};
  for (const Version& a : versions) {
    for (const Version& b : versions) {
      EXPECT_EQ(a < b, a.ToString() < b.ToString()) << a.ToString() << " vs " << b.ToString();
      EXPECT_EQ(a == b, a.ToString() == b.ToString());
    }
  }
  EXPECT_EQ((Version{42, 0}).ToString(), "00000000000000000042");
  EXPECT_EQ((Version{42, 5}).ToString(), "00000000000000000042.00000000000000000005");
  EXPECT_TRUE((Version{}).empty());
}

// A row without an id has no version (no row orders it), and neither has a row of id 0.
TEST(EventVersion, OnlyARowWithAnIdHasOne) {
  OutboxRow row = GoodRow();
  row.id = "0";
  EXPECT_TRUE(DecodeOutboxRow(row).event.version.empty());
}

}  // namespace
}  // namespace courier
