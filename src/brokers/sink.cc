#include "brokers/sink.h"

#include "core/url.h"

namespace courier {

std::string ExpandTemplate(std::string_view tmpl, const Event& event) {
  std::string out;
  out.reserve(tmpl.size() + 16);
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl.compare(i, 16, "{aggregate_type}") == 0) {
      out += event.aggregate_type;
      i += 16;
    } else if (tmpl.compare(i, 12, "{event_type}") == 0) {
      out += event.event_type;
      i += 12;
    } else {
      out.push_back(tmpl[i++]);
    }
  }
  return out;
}

Result<std::unique_ptr<Sink>> MakeSink(const SinkOptions& options) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options.url));
  if (url.scheme == "kafka") return MakeKafkaSink(options);
  if (url.scheme == "file") return MakeFileSink(options);
  if (url.scheme == "redis") return MakeRedisSink(options);
  if (url.scheme == "redis-cache") return MakeRedisCacheSink(options);
  if (url.scheme == "http" || url.scheme == "https") return MakeHttpSink(options);
  if (url.scheme == "nats" || url.scheme == "nats+tls") return MakeNatsSink(options);
  if (url.scheme == "amqp" || url.scheme == "amqps") return MakeAmqpSink(options);
  return InvalidArgumentError("unknown sink scheme '" + url.scheme + "' in " +
                              RedactUrl(options.url) +
                              "; expected kafka://host:port/topic, redis://host:port/stream, "
                              "redis-cache://host:port/prefix, "
                              "nats[+tls]://host:port/subject, amqp[s]://host:port/vhost/exchange, "
                              "http(s)://host/path or "
                              "file:///path/events.jsonl");
}

Status CheckSink(const SinkOptions& options) {
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Sink> sink, MakeSink(options));
  return sink->Configure();
}

}  // namespace courier
