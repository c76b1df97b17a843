// The Redis cache sink fed changes of captured tables, against a real redis-server: each key
// holds exactly the row's `after`, deletes and truncates remove keys, and no older version ever
// overwrites a newer one, also after a delete or a truncate.
#include <hiredis/hiredis.h>

#include <nlohmann/json.hpp>

#include "support/fixtures.h"
#include "support/table_changes.h"

namespace courier::test {
namespace {

class TableCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start();
    ASSERT_OK(redis);
    redis_ = std::move(redis).value();
    auto endpoint = ParseRedisUrl(redis_->Url());
    ASSERT_OK(endpoint);
    auto conn = ConnectRedis(*endpoint, Duration(5000));
    ASSERT_OK(conn);
    conn_ = std::move(conn).value();
  }

  std::string Url(const std::string& query = "") const {
    return "redis-cache://127.0.0.1:" + std::to_string(redis_->port()) + "/cache" +
           (query.empty() ? "" : "?" + query);
  }

  // Publishes `events` in one batch through a new sink and expects every one acked.
  void Apply(const std::vector<Event>& events, const std::string& query = "") {
    std::unique_ptr<Sink> sink = OpenSink(Url(query));
    ASSERT_NE(sink, nullptr);
    for (const Status& s : PublishAll(*sink, events)) EXPECT_OK(s);
  }

  std::optional<std::string> Get(const std::string& key) {
    auto* reply = static_cast<redisReply*>(redisCommand(conn_.get(), "GET %s", key.c_str()));
    EXPECT_NE(reply, nullptr);
    std::optional<std::string> value;
    if (reply != nullptr && reply->type == REDIS_REPLY_STRING)
      value.emplace(reply->str, reply->len);
    if (reply != nullptr) freeReplyObject(reply);
    return value;
  }

  long long Ttl(const std::string& key) {
    auto* reply = static_cast<redisReply*>(redisCommand(conn_.get(), "TTL %s", key.c_str()));
    const long long ttl = reply != nullptr ? reply->integer : -3;
    if (reply != nullptr) freeReplyObject(reply);
    return ttl;
  }

  std::unique_ptr<RedisServer> redis_;
  RedisConn conn_;
};

// Values the way to_jsonb renders them, some of which a parse-and-print would change: a
// numeric of 38 digits, a bigint above 2^53, a trailing zero, nested jsonb, escapes.
constexpr const char* kRow =
    R"({"id":1,"big":9007199254740993,"price":12345678901234567890.123456789012345678,)"
    R"("ratio":1.50,"ok":true,"note":null,"doc":{"a":[1,{"b":"}]\"["}]},)"
    R"("name":"caf\u00e9 \"quoted\" \\ back","at":"2026-11-26T22:00:00.123456+00:00"})";

TEST_F(TableCacheTest, KeyHoldsExactlyTheRowsAfter) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, kRow),
         TableChangeEvent("insert", "sales.orders", "[7,\"eu\"]", 100, 2, R"({"id":7,"r":"eu"})"),
         TableChangeEvent("read", "products", "2", 90, 0, R"({"id":2})")});
  EXPECT_EQ(Get("cache:products:1"), kRow) << "the text as the event carries it, byte for byte";
  EXPECT_EQ(Get("cache:sales.orders:[7,\"eu\"]"), R"({"id":7,"r":"eu"})");
  EXPECT_EQ(Get("cache:products:2"), R"({"id":2})");
  EXPECT_EQ(Get("courier:version:cache:products:1"), (Version{100, 1}.ToString()));
  EXPECT_EQ(Ttl("cache:products:1"), -1);
  // A payload that is not compact JSON (whitespace outside strings) is stored compact.
  Event spaced = TableChangeEvent("update", "products", "2", 101, 1, R"({"id":2})");
  spaced.payload = R"({ "op" : "update", "after" : { "id" : 2, "s" : "a b" } })";
  Apply({spaced});
  EXPECT_EQ(Get("cache:products:2"), R"({"id":2,"s":"a b"})");
}

TEST_F(TableCacheTest, AnOlderVersionNeverOverwritesANewerOne) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1,"v":1})"),
         TableChangeEvent("update", "products", "1", 100, 2, R"({"id":1,"v":2})"),
         TableChangeEvent("update", "products", "1", 200, 1, R"({"id":1,"v":3})")});
  ASSERT_EQ(Get("cache:products:1"), R"({"id":1,"v":3})");
  // Redelivered, alone and in order, and the newest again: acked, nothing changes.
  Apply({TableChangeEvent("update", "products", "1", 100, 2, R"({"id":1,"v":2})")});
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1,"v":1})"),
         TableChangeEvent("update", "products", "1", 100, 2, R"({"id":1,"v":2})"),
         TableChangeEvent("update", "products", "1", 200, 1, R"({"id":1,"v":3})")});
  EXPECT_EQ(Get("cache:products:1"), R"({"id":1,"v":3})");
  // A later position of an earlier commit is still older: the commit LSN orders first.
  Apply({TableChangeEvent("update", "products", "1", 199, 9, R"({"id":1,"v":0})")});
  EXPECT_EQ(Get("cache:products:1"), R"({"id":1,"v":3})");
}

TEST_F(TableCacheTest, DeleteLeavesATombstoneSoAnOlderInsertCannotResurrectTheRow) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
         TableChangeEvent("delete", "products", "1", 110, 1)});
  EXPECT_EQ(Get("cache:products:1"), std::nullopt);
  EXPECT_EQ(Get("courier:version:cache:products:1"), (Version{110, 1}.ToString()));
  const long long life = Ttl("courier:version:cache:products:1");
  EXPECT_GT(life, 604800 - 60) << "a week by default";
  EXPECT_LE(life, 604800);
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})")});
  EXPECT_EQ(Get("cache:products:1"), std::nullopt) << "the redelivered insert is older";
  // A newer insert (the key used again) is applied.
  Apply({TableChangeEvent("insert", "products", "1", 120, 1, R"({"id":1,"again":true})")});
  EXPECT_EQ(Get("cache:products:1"), R"({"id":1,"again":true})");
  EXPECT_EQ(Ttl("courier:version:cache:products:1"), -1) << "a live row's version stays";
  // tombstone_ttl=0 keeps tombstones for ever.
  Apply({TableChangeEvent("delete", "products", "1", 130, 1)}, "tombstone_ttl=0");
  EXPECT_EQ(Ttl("courier:version:cache:products:1"), -1);
  EXPECT_EQ(Get("cache:products:1"), std::nullopt);
}

TEST_F(TableCacheTest, TruncateDeletesTheTablesKeysOlderThanItself) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
         TableChangeEvent("insert", "products", "2", 100, 2, R"({"id":2})"),
         TableChangeEvent("insert", "products", "3", 100, 3, R"({"id":3})"),
         TableChangeEvent("delete", "products", "3", 101, 1),
         TableChangeEvent("insert", "products", "9", 300, 1, R"({"id":9})"),
         TableChangeEvent("insert", "prod", "1", 100, 4, R"({"id":1})"),
         TableChangeEvent("insert", "orders", "1", 100, 5, R"({"id":1})")});
  // A truncate at 200: the row written at 300 was applied before (a redelivered truncate).
  Apply({TableChangeEvent("truncate", "products", "", 200, 1)});
  EXPECT_EQ(Get("cache:products:1"), std::nullopt);
  EXPECT_EQ(Get("cache:products:2"), std::nullopt);
  EXPECT_EQ(Get("courier:version:cache:products:1"), std::nullopt) << "the marker stands for it";
  EXPECT_EQ(Get("courier:version:cache:products:3"), std::nullopt) << "the tombstone too";
  EXPECT_EQ(Get("cache:products:9"), R"({"id":9})") << "newer than the truncate";
  EXPECT_EQ(Get("cache:prod:1"), R"({"id":1})") << "another table sharing the name's start";
  EXPECT_EQ(Get("cache:orders:1"), R"({"id":1})");
  EXPECT_EQ(Get("courier:truncated:cache:products"), (Version{200, 1}.ToString()));
  // Changes older than the truncate, redelivered, stay out; newer ones go in.
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
         TableChangeEvent("update", "products", "2", 150, 1, R"({"id":2})"),
         TableChangeEvent("insert", "products", "4", 200, 2, R"({"id":4})")});
  EXPECT_EQ(Get("cache:products:1"), std::nullopt);
  EXPECT_EQ(Get("cache:products:2"), std::nullopt);
  EXPECT_EQ(Get("cache:products:4"), R"({"id":4})");
  // The truncate redelivered after that: stale, the newer row stays.
  Apply({TableChangeEvent("truncate", "products", "", 200, 1)});
  EXPECT_EQ(Get("cache:products:4"), R"({"id":4})");
  EXPECT_EQ(Get("cache:products:9"), R"({"id":9})");
}

// Without REPLICA IDENTITY FULL an update of other columns does not carry an unchanged TOASTed
// value: the cached row keeps it instead of losing it.
TEST_F(TableCacheTest, AnUpdateWithUnavailableColumnsKeepsTheirCachedValues) {
  const std::string body = R"("long text with \"quotes\", braces }{ ][ and a \\ backslash")";
  Apply({TableChangeEvent("insert", "docs", "1", 100, 1,
                          R"({"id":1,"body":)" + body + R"(,"meta":{"k":"}"},"n":1})")});
  Apply({TableChangeEvent("update", "docs", "1", 101, 1, R"({"id":1,"n":2})", {"body", "meta"})});
  auto cached = Get("cache:docs:1");
  ASSERT_TRUE(cached.has_value());
  EXPECT_EQ(nlohmann::json::parse(*cached),
            nlohmann::json::parse(R"({"id":1,"n":2,"body":)" + body + R"(,"meta":{"k":"}"}})"))
      << *cached;
  // A column the update did carry is the update's; one the cache never had stays absent.
  Apply({TableChangeEvent("update", "docs", "1", 102, 1, R"({"id":1,"n":3,"body":"new"})",
                          {"body", "meta", "extra"})});
  cached = Get("cache:docs:1");
  ASSERT_TRUE(cached.has_value());
  EXPECT_EQ(nlohmann::json::parse(*cached),
            nlohmann::json::parse(R"({"id":1,"n":3,"body":"new","meta":{"k":"}"}})"))
      << *cached;
  // Nothing cached: the row as the update has it.
  Apply({TableChangeEvent("update", "docs", "2", 103, 1, R"({"id":2})", {"body"})});
  EXPECT_EQ(Get("cache:docs:2"), R"({"id":2})");
}

TEST_F(TableCacheTest, AChangeWithoutItsRowIsRejectedAndItsKeyHeldBack) {
  std::unique_ptr<Sink> sink = OpenSink(Url());
  ASSERT_NE(sink, nullptr);
  std::vector<Status> results =
      PublishAll(*sink, {TableChangeEvent("update", "products", "1", 100, 1, ""),
                         TableChangeEvent("update", "products", "1", 100, 2, R"({"id":1})"),
                         TableChangeEvent("upsert", "products", "2", 100, 3, R"({"id":2})"),
                         TableChangeEvent("insert", "products", "3", 100, 4, R"({"id":3})")});
  ASSERT_EQ(results.size(), 4u);
  EXPECT_STATUS(results[0], StatusCode::kRejected);
  EXPECT_EQ(results[0].message(),
            "the update of products 1 carries no row: its payload has no \"after\" object");
  EXPECT_STATUS(results[1], StatusCode::kRetriable);  // held behind the refused one
  EXPECT_STATUS(results[2], StatusCode::kRejected);
  EXPECT_EQ(results[2].message(),
            "a table change of type 'upsert': expected insert, update, read, delete or truncate");
  EXPECT_OK(results[3]);
  EXPECT_EQ(Get("cache:products:1"), std::nullopt);
  EXPECT_EQ(Get("cache:products:3"), R"({"id":3})");
}

TEST(TableCacheUrl, TombstoneTtlMustBeSeconds) {
  SinkOptions options;
  options.url = "redis-cache://127.0.0.1:6379/c?tombstone_ttl=soon";
  const Status s = CheckSink(options);
  EXPECT_STATUS(s, StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "redis-cache sink: tombstone_ttl must be seconds (0: forever), not 'soon'");
}

}  // namespace
}  // namespace courier::test
