#include "core/url.h"

#include <gtest/gtest.h>

#include "sinks/amqp.h"
#include "sinks/nats.h"
#include "sinks/sink.h"
#include "sources/source.h"
#include "support/matchers.h"

namespace courier {
namespace {

TEST(Url, ParsesKafkaWithHostsPathAndQuery) {
  auto url = ParseUrl("kafka://h1:9092,h2:9093/{aggregate_type}?security.protocol=SASL_SSL");
  ASSERT_OK(url);
  EXPECT_EQ(url->scheme, "kafka");
  EXPECT_EQ(url->hosts, "h1:9092,h2:9093");
  EXPECT_EQ(url->path, "{aggregate_type}");
  ASSERT_EQ(url->query.size(), 1u);
  EXPECT_EQ(url->query[0].first, "security.protocol");
  EXPECT_EQ(url->query[0].second, "SASL_SSL");
}

TEST(Url, ParsesUserAndPercentEncodedPassword) {
  auto url = ParseUrl("amqp://guest:p%40ss@localhost/vhost");
  ASSERT_OK(url);
  EXPECT_EQ(url->user, "guest");
  EXPECT_EQ(url->password, "p@ss");
  EXPECT_EQ(url->path, "vhost");
}

TEST(Url, RejectsTextWithoutScheme) {
  EXPECT_STATUS(ParseUrl("localhost:9092"), StatusCode::kInvalidArgument);
  EXPECT_STATUS(ParseUrl("kafka://h/t?novalue"), StatusCode::kInvalidArgument);
}

TEST(Url, RedactsPasswordsAndSecretParameters) {
  EXPECT_EQ(RedactUrl("postgres://app:hunter2@db:5432/app"), "postgres://app:***@db:5432/app");
  EXPECT_EQ(RedactUrl("kafka://h:9092/t?sasl.password=hunter2&acks=all"),
            "kafka://h:9092/t?sasl.password=***&acks=all");
  EXPECT_EQ(RedactUrl("host=db password=hunter2 dbname=app"), "host=db password=*** dbname=app");
  EXPECT_EQ(RedactUrl("kafka://h:9092/orders"), "kafka://h:9092/orders");
}

TEST(SourceUrl, KnowsPostgresAndSqlite) {
  auto pg = ParseSourceUrl("postgresql://u@h/db");
  ASSERT_OK(pg);
  EXPECT_EQ(pg->kind, SourceLocation::Kind::kPostgres);
  auto lite = ParseSourceUrl("sqlite:///var/app.db");
  ASSERT_OK(lite);
  EXPECT_EQ(lite->kind, SourceLocation::Kind::kSqlite);
  EXPECT_EQ(lite->target, "/var/app.db");
  auto bad = ParseSourceUrl("mysql://h/db");
  EXPECT_STATUS(bad, StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("expected postgres://"), std::string::npos);
}

TEST(SinkUrl, UnknownSchemeIsInvalidArgument) {
  auto sink = MakeSink(SinkOptions{.url = "carrier-pigeon://loft/1"});
  EXPECT_STATUS(sink, StatusCode::kInvalidArgument);
  EXPECT_NE(sink.status().message().find("unknown sink scheme 'carrier-pigeon'"),
            std::string::npos);
}

TEST(SinkUrl, AmqpNamesVhostExchangeAndRoutingKey) {
  auto e = ParseAmqpUrl("amqp://app:s%40cret@mq:5673/%2F/events?routing_key={aggregate_type}.x");
  ASSERT_OK(e);
  EXPECT_EQ(e->host, "mq");
  EXPECT_EQ(e->port, 5673);
  EXPECT_EQ(e->user, "app");
  EXPECT_EQ(e->password, "s@cret");
  EXPECT_EQ(e->vhost, "/");
  EXPECT_EQ(e->exchange, "events");
  EXPECT_EQ(e->routing_key, "{aggregate_type}.x");

  auto d = ParseAmqpUrl("amqp://mq/shop/");  // the default exchange of vhost "shop"
  ASSERT_OK(d);
  EXPECT_EQ(d->port, 5672);
  EXPECT_EQ(d->user, "guest");
  EXPECT_EQ(d->vhost, "shop");
  EXPECT_EQ(d->exchange, "");
  EXPECT_EQ(d->routing_key, "{aggregate_type}");

  for (const char* bad : {"amqp://mq/events", "amqp://mq", "amqp://mq:99999/%2F/x",
                          "amqp://a,b/%2F/x", "amqp://mq/%2F/x?routing=y"}) {
    auto r = ParseAmqpUrl(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  }
}

TEST(SinkUrl, AmqpsAndNatsTlsReadTheTlsParameters) {
  auto a = ParseAmqpUrl("amqps://mq/%2F/x?cacert=/etc/ca.pem&cert=/c.pem&key=/c.key");
  ASSERT_OK(a);
  EXPECT_TRUE(a->tls.enabled);
  EXPECT_EQ(a->port, 5671);
  EXPECT_EQ(a->tls.ca_file, "/etc/ca.pem");
  EXPECT_EQ(a->tls.cert_file, "/c.pem");
  EXPECT_EQ(a->tls.key_file, "/c.key");
  EXPECT_TRUE(a->tls.verify);
  EXPECT_FALSE(ParseAmqpUrl("amqp://mq/%2F/x")->tls.enabled);

  auto n = ParseNatsUrl("nats+tls://n1:4222,n2:4222/orders?verify=false");
  ASSERT_OK(n);
  EXPECT_TRUE(n->tls.enabled);
  EXPECT_FALSE(n->tls.verify);
  EXPECT_EQ(n->servers, (std::vector<std::string>{"nats://n1:4222", "nats://n2:4222"}));
  EXPECT_FALSE(ParseNatsUrl("nats://n1:4222/orders")->tls.enabled);

  for (const char* bad : {"amqp://mq/%2F/x?cacert=/ca.pem", "amqps://mq/%2F/x?cert=/c.pem",
                          "amqps://mq/%2F/x?verify=no", "nats://n:4222/s?verify=false",
                          "nats+tls://n:4222/s?key=/k", "nats://n:4222/s?retries=3"}) {
    const Status st = std::string(bad).rfind("amqp", 0) == 0 ? ParseAmqpUrl(bad).status()
                                                             : ParseNatsUrl(bad).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(SinkUrl, TemplatesExpandAggregateAndEventType) {
  Event e;
  e.aggregate_type = "order";
  e.event_type = "OrderCreated";
  EXPECT_EQ(ExpandTemplate("{aggregate_type}", e), "order");
  EXPECT_EQ(ExpandTemplate("app.{aggregate_type}.{event_type}.v1", e), "app.order.OrderCreated.v1");
  EXPECT_EQ(ExpandTemplate("{unknown}", e), "{unknown}");
}

}  // namespace
}  // namespace courier
