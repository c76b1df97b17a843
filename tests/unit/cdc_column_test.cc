// RenderColumn (sources/cdc/change.h): pgoutput's text of a column into what to_jsonb writes.
// The expected values are PostgreSQL 15's to_jsonb(...)::text; the integration test
// (integration/cdc_render_test.cc) checks the same against a real server.
#include <gtest/gtest.h>

#include <string>

#include "sources/cdc/change.h"
#include "sources/cdc/jsonb.h"

namespace courier::cdc {
namespace {

// Type OIDs (pg_type.dat).
constexpr uint32_t kBool = 16, kBytea = 17, kInt8 = 20, kInt2 = 21, kInt4 = 23, kText = 25,
                   kOid = 26, kJson = 114, kFloat4 = 700, kFloat8 = 701, kMoney = 790,
                   kBpchar = 1042, kDate = 1082, kTime = 1083, kTimestamp = 1114,
                   kTimestampTz = 1184, kInterval = 1186, kTimeTz = 1266, kNumeric = 1700,
                   kUuid = 2950, kJsonb = 3802;
constexpr uint32_t kBoolArray = 1000, kInt4Array = 1007, kTextArray = 1009, kBoxArray = 1020,
                   kFloat8Array = 1022, kTimestampTzArray = 1185, kNumericArray = 1231,
                   kJsonArray = 199, kJsonbArray = 3807, kDateArray = 1182;

TEST(CdcColumn, BooleansAndIntegersAreJsonLiterals) {
  EXPECT_EQ(RenderColumn(kBool, "t"), "true");
  EXPECT_EQ(RenderColumn(kBool, "f"), "false");
  EXPECT_EQ(RenderColumn(kInt2, "-32768"), "-32768");
  EXPECT_EQ(RenderColumn(kInt4, "42"), "42");
  EXPECT_EQ(RenderColumn(kInt8, "-9223372036854775808"), "-9223372036854775808");
  // oid is no number to to_jsonb (its category is not numeric): a string.
  EXPECT_EQ(RenderColumn(kOid, "4294967295"), "\"4294967295\"");
}

TEST(CdcColumn, FloatsGoThroughNumericSoExponentsAreSpelledOut) {
  EXPECT_EQ(RenderColumn(kFloat8, "0.1"), "0.1");
  EXPECT_EQ(RenderColumn(kFloat8, "1e+100"), "1" + std::string(100, '0'));
  EXPECT_EQ(RenderColumn(kFloat8, "1.5e-07"), "0.00000015");
  EXPECT_EQ(RenderColumn(kFloat8, "-1.2345678901234567e+20"), "-123456789012345670000");
  EXPECT_EQ(RenderColumn(kFloat8, "-0"), "0");
  EXPECT_EQ(RenderColumn(kFloat4, "3.4028235e+38"), "340282350000000000000000000000000000000");
  EXPECT_EQ(RenderColumn(kFloat8, "NaN"), "\"NaN\"");
  EXPECT_EQ(RenderColumn(kFloat8, "Infinity"), "\"Infinity\"");
  EXPECT_EQ(RenderColumn(kFloat4, "-Infinity"), "\"-Infinity\"");
}

TEST(CdcColumn, NumericKeepsEveryDigitAndItsScale) {
  const std::string huge = "123456789012345678901234567890123456789012345678901234567890.000100";
  EXPECT_EQ(RenderColumn(kNumeric, huge), huge);
  EXPECT_EQ(RenderColumn(kNumeric, "1.50"), "1.50");
  EXPECT_EQ(RenderColumn(kNumeric, "-0.000"), "0.000");
  EXPECT_EQ(RenderColumn(kNumeric, "NaN"), "\"NaN\"");
  EXPECT_EQ(RenderColumn(kNumeric, "Infinity"), "\"Infinity\"");
  EXPECT_EQ(RenderColumn(kNumeric, "-Infinity"), "\"-Infinity\"");
}

TEST(CdcColumn, NumericTextFollowsNumericIn) {
  EXPECT_EQ(NumericText("1.50e1"), "15.0");
  EXPECT_EQ(NumericText("0e-5"), "0.00000");
  EXPECT_EQ(NumericText("007"), "7");
  EXPECT_EQ(NumericText(".5"), "0.5");
  EXPECT_EQ(NumericText("1E3"), "1000");
  EXPECT_EQ(NumericText("1e-16384"), std::nullopt);  // beyond numeric's display scale
  EXPECT_EQ(NumericText("1e999999999999"), std::nullopt);
  EXPECT_EQ(NumericText("abc"), std::nullopt);
  EXPECT_EQ(NumericText("1.2.3"), std::nullopt);
}

TEST(CdcColumn, TextTypesAreJsonStringsEscapedAsPostgresDoes) {
  EXPECT_EQ(RenderColumn(kText, "plain"), "\"plain\"");
  EXPECT_EQ(RenderColumn(kText, "q\"b\\s/\n\t\r\b\f\x01\x1f"),
            "\"q\\\"b\\\\s/\\n\\t\\r\\b\\f\\u0001\\u001f\"");
  EXPECT_EQ(RenderColumn(kText, "caf\xc3\xa9 \xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
  EXPECT_EQ(RenderColumn(kBpchar, "ab  "), "\"ab  \"");
  EXPECT_EQ(RenderColumn(kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
  EXPECT_EQ(RenderColumn(kBytea, "\\x00ff"), "\"\\\\x00ff\"");
  EXPECT_EQ(RenderColumn(kMoney, "$1,234.50"), "\"$1,234.50\"");
  EXPECT_EQ(RenderColumn(kInterval, "1 year 2 mons -3 days 04:05:06.5"),
            "\"1 year 2 mons -3 days 04:05:06.5\"");
  EXPECT_EQ(RenderColumn(kTime, "13:14:15.5"), "\"13:14:15.5\"");
  EXPECT_EQ(RenderColumn(kTimeTz, "13:14:15+05:30"), "\"13:14:15+05:30\"");
  // An unknown type (an enum, a domain) is its text as a string.
  EXPECT_EQ(RenderColumn(99999, "{1,2}"), "\"{1,2}\"");
}

TEST(CdcColumn, InvalidUtf8BecomesTheReplacementCharacter) {
  EXPECT_EQ(RenderColumn(kText,
                         "a\xff"
                         "b\xc3"),
            "\"a\xef\xbf\xbd"
            "b\xef\xbf\xbd\"");
  EXPECT_EQ(RenderColumn(kText, "\xed\xa0\x80"), "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
  // In a json key too, before keys are sorted, so that rendering again gives the same text.
  const std::string key = RenderColumn(kJson, "{\"bb\":1,\"a\x8b\":2}");
  EXPECT_EQ(key, "{\"bb\": 1, \"a\xef\xbf\xbd\": 2}");
  EXPECT_EQ(RenderColumn(kJson, key), key);
}

TEST(CdcColumn, DatesAndTimestampsInXsdForm) {
  EXPECT_EQ(RenderColumn(kDate, "2026-11-26"), "\"2026-11-26\"");
  EXPECT_EQ(RenderColumn(kDate, "0044-03-15 BC"), "\"0044-03-15 BC\"");
  EXPECT_EQ(RenderColumn(kDate, "infinity"), "\"infinity\"");
  EXPECT_EQ(RenderColumn(kTimestamp, "2026-11-26 22:18:23.123456"),
            "\"2026-11-26T22:18:23.123456\"");
  EXPECT_EQ(RenderColumn(kTimestamp, "-infinity"), "\"-infinity\"");
  EXPECT_EQ(RenderColumn(kTimestampTz, "2026-11-26 22:18:23.123456+00"),
            "\"2026-11-26T22:18:23.123456+00:00\"");
  EXPECT_EQ(RenderColumn(kTimestampTz, "2026-11-26 22:18:23+05:30"),
            "\"2026-11-26T22:18:23+05:30\"");
  EXPECT_EQ(RenderColumn(kTimestampTz, "1900-01-01 00:00:00-00:01:15"),
            "\"1900-01-01T00:00:00-00:01:15\"");
  EXPECT_EQ(RenderColumn(kTimestampTz, "0044-03-15 12:00:00+00 BC"),
            "\"0044-03-15T12:00:00+00:00 BC\"");
  EXPECT_EQ(RenderColumn(kTimestampTz, "12345-01-01 00:00:00+00"),
            "\"12345-01-01T00:00:00+00:00\"");
}

TEST(CdcColumn, JsonIsNormalizedAsJsonb) {
  EXPECT_EQ(RenderColumn(kJson, R"({"b":1, "a" : [1,2.50,1e2,-0], "b":{"x":null},"aa":true})"),
            R"({"a": [1, 2.50, 100, 0], "b": {"x": null}, "aa": true})");
  EXPECT_EQ(RenderColumn(kJson, R"( "\u00e9\ud83d\ude00\/\u001f" )"),
            "\"\xc3\xa9\xf0\x9f\x98\x80/\\u001f\"");
  EXPECT_EQ(RenderColumn(kJson, "[]"), "[]");
  EXPECT_EQ(RenderColumn(kJson, "{}"), "{}");
  EXPECT_EQ(RenderColumn(kJsonb, R"({"a": 1, "bb": [true, null]})"),
            R"({"a": 1, "bb": [true, null]})");
  EXPECT_EQ(RenderColumn(kJsonb, "12345678901234567890.123456789"),
            "12345678901234567890.123456789");
}

TEST(CdcColumn, TextThatIsNotItsTypeStaysAString) {
  EXPECT_EQ(RenderColumn(kInt4, "abc"), "\"abc\"");
  EXPECT_EQ(RenderColumn(kInt4, ""), "\"\"");
  EXPECT_EQ(RenderColumn(kBool, "yes"), "\"yes\"");
  EXPECT_EQ(RenderColumn(kFloat8, "nan"), "\"nan\"");
  EXPECT_EQ(RenderColumn(kJson, "{\"a\":}"), "\"{\\\"a\\\":}\"");
  EXPECT_EQ(RenderColumn(kJson, "01"), "\"01\"");
  EXPECT_EQ(RenderColumn(kJson, "\"\\u0000\""), "\"\\\"\\\\u0000\\\"\"");
  EXPECT_EQ(RenderColumn(kJson, "\"\\udc00\""), "\"\\\"\\\\udc00\\\"\"");
  EXPECT_EQ(RenderColumn(kTimestampTz, "2026-11-26 22:18:23"), "\"2026-11-26 22:18:23\"");
  EXPECT_EQ(RenderColumn(kDate, "26/11/2026"), "\"26/11/2026\"");
  EXPECT_EQ(RenderColumn(kInt4Array, "{1,2"), "\"{1,2\"");
}

TEST(CdcColumn, ArraysElementByElement) {
  EXPECT_EQ(RenderColumn(kInt4Array, "{1,2,NULL,-3}"), "[1, 2, null, -3]");
  EXPECT_EQ(RenderColumn(kInt4Array, "{}"), "[]");
  EXPECT_EQ(RenderColumn(kInt4Array, "{{1,2},{3,4}}"), "[[1, 2], [3, 4]]");
  EXPECT_EQ(RenderColumn(kInt4Array, "[0:1]={7,8}"), "[7, 8]");
  EXPECT_EQ(RenderColumn(kInt4Array, "[-2:-1][3:4]={{1,2},{3,4}}"), "[[1, 2], [3, 4]]");
  EXPECT_EQ(RenderColumn(kBoolArray, "{t,f,NULL}"), "[true, false, null]");
  EXPECT_EQ(RenderColumn(kTextArray, R"({"a b","c\"d","e\\f",NULL,"NULL","",x})"),
            R"(["a b", "c\"d", "e\\f", null, "NULL", "", "x"])");
  EXPECT_EQ(RenderColumn(kFloat8Array, "{1e+100,NaN,-Infinity}"),
            "[1" + std::string(100, '0') + ", \"NaN\", \"-Infinity\"]");
  EXPECT_EQ(RenderColumn(kNumericArray, "{1.10,NaN}"), "[1.10, \"NaN\"]");
  EXPECT_EQ(RenderColumn(kTimestampTzArray, R"({"2026-11-26 22:18:23.5+00",infinity})"),
            R"(["2026-11-26T22:18:23.5+00:00", "infinity"])");
  EXPECT_EQ(RenderColumn(kDateArray, R"({"0044-03-15 BC"})"), R"(["0044-03-15 BC"])");
  EXPECT_EQ(RenderColumn(kJsonArray, R"({"{\"b\":1,\"a\":2}",NULL})"),
            R"([{"a": 2, "b": 1}, null])");
  EXPECT_EQ(RenderColumn(kJsonbArray, R"({"[1, 2]","\"s\""})"), R"([[1, 2], "s"])");
  EXPECT_EQ(RenderColumn(kBoxArray, "{(1,1),(0,0);(2,2),(1,1)}"),
            R"x(["(1,1),(0,0)", "(2,2),(1,1)"])x");
}

TEST(CdcColumn, HostileInputIsBounded) {
  // Deeper than PostgreSQL's six array dimensions, or than kMaxJsonDepth: kept as a string.
  const std::string deep_array(7, '{');
  EXPECT_EQ(RenderColumn(kInt4Array, deep_array + "1" + std::string(7, '}')),
            "\"" + deep_array + "1" + std::string(7, '}') + "\"");
  const std::string deep_json = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  const std::string rendered = RenderColumn(kJsonb, deep_json);
  EXPECT_EQ(rendered.front(), '"');
  EXPECT_EQ(rendered.size(), deep_json.size() + 2);
  const std::string ok_json = std::string(256, '[') + std::string(256, ']');
  EXPECT_EQ(RenderColumn(kJsonb, ok_json), ok_json);
  // A long array renders in one pass.
  std::string big = "{";
  for (int i = 0; i < 200000; ++i) big += (i ? "," : "") + std::to_string(i);
  big += "}";
  EXPECT_EQ(RenderColumn(kInt4Array, big).size(), big.size() + 200000 - 1);
}

}  // namespace
}  // namespace courier::cdc
