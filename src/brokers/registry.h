// The brokers courier knows, one entry each: the URL schemes it answers to, how to make its
// sink and its reader, and the URL shapes the help and the errors show. The relay (MakeSink),
// `courier config check` (CheckSink) and `courier consume` (MakeReader) find a broker here by
// the URL's scheme, so a new broker is its folder plus one entry in registry.cc.
//
// Thread-safety: the table is constant.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "brokers/reader.h"
#include "brokers/sink.h"
#include "courier/status.h"

namespace courier {

struct Broker {
  std::string_view name;
  std::vector<std::string_view> schemes;
  // The sink's URL as errors show it ("kafka://host:port/topic").
  std::string_view sink_usage;
  std::unique_ptr<Sink> (*make_sink)(const SinkOptions&) = nullptr;
  // The reader's URL as errors show it; empty, with no make_reader, when it cannot be read.
  std::string_view reader_usage;
  Result<std::unique_ptr<Reader>> (*make_reader)(const ReaderOptions&) = nullptr;
};

// Every broker, in the order errors list them.
std::span<const Broker> Brokers();

// The broker answering to `scheme`, or nullptr.
const Broker* FindBroker(std::string_view scheme);

// "a, b or c" of the sink URLs, and of the URLs a reader takes.
std::string SinkUsages();
std::string ReaderUsages();

// The reader for `options.url`'s broker. A scheme no broker reads is kInvalidArgument:
// "<command> reads <ReaderUsages()>, not '<scheme>://'".
Result<std::unique_ptr<Reader>> MakeReader(const ReaderOptions& options, std::string_view command);

}  // namespace courier
