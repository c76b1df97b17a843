#include "core/encoding.h"

#include <gtest/gtest.h>

#include "support/matchers.h"

namespace courier {
namespace {

Event Sample() {
  Event e;
  e.event_id = "0190e5b2-7c1a-7abc-8def-0123456789ab";
  e.aggregate_type = "order";
  e.aggregate_id = "42";
  e.event_type = "OrderCreated";
  e.payload = R"({"id":42,"items":[1,2]})";
  e.headers = {{"trace", "abc"}};
  e.created_at_us = 1700000000000000;
  return e;
}

TEST(Encoding, JsonLineRoundTripsJsonPayloads) {
  const Event e = Sample();
  auto back = EventFromJsonLine(EventToJsonLine(e));
  ASSERT_OK(back);
  EXPECT_EQ(back->event_id, e.event_id);
  EXPECT_EQ(back->aggregate_id, "42");
  EXPECT_EQ(back->payload, e.payload);
  EXPECT_EQ(back->headers, e.headers);
  EXPECT_EQ(back->created_at_us, e.created_at_us);
}

TEST(Encoding, BinaryPayloadsUseBase64) {
  Event e = Sample();
  e.payload = std::string("\x00\x01\xff not json", 12);
  const std::string line = EventToJsonLine(e);
  EXPECT_NE(line.find("payload_base64"), std::string::npos);
  auto back = EventFromJsonLine(line);
  ASSERT_OK(back);
  EXPECT_EQ(back->payload, e.payload);
}

TEST(Encoding, HeadersMustBeAnObject) {
  EXPECT_STATUS(HeadersFromJson("[1,2]"), StatusCode::kInvalidArgument);
  auto h = HeadersFromJson(R"({"a":"x","n":3})");
  ASSERT_OK(h);
  EXPECT_EQ(*h, (Headers{{"a", "x"}, {"n", "3"}}));
}

TEST(Encoding, Base64MatchesRfc4648Vectors) {
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(*Base64Decode("Zm9vYg=="), "foob");
}

}  // namespace
}  // namespace courier
