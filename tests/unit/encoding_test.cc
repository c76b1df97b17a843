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

// Parsing and dumping the payload turned big integers into floats, dropped duplicate keys and
// sorted the others; the line carries the committed bytes instead.
TEST(Encoding, JsonPayloadIsWrittenAndReadBackByteForByte) {
  Event e = Sample();
  e.payload = R"({"b":1,"a":12345678901234567890,"a":2, "f":1.50})";
  const std::string line = EventToJsonLine(e);
  EXPECT_NE(line.find(R"("payload":{"b":1,"a":12345678901234567890,"a":2, "f":1.50}})"),
            std::string::npos)
      << line;
  auto back = EventFromJsonLine(line);
  ASSERT_OK(back);
  EXPECT_EQ(back->payload, e.payload);
  EXPECT_EQ(back->event_id, e.event_id);

  e.payload = "12345678901234567890123";
  EXPECT_EQ(EventFromJsonLine(EventToJsonLine(e))->payload, e.payload) << "a bare number";
  e.payload = " \t[1, 2] ";
  EXPECT_EQ(EventFromJsonLine(EventToJsonLine(e))->payload, e.payload) << "whitespace around";
  e.payload = R"("text with \"payload\": inside")";
  EXPECT_EQ(EventFromJsonLine(EventToJsonLine(e))->payload, e.payload) << "a bare string";
}

// JSON text up to a NUL byte and anything after it (SQLite stores such a payload as it was
// given) is bytes: spliced, the NUL would end the line's JSON early.
TEST(Encoding, PayloadWithANulByteGoesAsBytes) {
  Event e = Sample();
  e.payload = std::string("202\0garbage", 11);
  const std::string line = EventToJsonLine(e);
  EXPECT_EQ(line.find('\0'), std::string::npos);
  EXPECT_NE(line.find("payload_base64"), std::string::npos) << line;
  auto back = EventFromJsonLine(line);
  ASSERT_OK(back);
  EXPECT_EQ(back->payload, e.payload);
  EXPECT_FALSE(EventFromJsonLine(std::string("{\"event_id\":\"x\"}\0tail", 19)).ok());
}

// A line break in JSON text is whitespace between tokens: a space keeps the line one line.
TEST(Encoding, PrettyPrintedPayloadStaysOnOneLine) {
  Event e = Sample();
  e.payload = "{\n  \"a\": [1,\r\n 2]\n}";
  const std::string line = EventToJsonLine(e);
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_EQ(EventFromJsonLine(line)->payload, "{   \"a\": [1,   2] }");
}

// Keys that only look like the payload's (escaped, nested, inside strings) are not it.
TEST(Encoding, PayloadMemberIsFoundAtTheTopLevelOnly) {
  auto e = EventFromJsonLine(
      R"({"x":{"payload":1},"s":"\"payload\":2","payl\u006fad" : [3, {"k":"]"}] ,"z":0})");
  ASSERT_OK(e);
  EXPECT_EQ(e->payload, R"( [3, {"k":"]"}] )");
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

std::string Nested(size_t depth, const std::string& inner = "1") {
  return std::string(depth, '[') + inner + std::string(depth, ']');
}

TEST(Encoding, JsonDepthCountsOnlyStructure) {
  EXPECT_TRUE(JsonDepthWithin(Nested(kMaxJsonDepth)));
  EXPECT_FALSE(JsonDepthWithin(Nested(kMaxJsonDepth + 1)));
  EXPECT_TRUE(JsonDepthWithin(R"(["[[[[", "\"{{{{"])", 1)) << "brackets in strings do not count";
  EXPECT_TRUE(JsonDepthWithin("[][][][]", 1));
  EXPECT_FALSE(JsonDepthWithin("[{", 1));
}

// Found by tests/fuzz/row_fuzz.cc: serializing a deeply nested value again recursed once per
// level and overflowed the stack (a few hundred kilobytes of '[' in a headers column or a
// payload were enough to crash the relay, again after every restart).
TEST(Encoding, DeeplyNestedHeadersAreRefused) {
  auto h = HeadersFromJson(R"({"h":)" + Nested(200000) + "}");
  EXPECT_STATUS(h, StatusCode::kInvalidArgument);
  EXPECT_EQ(h.status().message(), "headers nest deeper than 256 levels");
  auto ok = HeadersFromJson(R"({"h":)" + Nested(100) + "}");
  ASSERT_OK(ok);
  EXPECT_EQ((*ok)[0].second, Nested(100));
}

TEST(Encoding, DeeplyNestedPayloadIsWrittenAsBytes) {
  Event e = Sample();
  e.payload = Nested(200000);
  const std::string line = EventToJsonLine(e);
  EXPECT_NE(line.find("payload_base64"), std::string::npos);
  EXPECT_EQ(EventFromJsonLine(line)->payload, e.payload);
  e.payload = Nested(kMaxJsonDepth);
  EXPECT_EQ(EventFromJsonLine(EventToJsonLine(e))->payload, e.payload) << "still JSON";
}

// Found by tests/fuzz/row_fuzz.cc: a field of another type threw json::type_error.
TEST(Encoding, JsonLineWithFieldsOfTheWrongTypeIsAnError) {
  auto id = EventFromJsonLine(R"({"event_id":1})");
  EXPECT_STATUS(id, StatusCode::kInvalidArgument);
  EXPECT_EQ(id.status().message(), "event_id is not a string");
  auto at = EventFromJsonLine(R"({"created_at_us":"soon"})");
  EXPECT_EQ(at.status().message(), "created_at_us is not an integer");
  auto b64 = EventFromJsonLine(R"({"payload_base64":[1]})");
  EXPECT_EQ(b64.status().message(), "payload_base64 is not a string");
  EXPECT_STATUS(EventFromJsonLine(Nested(200000)), StatusCode::kInvalidArgument);
}

// The sink's direct writer gives the bytes the JSON library's dump gives: escapes, key order,
// a header written twice (the last kept), text that is not UTF-8 (replaced, as the dump does).
TEST(Encoding, LineWrittenDirectlyIsTheLineTheJsonLibraryWrites) {
  std::vector<Event> cases;
  cases.push_back(Sample());
  Event e = Sample();
  e.aggregate_id = "quote\" back\\slash \b\f\n\r\t \x01\x1f\x7f é € 😀 /";
  e.headers = {{"z", "1"}, {"a", "2"}, {"m", "3"}, {"a", "4"}, {"", ""}};
  cases.push_back(e);
  e.event_type = "bad \xC3 utf-8";
  cases.push_back(e);
  e = Sample();
  e.payload = "not json";  // payload_base64
  e.created_at_us = -5;
  cases.push_back(e);
  e.headers.clear();
  e.payload.clear();
  cases.push_back(e);
  for (const Event& c : cases) {
    std::string line;
    AppendEventJsonLine(c, &line);
    EXPECT_EQ(line, internal::EventToJsonLineByValue(c)) << c.aggregate_id;
  }
}

TEST(Encoding, JsonTextIsWhatTheJsonLibraryAccepts) {
  for (const char* good :
       {"0", "-0.5e+3", " {\"a\" : [1, 2.5, true, false, null, \"x\"]} ", "\"\\ud83d\\ude00\"",
        "1e-999", "123456789012345678901234567890", "\"é€😀\"", "[[[]]]", "{}"}) {
    EXPECT_TRUE(IsJsonText(good)) << good;
  }
  for (const char* bad : {"",
                          " ",
                          "01",
                          "1.",
                          "+1",
                          "-",
                          "1e",
                          "1e999",
                          "[1,]",
                          "{\"a\"}",
                          "{\"a\":1,}",
                          "[1 2]",
                          "\"\\udc00\"",
                          "\"\\ud800\"",
                          "\"\\ud800\\u0041\"",
                          "\"\\x\"",
                          "\"a\nb\"",
                          "\"\xC3\"",
                          "\"\xED\xA0\x80\"",
                          "tru",
                          "nul",
                          "\xEF\xBB\xBF{}",
                          "{} {}",
                          "[1]]"}) {
    EXPECT_FALSE(IsJsonText(bad)) << bad;
  }
  EXPECT_FALSE(IsJsonText(std::string(400, '9').insert(0, "[").append("]")));  // inf as a double
  EXPECT_TRUE(IsJsonText(std::string(300, '9')));
  EXPECT_TRUE(IsJsonText(std::string(256, '[') + std::string(256, ']')));
  EXPECT_FALSE(IsJsonText(std::string(257, '[') + std::string(257, ']')));
  EXPECT_FALSE(IsJsonText(std::string("1\0", 2)));
}

TEST(Encoding, Base64MatchesRfc4648Vectors) {
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(*Base64Decode("Zm9vYg=="), "foob");
}

}  // namespace
}  // namespace courier
