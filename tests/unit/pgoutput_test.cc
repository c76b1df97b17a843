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
  // Years past 9999 and before 1, as PostgreSQL writes them (and its extract(epoch) counts).
  EXPECT_EQ(ParseTimestamp("10000-01-01 00:00:00+00"), 253402300800000000);
  EXPECT_EQ(ParseTimestamp("4713-01-01 00:00:00+00 BC"), -210863520000000000);
  EXPECT_EQ(ParseTimestamp("0001-12-31 23:59:59+00 BC"), -62135596801000000);
  EXPECT_EQ(ParseTimestamp("1969-12-31 23:59:59.5+00"), -500000);
  // Beyond int64 microseconds (PostgreSQL's last year, 294276): not a time courier can carry.
  EXPECT_FALSE(ParseTimestamp("294276-12-31 23:59:59+00").has_value());
  EXPECT_FALSE(ParseTimestamp("2026-13-01 00:00:00+00").has_value());
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

// Bytes as PostgreSQL 15's pgoutput writes them (logicalrep_write_rel): identity 'f', the
// first column flagged as key.
TEST(Pgoutput, DecodesRelationIdentityAndKeyColumns) {
  const std::string rel = "R" + Be(16390, 4) + std::string("sales\0orders\0", 13) + "f" + Be(2, 2) +
                          std::string("\1id\0", 4) + Be(23, 4) + Be(0xffffffff, 4) +
                          std::string("\0price\0", 7) + Be(1700, 4) + Be(0x00080006, 4);
  auto r = ParseMessage(rel);
  ASSERT_OK(r);
  EXPECT_EQ(r->relation.replica_identity, 'f');
  ASSERT_EQ(r->relation.columns.size(), 2u);
  EXPECT_TRUE(r->relation.columns[0].key);
  EXPECT_FALSE(r->relation.columns[1].key);
  EXPECT_EQ(r->relation.columns[1].type_modifier, 0x00080006);
  EXPECT_EQ(r->relation.columns[0].type_modifier, -1);
}

TEST(Pgoutput, DecodesUpdateWithoutOldTuple) {
  const std::string msg = "U" + Be(16390, 4) + "N" + Be(2, 2) + "t" + Be(1, 4) + "7" + "u";
  auto m = ParseMessage(msg);
  ASSERT_OK(m);
  ASSERT_EQ(m->kind, Message::Kind::kUpdate);
  EXPECT_EQ(m->relation_id, 16390u);
  EXPECT_EQ(m->old_kind, 0);
  EXPECT_TRUE(m->old_values.empty());
  ASSERT_EQ(m->values.size(), 2u);
  EXPECT_EQ(m->values[0].text, "7");
  EXPECT_EQ(m->values[1].kind, Value::Kind::kUnchangedToast);
}

TEST(Pgoutput, DecodesUpdateWithOldKeyOrOldRow) {
  const std::string key = "U" + Be(1, 4) + "K" + Be(2, 2) + "t" + Be(1, 4) + "7" + "n" + "N" +
                          Be(2, 2) + "t" + Be(1, 4) + "8" + "t" + Be(2, 4) + "hi";
  auto k = ParseMessage(key);
  ASSERT_OK(k);
  EXPECT_EQ(k->old_kind, 'K');
  ASSERT_EQ(k->old_values.size(), 2u);
  EXPECT_EQ(k->old_values[0].text, "7");
  EXPECT_EQ(k->old_values[1].kind, Value::Kind::kNull);
  ASSERT_EQ(k->values.size(), 2u);
  EXPECT_EQ(k->values[1].text, "hi");

  const std::string full = "U" + Be(1, 4) + "O" + Be(1, 2) + "t" + Be(3, 4) + "old" + "N" +
                           Be(1, 2) + "t" + Be(3, 4) + "new";
  auto o = ParseMessage(full);
  ASSERT_OK(o);
  EXPECT_EQ(o->old_kind, 'O');
  EXPECT_EQ(o->old_values[0].text, "old");
  EXPECT_EQ(o->values[0].text, "new");

  // The new tuple is required; anything but K, O or N where a tuple starts is refused.
  EXPECT_STATUS(ParseMessage(full.substr(0, 14)), StatusCode::kInternal);
  EXPECT_EQ(ParseMessage("U" + Be(1, 4) + "X").status().message(),
            "truncated pgoutput message 'U'");
}

TEST(Pgoutput, DecodesDeleteWithOldKeyOrOldRow) {
  // The values point into the buffer, which must outlive them.
  const std::string key = "D" + Be(9, 4) + "K" + Be(2, 2) + "t" + Be(2, 4) + "42" + "n";
  auto k = ParseMessage(key);
  ASSERT_OK(k);
  ASSERT_EQ(k->kind, Message::Kind::kDelete);
  EXPECT_EQ(k->relation_id, 9u);
  EXPECT_EQ(k->old_kind, 'K');
  ASSERT_EQ(k->old_values.size(), 2u);
  EXPECT_EQ(k->old_values[0].text, "42");
  EXPECT_TRUE(k->values.empty());
  const std::string row = "D" + Be(9, 4) + "O" + Be(1, 2) + "t" + Be(2, 4) + "42";
  auto o = ParseMessage(row);
  ASSERT_OK(o);
  EXPECT_EQ(o->old_kind, 'O');
  EXPECT_EQ(o->old_values[0].text, "42");
  // A delete always carries the old key or row.
  EXPECT_EQ(ParseMessage("D" + Be(9, 4) + "N" + Be(0, 2)).status().message(),
            "truncated pgoutput message 'D'");
}

TEST(Pgoutput, DecodesTruncateOfSeveralTables) {
  auto t = ParseMessage("T" + Be(2, 4) + std::string(1, '\3') + Be(16390, 4) + Be(16400, 4));
  ASSERT_OK(t);
  ASSERT_EQ(t->kind, Message::Kind::kTruncate);
  EXPECT_EQ(t->relation_ids, (std::vector<uint32_t>{16390, 16400}));
  EXPECT_TRUE(t->truncate_cascade);
  EXPECT_TRUE(t->truncate_restart_identity);
  auto plain = ParseMessage("T" + Be(1, 4) + std::string(1, '\0') + Be(5, 4));
  ASSERT_OK(plain);
  EXPECT_FALSE(plain->truncate_cascade);
  EXPECT_FALSE(plain->truncate_restart_identity);
  // A count larger than the message holds is an error, not a huge allocation.
  EXPECT_EQ(
      ParseMessage("T" + Be(0x7fffffff, 4) + std::string(1, '\0') + Be(5, 4)).status().message(),
      "truncated pgoutput message 'T'");
}

TEST(Pgoutput, DecodesTypeMessage) {
  auto y = ParseMessage("Y" + Be(16500, 4) + std::string("public\0mood\0", 12));
  ASSERT_OK(y);
  ASSERT_EQ(y->kind, Message::Kind::kType);
  EXPECT_EQ(y->type_oid, 16500u);
  EXPECT_EQ(y->type_schema, "public");
  EXPECT_EQ(y->type_name, "mood");
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
