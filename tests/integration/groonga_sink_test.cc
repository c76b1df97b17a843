// The search-index sink against a real groonga server, read back through groonga's own select
// API: one document per row equal to its `after`, searchable by its text; deletes, truncates,
// no regression to an older version on redelivery or after a delete; refusals rejected with
// groonga's message; an unreachable server retried.
#include <nlohmann/json.hpp>

#include "support/fixtures.h"
#include "support/table_changes.h"

namespace courier::test {
namespace {

class GroongaSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = GroongaServer::Start();
    ASSERT_OK(server);
    groonga_ = std::move(server).value();
  }

  // Publishes `events` in one batch through a new sink; one status per event.
  std::vector<Status> Publish(const std::vector<Event>& events, const std::string& query = "") {
    std::unique_ptr<Sink> sink =
        OpenSink(groonga_->Url("cdc_") + (query.empty() ? "" : "?" + query));
    if (sink == nullptr) return {};
    return PublishAll(*sink, events);
  }

  void Apply(const std::vector<Event>& events) {
    for (const Status& s : Publish(events)) EXPECT_OK(s);
  }

  // The body of a select, parsed.
  nlohmann::json Select(const std::vector<std::pair<std::string, std::string>>& args) {
    auto answer = groonga_->Command("select", args);
    EXPECT_OK(answer);
    if (!answer.ok()) return nullptr;
    nlohmann::json reply = nlohmann::json::parse(*answer);
    EXPECT_EQ(reply["header"]["return_code"], 0) << *answer;
    return reply["body"];
  }

  // The document of `key` in groonga table `table`: its courier_source, parsed; null if none.
  nlohmann::json Document(const std::string& table, const std::string& key) {
    nlohmann::json body = Select({{"table", table},
                                  {"filter", "_key == \"" + key + "\""},
                                  {"output_columns", "courier_source"}});
    if (!body.is_object() || body["records"].empty()) return nullptr;
    return nlohmann::json::parse(body["records"][0][0].get<std::string>());
  }

  std::unique_ptr<GroongaServer> groonga_;
};

TEST_F(GroongaSinkTest, OneDocumentPerRowEqualToItsAfterAndSearchable) {
  const std::string row =
      R"({"id":1,"name":"The quick brown fox","price":12.50,"big":9007199254740993,)"
      R"("ok":true,"note":null,"doc":{"tags":["a","b"]},"at":"2026-11-26T22:00:00+00:00"})";
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, row),
         TableChangeEvent("insert", "products", "2", 100, 2, R"({"id":2,"name":"lazy dog"})"),
         TableChangeEvent("read", "sales.orders", "[7,\"eu\"]", 90, 0, R"({"id":7,"r":"eu"})")});
  EXPECT_EQ(Document("cdc_products", "1"), nlohmann::json::parse(row));
  EXPECT_EQ(Document("cdc_products", "2"), nlohmann::json::parse(R"({"id":2,"name":"lazy dog"})"));
  EXPECT_EQ(Document("cdc_sales_orders", "[7,\\\"eu\\\"]"),
            nlohmann::json::parse(R"({"id":7,"r":"eu"})"));
  // courier_source is the text as the event carried it, byte for byte.
  nlohmann::json exact =
      Select({{"table", "cdc_products"},
              {"filter", "_key == \"1\""},
              {"output_columns", "courier_source,courier_lsn,courier_position"}});
  EXPECT_EQ(exact["records"][0], nlohmann::json::array({row, 100, 1}));
  // Text columns have a full-text index; the others are typed columns a filter can use.
  nlohmann::json found = Select({{"table", "cdc_products"},
                                 {"match_columns", "name"},
                                 {"query", "brown"},
                                 {"output_columns", "_key"}});
  EXPECT_EQ(found["records"], nlohmann::json::parse(R"([["1"]])"));
  found = Select({{"table", "cdc_products"},
                  {"filter", "price > 10 && ok == true"},
                  {"output_columns", "_key"}});
  EXPECT_EQ(found["records"], nlohmann::json::parse(R"([["1"]])"));
  // An update replaces the document; a null clears its column.
  Apply({TableChangeEvent("update", "products", "1", 101, 1,
                          R"({"id":1,"name":null,"price":3,"ok":false,"note":"n"})")});
  EXPECT_EQ(Document("cdc_products", "1"),
            nlohmann::json::parse(R"({"id":1,"name":null,"price":3,"ok":false,"note":"n"})"));
  found = Select({{"table", "cdc_products"},
                  {"match_columns", "name"},
                  {"query", "brown"},
                  {"output_columns", "_key"}});
  EXPECT_TRUE(found["records"].empty()) << found;
}

TEST_F(GroongaSinkTest, NoDocumentEverGoesBackToAnOlderVersion) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1,"v":1})"),
         TableChangeEvent("update", "products", "1", 100, 2, R"({"id":1,"v":2})"),
         TableChangeEvent("update", "products", "1", 200, 1, R"({"id":1,"v":3})")});
  ASSERT_EQ(Document("cdc_products", "1"), nlohmann::json::parse(R"({"id":1,"v":3})"));
  // Redelivered alone, then everything again in order, then an earlier commit's later position.
  Apply({TableChangeEvent("update", "products", "1", 100, 2, R"({"id":1,"v":2})")});
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1,"v":1})"),
         TableChangeEvent("update", "products", "1", 100, 2, R"({"id":1,"v":2})"),
         TableChangeEvent("update", "products", "1", 200, 1, R"({"id":1,"v":3})")});
  Apply({TableChangeEvent("update", "products", "1", 199, 9, R"({"id":1,"v":0})")});
  EXPECT_EQ(Document("cdc_products", "1"), nlohmann::json::parse(R"({"id":1,"v":3})"));
}

TEST_F(GroongaSinkTest, DeleteLeavesATombstoneSoAnOlderInsertCannotResurrectTheDocument) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
         TableChangeEvent("delete", "products", "1", 110, 1)});
  EXPECT_EQ(Document("cdc_products", "1"), nullptr);
  nlohmann::json tomb = Select({{"table", "cdc_courier_tombstones"},
                                {"filter", "_key == \"cdc_products:1\""},
                                {"output_columns", "lsn,position"}});
  EXPECT_EQ(tomb["records"], nlohmann::json::parse("[[110,1]]"));
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})")});
  EXPECT_EQ(Document("cdc_products", "1"), nullptr) << "the redelivered insert is older";
  Apply({TableChangeEvent("insert", "products", "1", 120, 1, R"({"id":1,"again":true})")});
  EXPECT_EQ(Document("cdc_products", "1"), nlohmann::json::parse(R"({"id":1,"again":true})"));
}

// Tombstones have a bounded life: a sink removes the expired ones when it starts writing.
TEST_F(GroongaSinkTest, ExpiredTombstonesAreRemoved) {
  for (const Status& s :
       Publish({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
                TableChangeEvent("delete", "products", "1", 110, 1)},
               "tombstone_ttl=1")) {
    ASSERT_OK(s);
  }
  auto tombstones = [&] {
    return Select({{"table", "cdc_courier_tombstones"}, {"output_columns", "_key"}})["records"];
  };
  ASSERT_EQ(tombstones().size(), 1u);
  uint64_t lsn = 200;
  EXPECT_TRUE(WaitUntil(
      [&] {
        // Each new sink purges once, before its first write.
        Publish({TableChangeEvent("insert", "orders", "1", ++lsn, 1, R"({"id":1})")},
                "tombstone_ttl=1");
        return tombstones().empty();
      },
      Duration(10000)));
}

TEST_F(GroongaSinkTest, TruncateDeletesTheTablesDocumentsOlderThanItself) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
         TableChangeEvent("insert", "products", "2", 100, 2, R"({"id":2})"),
         TableChangeEvent("insert", "products", "9", 300, 1, R"({"id":9})"),
         TableChangeEvent("insert", "orders", "1", 100, 3, R"({"id":1})")});
  Apply({TableChangeEvent("truncate", "products", "", 200, 1)});
  EXPECT_EQ(Document("cdc_products", "1"), nullptr);
  EXPECT_EQ(Document("cdc_products", "2"), nullptr);
  EXPECT_EQ(Document("cdc_products", "9"), nlohmann::json::parse(R"({"id":9})"))
      << "newer than the truncate";
  EXPECT_EQ(Document("cdc_orders", "1"), nlohmann::json::parse(R"({"id":1})"));
  // Older changes redelivered stay out, also through a new sink that did not see the truncate;
  // newer ones go in.
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
         TableChangeEvent("insert", "products", "4", 200, 2, R"({"id":4})")});
  EXPECT_EQ(Document("cdc_products", "1"), nullptr);
  EXPECT_EQ(Document("cdc_products", "4"), nlohmann::json::parse(R"({"id":4})"));
}

TEST_F(GroongaSinkTest, AnUpdateWithUnavailableColumnsKeepsTheirIndexedValues) {
  Apply({TableChangeEvent("insert", "docs", "1", 100, 1,
                          R"({"id":1,"body":"a long \"text\" }{","n":1})")});
  Apply({TableChangeEvent("update", "docs", "1", 101, 1, R"({"id":1,"n":2})", {"body"})});
  EXPECT_EQ(Document("cdc_docs", "1"),
            nlohmann::json::parse(R"({"id":1,"n":2,"body":"a long \"text\" }{"})"));
  nlohmann::json found = Select({{"table", "cdc_docs"},
                                 {"match_columns", "body"},
                                 {"query", "long"},
                                 {"output_columns", "_key,n"}});
  EXPECT_EQ(found["records"], nlohmann::json::parse(R"([["1",2.0]])"));
}

TEST_F(GroongaSinkTest, RefusalsAreRejectedWithGroongasMessageAndHoldTheirRowBack) {
  Apply({TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1,"v":1})")});
  std::vector<Status> results =
      Publish({TableChangeEvent("insert", "my table", "1", 101, 1, R"({"id":1})"),
               TableChangeEvent("update", "products", "1", 102, 1, R"({"id":1,"v":"abc"})"),
               TableChangeEvent("update", "products", "1", 103, 1, R"({"id":1,"v":3})"),
               TableChangeEvent("insert", "products", "2", 104, 1, R"({"id":2,"v":4})"), [] {
                 Event outbox;
                 outbox.aggregate_type = "order";
                 outbox.aggregate_id = "o-1";
                 outbox.event_type = "Created";
                 outbox.version = Version{5, 0};
                 outbox.payload = "{}";
                 return outbox;
               }()});
  ASSERT_EQ(results.size(), 5u);
  const std::string where = "groonga http://127.0.0.1:" + std::to_string(groonga_->port());
  EXPECT_STATUS(results[0], StatusCode::kRejected);
  EXPECT_EQ(results[0].message(),
            where +
                " table_create refused: [table][create] name can't start with '_' and "
                "contains only 0-9, A-Z, a-z, #, @, - or _: <cdc_my table>");
  EXPECT_STATUS(results[1], StatusCode::kRejected);
  EXPECT_EQ(results[1].message(),
            where + " load refused: <cdc_products.v>: failed to cast to <Float>: <\"abc\">");
  EXPECT_STATUS(results[2], StatusCode::kRetriable);  // held behind the refused one
  EXPECT_OK(results[3]);
  EXPECT_STATUS(results[4], StatusCode::kRejected);
  EXPECT_EQ(results[4].message(),
            "the groonga sink indexes rows of captured tables (relay --capture); an outbox "
            "event (order Created) has no row");
  EXPECT_EQ(Document("cdc_products", "1"), nlohmann::json::parse(R"({"id":1,"v":1})"))
      << "the refused change left the document's source and version as they were";
  EXPECT_EQ(Document("cdc_products", "2"), nlohmann::json::parse(R"({"id":2,"v":4})"));
}

// The server away: every event of the batch comes back retriable, none is lost; once it is
// back the same events are applied.
TEST_F(GroongaSinkTest, UnreachableServerIsRetriedThenApplied) {
  std::unique_ptr<Sink> sink = OpenSink(groonga_->Url("cdc_"));
  ASSERT_NE(sink, nullptr);
  const std::vector<Event> events = {
      TableChangeEvent("insert", "products", "1", 100, 1, R"({"id":1})"),
      TableChangeEvent("insert", "products", "2", 100, 2, R"({"id":2})")};
  ASSERT_OK(groonga_->Stop());
  for (const Status& s : PublishAll(*sink, events)) EXPECT_STATUS(s, StatusCode::kRetriable);
  ASSERT_OK(groonga_->StartAgain());
  for (const Status& s : PublishAll(*sink, events)) EXPECT_OK(s);
  EXPECT_EQ(Document("cdc_products", "2"), nlohmann::json::parse(R"({"id":2})"));
}

TEST(GroongaSinkUrl, BadSettingsAreOneLineErrors) {
  for (const auto& [url, message] : std::vector<std::pair<std::string, std::string>>{
           {"groonga://127.0.0.1:10041/_x",
            "groonga URL groonga://127.0.0.1:10041/_x: the prefix '_x' must be letters, digits, "
            "#, @, - or _, not starting with _"},
           {"groonga://127.0.0.1:10041/a?tombstone_ttl=soon",
            "groonga sink: tombstone_ttl must be seconds (0: forever), not 'soon'"},
           {"groonga://127.0.0.1:10041/a?ttl=1",
            "groonga sink: unknown parameter 'ttl' (known: tombstone_ttl)"}}) {
    SinkOptions options;
    options.url = url;
    const Status s = CheckSink(options);
    EXPECT_STATUS(s, StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), message);
  }
  SinkOptions options;
  options.url = "groonga+https://search.example:443/cdc_?tombstone_ttl=0";
  EXPECT_OK(CheckSink(options));
}

}  // namespace
}  // namespace courier::test
