// What the CDC source makes of the stream's inserts and logical messages: events through the
// row codec the pollers use, or the reason to park them.
#include "sources/cdc/decode.h"

#include <gtest/gtest.h>

namespace courier::cdc {
namespace {

constexpr int64_t kCommit = 1700000000000000;
constexpr const char* kEventId = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

pgoutput::Relation Outbox(bool bytea_payload) {
  pgoutput::Relation r;
  r.id = 7;
  r.schema = "public";
  r.name = "courier_outbox";
  for (const char* name : {"id", "event_id", "aggregate_type", "aggregate_id", "event_type",
                           "payload", "headers", "created_at", "published_at"}) {
    r.columns.push_back({name, 25});
  }
  if (bytea_payload) r.columns[5].type_oid = 17;
  return r;
}

pgoutput::Value Text(const char* text) {
  return {pgoutput::Value::Kind::kText, std::string_view(text)};
}
pgoutput::Value Null() { return {}; }

TEST(CdcDecode, MapsTheOutboxColumnsByName) {
  pgoutput::Relation r = Outbox(false);
  std::swap(r.columns[0], r.columns[4]);
  const OutboxColumns c = OutboxColumnsOf(r);
  EXPECT_EQ(c.id, 4);
  EXPECT_EQ(c.event_type, 0);
  EXPECT_EQ(c.created_at, 7);
  EXPECT_FALSE(c.payload_bytea);
  EXPECT_TRUE(OutboxColumnsOf(Outbox(true)).payload_bytea);
}

TEST(CdcDecode, AnInsertGoesThroughTheRowCodec) {
  const std::vector<pgoutput::Value> values = {
      Text("12"),   Text(kEventId),  Text("order"),         Text("o-1"),
      Text("Made"), Text("\\x7b7d"), Text("{\"k\":\"v\"}"), Text("2023-11-14 22:13:20+00"),
      Null()};
  const DecodedRow d = DecodeInsert(OutboxColumnsOf(Outbox(true)), values, kCommit + 1);
  EXPECT_EQ(d.error, "");
  EXPECT_EQ(d.event.row_id, 12);
  EXPECT_EQ(d.event.version, (Version{12, 0}));
  EXPECT_EQ(d.event.event_id, kEventId);
  EXPECT_EQ(d.event.payload, "{}");  // bytea unescaped
  EXPECT_EQ(d.event.created_at_us, kCommit);
  ASSERT_EQ(d.event.headers.size(), 1u);
}

TEST(CdcDecode, AMalformedInsertKeepsTheCommitTimeForItsDeadLetter) {
  const std::vector<pgoutput::Value> values = {Text("12"),  Text(kEventId), Null(),
                                               Text("o-1"), Text("Made"),   Null(),
                                               Null(),      Null(),         Null()};
  const DecodedRow d = DecodeInsert(OutboxColumnsOf(Outbox(false)), values, kCommit);
  EXPECT_EQ(d.error, "outbox row 12: column aggregate_type is NULL");
  EXPECT_EQ(d.event.created_at_us, kCommit);
}

TEST(CdcDecode, AnOutboxWithoutCreatedAtTakesTheCommitTime) {
  pgoutput::Relation r = Outbox(false);
  r.columns.resize(7);
  const std::vector<pgoutput::Value> values = {
      Text("1"), Text(kEventId), Text("order"), Text("o"), Text("Made"), Text("{}"), Null()};
  const DecodedRow d = DecodeInsert(OutboxColumnsOf(r), values, kCommit);
  EXPECT_EQ(d.error, "");
  EXPECT_EQ(d.event.created_at_us, kCommit);
}

pgoutput::Message Message(const char* content, pgoutput::Lsn lsn = 0x16B374D848) {
  pgoutput::Message m;
  m.kind = pgoutput::Message::Kind::kLogicalMessage;
  m.transactional = true;
  m.message_lsn = lsn;
  m.prefix = kMessagePrefix;
  m.content = content;
  return m;
}

TEST(CdcDecode, ALogicalMessageWithoutEventIdGetsAStableOne) {
  const DecodedRow d = DecodeLogicalMessage(
      Message(R"({"aggregate_type":"order","aggregate_id":"o-1","event_type":"Made",)"
              R"("payload":{"n":1},"headers":{"k":"v"}})"),
      42, kCommit);
  EXPECT_EQ(d.error, "");
  EXPECT_EQ(d.event.event_id, MessageEventId(0x16B374D848, 42));
  EXPECT_EQ(d.event.payload, R"({"n":1})");
  EXPECT_EQ(d.event.created_at_us, kCommit);
  EXPECT_EQ(d.event.row_id, 0);
  EXPECT_TRUE(d.event.version.empty());  // its LSN does not order it against row ids
  // Redelivered, the same message keeps its id; another LSN or cluster gets another.
  EXPECT_EQ(MessageEventId(0x16B374D848, 42), MessageEventId(0x16B374D848, 42));
  EXPECT_NE(MessageEventId(0x16B374D848, 42), MessageEventId(0x16B374D849, 42));
  EXPECT_NE(MessageEventId(0x16B374D848, 42), MessageEventId(0x16B374D848, 43));
}

TEST(CdcDecode, ALogicalMessageSaysWhatIsWrongWithIt) {
  EXPECT_EQ(DecodeLogicalMessage(Message("[1]"), 1, kCommit).error,
            "logical message is not a JSON object: [1]");
  EXPECT_EQ(
      DecodeLogicalMessage(Message(R"({"aggregate_type":"a","event_type":"t"})"), 1, kCommit).error,
      "logical message lacks the string field \"aggregate_id\"");
  EXPECT_EQ(DecodeLogicalMessage(Message(R"({"aggregate_type":"a","aggregate_id":"b",)"
                                         R"("event_type":"t","event_id":"x"})"),
                                 1, kCommit)
                .error,
            "logical message has an event_id that is not a UUID");
}

}  // namespace
}  // namespace courier::cdc
