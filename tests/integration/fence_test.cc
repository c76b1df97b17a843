// G8 at each sink: a relay whose lease deadline has passed (frozen past it, then resumed)
// hands nothing more to any client library, even on a connection that is open and healthy,
// and without anyone having called Abandon() yet (the renewer thread may not have run).
#include "brokers/sink.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

std::vector<Event> Events(int n, int64_t first_seq) {
  std::vector<Event> out;
  for (int i = 0; i < n; ++i) {
    Event e;
    e.id = first_seq + i;
    e.event_id = NewUuidV7();
    e.aggregate_type = "order";
    e.aggregate_id = "agg-" + std::to_string(i % 3);
    e.event_type = "Happened";
    e.payload = "{\"seq\":" + std::to_string(first_seq + i) + "}";
    out.push_back(std::move(e));
  }
  return out;
}

std::set<std::string> IdsOf(const std::vector<Event>& events) {
  std::set<std::string> ids;
  for (const Event& e : events) ids.insert(e.event_id);
  return ids;
}

// Publishes a batch while the lease is valid, then one after its deadline passed; returns the
// first batch's ids (all that may arrive).
std::set<std::string> PublishAcrossTheDeadline(Sink& sink) {
  StopSignal fence;
  fence.BeginTerm(Clock::Real().Now() + std::chrono::hours(1));
  const std::vector<Event> valid = Events(20, 1);
  for (const Status& st : sink.Publish(valid, fence)) EXPECT_OK(st);

  StopSignal late;
  late.BeginTerm(Clock::Real().Now() - Duration(1));  // the lease ran out while frozen
  const std::vector<Event> zombie = Events(20, 21);
  for (const Status& st : sink.Publish(zombie, late)) {
    EXPECT_EQ(st.code(), StatusCode::kFenced) << st.ToString();
  }
  return IdsOf(valid);
}

std::unique_ptr<Sink> OpenSink(const std::string& url) {
  SinkOptions o;
  o.url = url;
  o.delivery_timeout = Duration(10000);
  auto sink = MakeSink(o);
  EXPECT_OK(sink);
  if (!sink.ok()) return nullptr;
  EXPECT_OK((*sink)->Open());
  return std::move(sink).value();
}

TEST(FencedSink, KafkaProducesNothingPastTheDeadline) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("order", 1));
  auto sink = OpenSink("kafka://" + (*broker)->bootstrap() + "/order");
  ASSERT_NE(sink, nullptr);
  const std::set<std::string> valid = PublishAcrossTheDeadline(*sink);
  EXPECT_EQ(ExpectDelivered(ReadTopic(**broker, "order"), valid), 0);
}

TEST(FencedSink, RedisAddsNothingPastTheDeadline) {
  auto redis = RedisServer::Start();
  ASSERT_OK(redis);
  auto sink = OpenSink((*redis)->Url("order"));
  ASSERT_NE(sink, nullptr);
  const std::set<std::string> valid = PublishAcrossTheDeadline(*sink);
  EXPECT_EQ(ExpectDelivered(ReadRedis(**redis, "order"), valid), 0);
}

TEST(FencedSink, NatsPublishesNothingPastTheDeadline) {
  auto nats = NatsServer::Start();
  ASSERT_OK(nats);
  ASSERT_OK((*nats)->AddStream("ORDERS", {"order"}));
  auto sink = OpenSink((*nats)->Url("order"));
  ASSERT_NE(sink, nullptr);
  const std::set<std::string> valid = PublishAcrossTheDeadline(*sink);
  EXPECT_EQ(ExpectDelivered(ReadNats(**nats, "order"), valid), 0);
}

TEST(FencedSink, WebhookPostsNothingPastTheDeadline) {
  auto server = WebhookServer::Start();
  ASSERT_OK(server);
  auto sink = OpenSink((*server)->Url("/events"));
  ASSERT_NE(sink, nullptr);
  const std::set<std::string> valid = PublishAcrossTheDeadline(*sink);
  EXPECT_EQ(ExpectDelivered(ReadWebhook(**server), valid), 0);
}

TEST(FencedSink, FileWritesNothingPastTheDeadline) {
  TempDir dir;
  const std::string path = dir.File("events.jsonl");
  auto sink = OpenSink("file://" + path);
  ASSERT_NE(sink, nullptr);
  PublishAcrossTheDeadline(*sink);
  const std::string text = ReadFile(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 20);
}

TEST(FencedSink, RabbitMqPublishesNothingPastTheDeadline) {
  auto server = RabbitMqServer::Start();
  ASSERT_OK(server);
  ASSERT_OK((*server)->DeclareExchange("ex-fence"));
  ASSERT_OK((*server)->DeclareQueue("orders-fence", "ex-fence", "order"));
  auto sink = OpenSink((*server)->Url("ex-fence", "routing_key={aggregate_type}"));
  ASSERT_NE(sink, nullptr);
  const std::set<std::string> valid = PublishAcrossTheDeadline(*sink);
  EXPECT_EQ(ExpectDelivered(ReadAmqp(**server, "orders-fence"), valid), 0);
}

}  // namespace
}  // namespace courier::test
