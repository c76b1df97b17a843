// URL parsing on arbitrary text: the generic parser and redaction, source URLs, and each
// sink's URL through MakeSink. Only what validates without connecting runs: Open() for the
// Redis, Redis cache and webhook sinks (they connect on the first Publish); the endpoint
// parsers for NATS and RabbitMQ (their Open connects); the librdkafka configuration for Kafka
// (rd_kafka_new starts connecting). A file sink's Open creates its file, so only its URL is
// parsed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/url.h"
#include "sinks/amqp.h"
#include "sinks/kafka_common.h"
#include "sinks/nats.h"
#include "sinks/redis.h"
#include "sinks/sink.h"
#include "sources/source.h"

namespace {

using namespace courier;

// The redacted form of a URL must not show its password. (A password that also appears
// elsewhere in the URL, contains the placeholder's '*' or was percent-encoded cannot be told
// apart from the rest.)
void CheckRedaction(const std::string& text, const Url& url) {
  const std::string& pw = url.password;
  if (pw.empty() || pw.find('*') != std::string::npos) return;
  if (text.find('%') != std::string::npos) return;
  const size_t at = text.find(pw);
  if (at == std::string::npos || text.find(pw, at + 1) != std::string::npos) return;
  if (RedactUrl(text).find(pw) != std::string::npos) std::abort();
}

void CheckSink(const std::string& text, const Url& url) {
  auto sink = MakeSink(SinkOptions{.url = text});
  if (!sink.ok()) return;
  (void)(*sink)->Describe();
  if (url.scheme == "redis" || url.scheme == "redis-cache" || url.scheme == "http" ||
      url.scheme == "https") {
    (void)(*sink)->Open();
  } else if (url.scheme == "nats" || url.scheme == "nats+tls") {
    (void)ParseNatsUrl(text);
  } else if (url.scheme == "amqp" || url.scheme == "amqps") {
    (void)ParseAmqpUrl(text);
  } else if (url.scheme == "kafka") {
    std::vector<std::pair<std::string, std::string>> props;
    for (const auto& kv : url.query) {
      // Loading plugins (shared libraries named by the value) is not parsing.
      if (kv.first.find("plugin") == std::string::npos) props.push_back(kv);
    }
    (void)MakeKafkaConf(props);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)PercentDecode(text);
  (void)RedactUrl(text);
  (void)ParseSourceUrl(text);
  (void)ParseRedisUrl(text);
  auto url = ParseUrl(text);
  if (!url.ok()) return 0;
  CheckRedaction(text, *url);
  CheckSink(text, *url);
  return 0;
}
