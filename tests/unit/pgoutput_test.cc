#include "sources/pgoutput.h"

#include <gtest/gtest.h>

#include "support/matchers.h"

namespace courier::pgoutput {
namespace {

std::string Be(uint64_t v, int bytes) {
  std::string out;
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

TEST(Pgoutput, LsnRoundTrips) {
  auto lsn = ParseLsn("16/B374D848");
  ASSERT_OK(lsn);
  EXPECT_EQ(*lsn, 0x16B374D848ULL);
  EXPECT_EQ(FormatLsn(*lsn), "16/B374D848");
  EXPECT_FALSE(ParseLsn("nope").ok());
}

TEST(Pgoutput, ParsesIsoTimestampsWithAnyOffset) {
  EXPECT_EQ(ParseTimestamp("1970-01-01 00:00:01+00"), 1000000);
  EXPECT_EQ(ParseTimestamp("2026-11-23 17:50:01.5+00"), 1795456201500000);
  EXPECT_EQ(ParseTimestamp("2026-11-23 23:20:01.5+05:30"), 1795456201500000);
  EXPECT_EQ(ParseTimestamp("2026-11-23 09:50:01.5-08"), 1795456201500000);
  EXPECT_FALSE(ParseTimestamp("Mon Nov 23 17:50:01 2026").has_value());
}

TEST(Pgoutput, DecodesRelationThenInsert) {
  std::string rel = "R" + Be(16385, 4) + std::string("public\0courier_outbox\0", 22) + "d" +
                    Be(2, 2) + std::string("\1id\0", 4) + Be(20, 4) + Be(0xffffffff, 4) +
                    std::string("\0payload\0", 9) + Be(114, 4) + Be(0xffffffff, 4);
  auto r = ParseMessage(rel);
  ASSERT_OK(r);
  ASSERT_EQ(r->kind, Message::Kind::kRelation);
  EXPECT_EQ(r->relation.schema, "public");
  EXPECT_EQ(r->relation.name, "courier_outbox");
  ASSERT_EQ(r->relation.columns.size(), 2u);
  EXPECT_EQ(r->relation.columns[1].name, "payload");
  EXPECT_EQ(r->relation.columns[1].type_oid, 114u);

  std::string ins = "I" + Be(16385, 4) + "N" + Be(2, 2) + "t" + Be(2, 4) + "42" + "n";
  auto i = ParseMessage(ins);
  ASSERT_OK(i);
  ASSERT_EQ(i->kind, Message::Kind::kInsert);
  ASSERT_EQ(i->values.size(), 2u);
  EXPECT_EQ(i->values[0].text, "42");
  EXPECT_EQ(i->values[1].kind, Value::Kind::kNull);

  EXPECT_FALSE(ParseMessage(ins.substr(0, ins.size() - 3)).ok()) << "truncated is an error";
}

TEST(Pgoutput, DecodesCommitAndLogicalMessage) {
  auto c = ParseMessage("C" + std::string(1, '\0') + Be(0x100, 8) + Be(0x180, 8) + Be(0, 8));
  ASSERT_OK(c);
  EXPECT_EQ(c->kind, Message::Kind::kCommit);
  EXPECT_EQ(c->end_lsn, 0x180u);
  // The decoded message points into the buffer, which must outlive it.
  const std::string buf =
      "M" + std::string(1, '\1') + Be(0x200, 8) + std::string("courier\0", 8) + Be(2, 4) + "{}";
  auto m = ParseMessage(buf);
  ASSERT_OK(m);
  EXPECT_EQ(m->kind, Message::Kind::kLogicalMessage);
  EXPECT_TRUE(m->transactional);
  EXPECT_EQ(m->prefix, "courier");
  EXPECT_EQ(m->content, "{}");
}

// Found by tests/fuzz/pgoutput_fuzz.cc: the conversion to the Unix epoch overflowed (undefined
// behaviour) for times near the int64 limits.
TEST(Pgoutput, TimesBeyondRangeAreErrors) {
  auto b = ParseMessage("B" + Be(0x100, 8) + Be(0x7fffffffffffffff, 8) + Be(7, 4));
  EXPECT_STATUS(b, StatusCode::kInternal);
  EXPECT_EQ(b.status().message(), "pgoutput message 'B' has a time out of range");
  auto c = ParseMessage("C" + std::string(1, '\0') + Be(0x100, 8) + Be(0x180, 8) +
                        Be(0x7ffffffffffffff0, 8));
  EXPECT_EQ(c.status().message(), "pgoutput message 'C' has a time out of range");
  auto ok = ParseMessage("B" + Be(0x100, 8) + Be(5, 8) + Be(7, 4));
  ASSERT_OK(ok);
  EXPECT_EQ(ok->commit_time_us, kPgEpochOffsetUs + 5);
}

TEST(Pgoutput, StandbyStatusUpdateLayout) {
  const std::string msg = StandbyStatusUpdate(0x10, 0x20, kPgEpochOffsetUs + 5, true);
  ASSERT_EQ(msg.size(), 34u);
  EXPECT_EQ(msg[0], 'r');
  EXPECT_EQ(msg.substr(1, 8), Be(0x10, 8));
  EXPECT_EQ(msg.substr(9, 8), Be(0x20, 8));
  EXPECT_EQ(msg.substr(17, 8), Be(0x20, 8));
  EXPECT_EQ(msg.substr(25, 8), Be(5, 8));
  EXPECT_EQ(msg[33], 1);
}

}  // namespace
}  // namespace courier::pgoutput
