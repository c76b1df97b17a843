// RenderColumn (sources/cdc/change.h) against a real PostgreSQL 15: for many values of every
// type it covers — edge cases and random values — the column's text as the server's output
// function writes it under the replication connection's settings must render byte for byte
// as to_jsonb(value)::text. (Both sides are jsonb's text form, spacing included, so the
// comparison is of bytes, never of parsed JSON.)
#include <string>
#include <vector>

#include "sources/cdc/change.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

class CdcRenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto url = SharedPostgres().NewDatabase("render");
    ASSERT_OK(url);
    auto conn = PgConnect(*url);
    ASSERT_OK(conn);
    conn_ = std::move(conn).value();
    // The settings the CDC source's replication connection uses (pgoutput writes values with
    // the walsender session's output functions).
    ASSERT_OK(PgRun(conn_.get(),
                    "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres;"
                    " SET bytea_output = hex; SET extra_float_digits = 3;"
                    " SELECT setseed(0.42);"
                    " CREATE TYPE mood AS ENUM ('sad', 'happy');"
                    " CREATE DOMAIN posint AS int CHECK (VALUE > 0);"));
  }

  // Checks every row of `sql`, a query of one column `v`; returns how many were checked.
  int CheckQuery(const std::string& sql) {
    auto res = PgExec(conn_.get(), "SELECT v, to_jsonb(v)::text, pg_typeof(v)::oid::text FROM (" +
                                       sql + ") AS q(v) WHERE v IS NOT NULL");
    EXPECT_OK(res);
    if (!res.ok()) return 0;
    PGresult* r = res->get();
    for (int i = 0; i < PQntuples(r); ++i) {
      const std::string text(PQgetvalue(r, i, 0), PQgetlength(r, i, 0));
      const std::string expected = PQgetvalue(r, i, 1);
      const uint32_t oid = static_cast<uint32_t>(std::stoul(PQgetvalue(r, i, 2)));
      EXPECT_EQ(cdc::RenderColumn(oid, text), expected)
          << "type " << oid << ", text " << text << "\n  from " << sql;
    }
    checked_ += PQntuples(r);
    return PQntuples(r);
  }

  // Each SQL expression cast to `type`, checked.
  void Check(const std::string& type, const std::vector<std::string>& exprs) {
    std::string values;
    for (const std::string& e : exprs) {
      values += (values.empty() ? "VALUES (" : "), (") + std::string("(") + e + ")::" + type;
    }
    EXPECT_EQ(CheckQuery(values + ")"), static_cast<int>(exprs.size())) << type;
  }

  // `n` random values: `expr` evaluated once per row of generate_series.
  void Random(const std::string& expr, int n = 300) {
    EXPECT_EQ(CheckQuery("SELECT " + expr + " FROM generate_series(1, " + std::to_string(n) + ")"),
              n)
        << expr;
  }

  PgConn conn_;
  int checked_ = 0;
};

TEST_F(CdcRenderTest, NumbersAndBooleans) {
  Check("bool", {"true", "false"});
  Check("int2", {"-32768", "32767", "0"});
  Check("int4", {"-2147483648", "2147483647", "7"});
  Check("int8", {"-9223372036854775808", "9223372036854775807"});
  Check("oid", {"0", "4294967295"});
  Check("float4", {"0.1", "1e30", "-1e-30", "'NaN'", "'Infinity'", "'-Infinity'", "'-0'",
                   "3.4028235e38", "1.17549435e-38", "1.4e-45", "123456.7", "1e6", "1e-5"});
  Check("float8", {"0.1", "0.30000000000000004", "1e308", "'5e-324'", "1.7976931348623157e308",
                   "'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "1e15", "1e16",
                   "123456789012345.6", "1e-4", "1e-5", "-2.5e-310"});
  Check("numeric", {"'NaN'", "'Infinity'", "'-Infinity'", "0", "'-0.000'", "1.50",
                    "repeat('9', 1000)", "'1e-300'", "'-1e300'",
                    "123456789012345678901234567890.123456789", "0.000000000000000000001"});
  Random("random() < 0.5");
  Random("(random() * 65535 - 32768)::int2");
  Random("(random() * 4294967295 - 2147483648)::int4");
  Random("((random() - 0.5) * 9.2e18)::int8");
  Random("((random() - 0.5) * 10 ^ (random() * 76 - 38))::float4");
  Random("((random() - 0.5) * 10 ^ (random() * 600 - 300))::float8");
  Random("random()");
  Random("(random() * 1e20)::numeric(30, 8)");
  Random("round((random() - 0.5)::numeric * power(10::numeric, (random() * 80 - 40)::int), 60)");
}

TEST_F(CdcRenderTest, JsonAndJsonb) {
  const std::vector<std::string> docs = {
      R"('{"b":1, "a" : [1,2.50,1e2,-0,1E-3, 0.0], "b":{"x":null},"aa":true, "":false}')",
      R"('"\u00e9\ud83d\ude00\/\u001f\"\\\b\f\n\r\t"')",
      "'[]'",
      "'{}'",
      "'  {\"k\" : \"v\"}  '",
      "'1E+2'",
      "'-0.0e5'",
      "'null'",
      "'true'",
      R"('{"a":{"a":{"a":[[[]]]}}}')",
      R"('[1e-300, 1e300, 123456789012345678901234567890.5]')",
      R"('{"long key first":1,"z":2,"yy":3,"é":4,"e":5}')",
      R"('"café 😀 \u0001"')",
      "'" + std::string(200, '[') + std::string(200, ']') + "'"};
  Check("json", docs);
  Check("jsonb", docs);
  Random(
      "json_build_object(md5(random()::text), random(), 'n', (random() * 1e6)::int,"
      " 'a', json_build_array(random() < 0.5, NULL, md5(random()::text)), 'x', random())");
  Random(
      "jsonb_build_object(chr((random() * 55000 + 1)::int), random() * 1e-10,"
      " 'k' || (random() * 10)::int, (random() * 1e30)::numeric)");
}

TEST_F(CdcRenderTest, TextLikeAndOtherStringTypes) {
  Check("text", {"''", R"('a"b\c/d')", R"(E'\x01\x1f\n\t\r\b\f')", "'café 😀'", "'NULL'",
                 "repeat('x', 100000)"});
  Check("varchar(10)", {"'abc'", "' '"});
  Check("bpchar(5)", {"'ab'"});
  Check("name", {"'pg_class'"});
  Check("\"char\"", {"'x'"});
  Check("uuid", {"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"});
  Check("inet", {"'192.168.0.1/24'", "'::1'"});
  Check("cidr", {"'10.0.0.0/8'"});
  Check("macaddr", {"'08:00:2b:01:02:03'"});
  Check("mood", {"'happy'", "'sad'"});  // an enum: not known by OID, its text as a string
  Check("interval",
        {"'1 year 2 mons -3 days 04:05:06.5'", "'-178000000 years'", "'0'", "'1 microsecond'"});
  Check("time", {"'00:00'", "'23:59:59.999999'", "'24:00:00'"});
  Check("timetz", {"'12:00+05:30'", "'12:00:01.5-08'"});
  Check("bytea", {"''", R"('\x00ff')", "decode(repeat('ab', 5000), 'hex')"});
  Check("money", {"1234.5", "-1", "0"});
  Check("bit(3)", {"'101'"});
  Check("varbit", {"'1'"});
  Check("point", {"'(1,2)'"});
  Check("xml", {"'<a>x</a>'"});
  Check("tsvector", {"'a fat cat'"});
  Check("int4range", {"'[1,5)'", "'empty'"});
  // Random strings of any character (chr's range stops short of the surrogates).
  EXPECT_EQ(CheckQuery("SELECT (SELECT string_agg(chr((random() * 55000 + 1)::int), '')"
                       " FROM generate_series(1, 30) WHERE g > 0) FROM generate_series(1, 300) g"),
            300);
  Random("md5(random()::text) || E'\\\\\"\\n'");
  Random("gen_random_uuid()");
  Random("decode(md5(random()::text), 'hex')");
  Random("(random() * 1e7)::numeric(12, 2)::money");
  Random("make_interval(secs => (random() - 0.5) * 1e9)");
  Random("(random() * interval '1 day')::time");
}

TEST_F(CdcRenderTest, DatesAndTimestamps) {
  const std::vector<std::string> stamps = {"'2026-11-26 22:18:23.123456'",
                                           "'0044-03-15 12:00:00 BC'",
                                           "'infinity'",
                                           "'-infinity'",
                                           "'294276-12-31 23:59:59.999999'",
                                           "'4713-01-01 00:00:00 BC'",
                                           "'2000-01-01'",
                                           "'1900-06-30 12:30:00.5'"};
  Check("timestamp", stamps);
  Check("timestamptz", stamps);
  Check("timestamptz", {"'2026-11-26 22:18:23.1+05:30'", "'1850-01-01 00:00 Europe/Paris'"});
  Check("date", {"'2026-11-26'", "'0044-03-15 BC'", "'infinity'", "'-infinity'", "'5874897-12-31'",
                 "'4713-01-01 BC'"});
  Random("date '2000-01-01' + (random() * 3e6 - 1.5e6)::int");
  Random("timestamp '2000-01-01' + random() * interval '2000000 days' - interval '1000000 days'");
  Random("now() + random() * interval '400000 days' - interval '200000 days'");
}

TEST_F(CdcRenderTest, Arrays) {
  Check("int4[]", {"'{1,2,NULL}'", "'{}'", "'{{1,2},{3,4}}'", "'[0:1]={7,8}'",
                   "'[-2:-1][3:4]={{1,2},{3,4}}'", "'{{{1},{2}},{{3},{4}}}'"});
  Check("text[]", {R"(ARRAY['a b', 'c"d', 'e\f', NULL, 'NULL', 'null', '', ' x', '{', 'é'])"});
  Check("float8[]", {"'{1e100,NaN,-Infinity,0.1,-0}'"});
  Check("float4[]", {"'{1e30,NaN}'"});
  Check("numeric[]", {"'{1.10,NaN,Infinity,-1e-20}'"});
  Check("bool[]", {"'{t,f,NULL}'"});
  Check("int2[]", {"'{1}'"});
  Check("int8[]", {"'{9223372036854775807}'"});
  Check("oid[]", {"'{1,2}'"});
  Check("json[]", {R"(ARRAY['{"b":1,"a":2}'::json, NULL, '"s"', '[1, 2]'])"});
  Check("jsonb[]", {R"(ARRAY['{"b":1,"a":2}'::jsonb, NULL, '"s"'])"});
  Check("timestamptz[]", {"ARRAY['2026-11-26 22:18:23.5+00'::timestamptz, 'infinity', NULL]"});
  Check("timestamp[]", {"ARRAY['0044-03-15 12:00:00 BC'::timestamp]"});
  Check("date[]", {"ARRAY['0044-03-15 BC'::date, '2026-11-26']"});
  Check("uuid[]", {"ARRAY[gen_random_uuid()]"});
  Check("bytea[]", {R"(ARRAY['\x00ff'::bytea, ''])"});
  Check("box[]", {"ARRAY[box '((0,0),(1,1))', box '((2,2),(3,3))']"});
  Check("interval[]", {"ARRAY['1 day'::interval, '-1 year']"});
  Check("varchar[]", {"'{a,\"b c\"}'"});
  Check("money[]", {"'{1,2}'"});
  Check("inet[]", {"'{::1,10.0.0.1}'"});
  Check("time[]", {"'{10:00,11:00:00.5}'"});
  EXPECT_EQ(CheckQuery("SELECT ARRAY(SELECT (random() * 1000)::int FROM generate_series(1,"
                       " (random() * 20)::int) WHERE g > 0) FROM generate_series(1, 300) g"),
            300);
  Random("ARRAY[random(), NULL, (random() - 0.5) * 1e300]");
  Random("ARRAY[md5(random()::text) || '\"\\,{}', NULL, '']");
  Random("ARRAY[[random()::numeric(10,4), 1], [2, 3]]");
  Random("ARRAY[now() - random() * interval '100000 days']");
  EXPECT_GT(checked_, 100);
}

}  // namespace
}  // namespace courier::test
