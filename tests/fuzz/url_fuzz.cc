// URL parsing on arbitrary text: the generic parser and redaction, source URLs, and each
// sink's URL through MakeSink and Configure (what the sink checks without I/O); for Kafka the
// librdkafka configuration (its Configure makes a trial client).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "brokers/amqp/amqp.h"
#include "brokers/kafka/kafka_common.h"
#include "brokers/nats/nats.h"
#include "brokers/redis/redis.h"
#include "brokers/sink.h"
#include "core/url.h"
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

void FuzzSink(const std::string& text, const Url& url) {
  auto sink = MakeSink(SinkOptions{.url = text});
  if (!sink.ok()) return;
  (void)(*sink)->Describe();
  if (url.scheme != "kafka") {
    (void)(*sink)->Configure();
    return;
  }
  // Kafka's Configure makes a trial client, which reads the files that ssl.* properties name
  // and loads the libraries plugin.library.paths names: only the properties are checked here.
  std::vector<std::pair<std::string, std::string>> props;
  for (const auto& kv : url.query) {
    if (kv.first.find("plugin") == std::string::npos) props.push_back(kv);
  }
  (void)MakeKafkaConf(props);
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
  FuzzSink(text, *url);
  return 0;
}
