#include "core/url.h"

#include <gtest/gtest.h>

#include "brokers/amqp/amqp.h"
#include "brokers/nats/nats.h"
#include "brokers/sink.h"
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

// A port is a whole number from 1 to 65535, in every URL (each host of a list; an IPv6
// address keeps its colons inside brackets).
TEST(Url, PortsAreNumbersFrom1To65535) {
  for (const char* good : {"kafka://a:9092,b:9093/t", "nats://[::1]:4222/s", "http://h/x",
                           "postgres://u:p@h1,h2:5433/db", "file:///tmp/x", "amqp://[::1]/v/e"}) {
    EXPECT_OK(ParseUrl(good));
  }
  for (const auto& [text, port] :
       std::vector<std::pair<std::string, std::string>>{{"nats://127.0.0.1:-1/s", "-1"},
                                                        {"kafka://a:9092,b:99999/t", "99999"},
                                                        {"http://h:0/x", "0"},
                                                        {"postgres://u:secret@h:54x/db", "54x"},
                                                        {"redis://h:/s", ""},
                                                        {"nats://[::1]:+4222/s", "+4222"}}) {
    auto url = ParseUrl(text);
    EXPECT_STATUS(url, StatusCode::kInvalidArgument);
    EXPECT_EQ(url.status().message(), "'" + RedactUrl(text) + "' has a bad port '" + port +
                                          "'; a port is a number from 1 to 65535");
  }
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
  EXPECT_EQ(RedactUrl("host=db password = 'hunter 2' dbname=app"),
            "host=db password = '***' dbname=app");
  EXPECT_EQ(RedactUrl("kafka://h:9092/orders"), "kafka://h:9092/orders");
}

// Passwords written without percent-encoding: the user part runs to the last '@', so the whole
// password is hidden, whatever reserved characters it holds.
TEST(Url, RedactsPasswordsHoldingReservedCharacters) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"postgres://app:pa/ss?w@rd%zz@127.0.0.1:5432/app", "postgres://app:***@127.0.0.1:5432/app"},
      {"postgres://app:p@ss@db/app", "postgres://app:***@db/app"},
      {"postgres://app:p#ss@db/app?sslmode=disable", "postgres://app:***@db/app?sslmode=disable"},
      {"postgres://app:a:b:c@db/app", "postgres://app:***@db/app"},
      {"postgres://app:%zz%@db/app", "postgres://app:***@db/app"},
      {"postgres://app:12/x@db/app", "postgres://app:***@db/app"},
      {"postgresql://app:s3cret@[::1]:5432/app", "postgresql://app:***@[::1]:5432/app"},
      {"amqp://guest:g/u?e#st@mq:5672/%2F/events", "amqp://guest:***@mq:5672/%2F/events"},
      {"amqps://u:p%40ss@mq/%2F/x?cacert=/ca.pem", "amqps://u:***@mq/%2F/x?cacert=/ca.pem"},
      {"redis://:r3d1s@127.0.0.1:6379/s", "redis://:***@127.0.0.1:6379/s"},
      {"redis-cache://user:pw/x@h:6379/p", "redis-cache://user:***@h:6379/p"},
      {"nats://s3cr3t-token@n1:4222,n2:4222/orders", "nats://***@n1:4222,n2:4222/orders"},
      {"nats+tls://user:pa?ss@n1:4222/orders", "nats+tls://user:***@n1:4222/orders"},
      {"https://hook:w3bh00k@api.example.com/in", "https://hook:***@api.example.com/in"},
      {"--sink=nats://tok3n@n:4222/s", "--sink=nats://***@n:4222/s"},
      {"--source=postgres://app:pw@db/app", "--source=postgres://app:***@db/app"},
      {"kafka://h:9092/t?sasl.oauthbearer.config=principal=admin%20secret=x",
       "kafka://h:9092/t?sasl.oauthbearer.config=***"},
      {"kafka://h:9092/t?ssl.key.pem=-----BEGIN&ssl.key.password=kp&acks=all",
       "kafka://h:9092/t?ssl.key.pem=***&ssl.key.password=***&acks=all"},
      {"kafka://h:9092/t?sasl.oauthbearer.client.secret=cs&ssl.keystore.password=ks",
       "kafka://h:9092/t?sasl.oauthbearer.client.secret=***&ssl.keystore.password=***"},
      {"kafka://h:9092/t?sasl.password=a&b&c=d", "kafka://h:9092/t?sasl.password=***&c=d"},
      {"kafka://h:9092/t?sasl%2Epassword=x", "kafka://h:9092/t?sasl%2Epassword=***"},
      {"kafka://h:9092/t?sasl.username=me@corp&sasl.password=x",
       "kafka://h:9092/t?sasl.username=me@corp&sasl.password=***"},
      {"http://h:8080/hook?access_token=t0k&x=1", "http://h:8080/hook?access_token=***&x=1"},
      {"file:///var/out/a@b.jsonl", "file:///var/out/a@b.jsonl"},
      {"sqlite:///var/app.db", "sqlite:///var/app.db"},
  };
  for (const auto& [url, redacted] : cases) {
    EXPECT_EQ(RedactUrl(url), redacted) << url;
    EXPECT_EQ(MaskUrlSecrets(url).size(), url.size()) << url;
  }
  EXPECT_EQ(MaskUrlSecrets("postgres://app:pa/ss@db/app?password=q"),
            "postgres://app:xxxxx@db/app?password=x");
  EXPECT_EQ(MaskUrlSecrets("kafka://h/t"), "kafka://h/t");
}

TEST(Url, SecretsAreListedAsWrittenAndDecoded) {
  EXPECT_EQ(UrlSecrets("postgres://app:p%40ss%2Fw@db/app"),
            (std::vector<std::string>{"p@ss/w", "p%40ss%2Fw"}));
  EXPECT_EQ(UrlSecrets("nats://tok@n/s?x=1"), (std::vector<std::string>{"tok"}));
  EXPECT_EQ(UrlSecrets("kafka://h/t?acks=all"), std::vector<std::string>{});
  // libpq echoes pieces of a URL it cannot parse; scrubbing takes every form of the secret.
  EXPECT_EQ(ScrubSecrets("auth for \"p@ss/w\" and p%40ss%2Fw failed",
                         UrlSecrets("postgres://app:p%40ss%2Fw@db/app")),
            "auth for \"***\" and *** failed");
  EXPECT_EQ(ScrubSecrets("abc", {"abc", ""}), "abc") << "too short to scrub";
  EXPECT_EQ(ScrubSecrets("hunter2hunter2", {"hunter2"}), "******");
}

TEST(Url, SecretKeysAreRecognised) {
  for (const char* key :
       {"password", "sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
        "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret", "access_token", "PGPASSWORD",
        "sasl.jaas.config", "api_key", "client_secret"}) {
    EXPECT_TRUE(IsSecretKey(key)) << key;
  }
  for (const char* key : {"sasl.username", "sasl.mechanism", "security.protocol", "key", "cert",
                          "cacert", "ssl.key.location", "acks", "sslmode", "user"}) {
    EXPECT_FALSE(IsSecretKey(key)) << key;
  }
}

// A user or password holding a reserved character does not parse, and the error says how to
// write it, without the password or any piece of it.
TEST(Url, UnencodedPasswordIsRejectedWithHowToEncodeIt) {
  for (const char* bad :
       {"postgres://app:pa/ss?w@rd%zz@127.0.0.1:5432/app", "postgres://app:p@ss@db/app",
        "amqp://guest:gu#est@mq/%2F/x", "redis://:pa%zz@127.0.0.1:6379/s",
        "nats://user:se?cret@n:4222/s", "postgres://app:secret%@db/app"}) {
    auto url = ParseUrl(bad);
    ASSERT_EQ(url.status().code(), StatusCode::kInvalidArgument) << bad;
    const std::string& m = url.status().message();
    EXPECT_NE(m.find("must be percent-encoded: write '@' as %40, '/' as %2F"), std::string::npos)
        << m;
    for (const char* piece :
         {"pa/ss", "w@rd", "rd%zz", "p@ss", "gu#est", "pa%zz", "se?cret", "secret%"}) {
      EXPECT_EQ(m.find(piece), std::string::npos) << piece << " in " << m;
    }
  }
  auto encoded = ParseUrl("postgres://app:pa%2Fss%3Fw%40rd%25zz@127.0.0.1:5432/app");
  ASSERT_OK(encoded);
  EXPECT_EQ(encoded->password, "pa/ss?w@rd%zz");
  EXPECT_EQ(encoded->hosts, "127.0.0.1:5432");
  EXPECT_EQ(encoded->path, "app");
  // '@' in a path or a query value after a well-formed host is data, not a user.
  auto hook = ParseUrl("http://h:8080/users/a@b/in?to=x@y");
  ASSERT_OK(hook);
  EXPECT_EQ(hook->user, "");
  EXPECT_EQ(hook->hosts, "h:8080");
  EXPECT_EQ(hook->path, "users/a@b/in");
  // A value without '=' may be the tail of a secret holding an '&': it is not quoted.
  auto amp = ParseUrl("kafka://h/t?sasl.password=ab&cdef");
  ASSERT_EQ(amp.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(amp.status().message().find("cdef"), std::string::npos) << amp.status().message();
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
