// The brokers courier knows, one entry each: the URL schemes it answers to, how to make its
// sink and its reader, and the URL shapes the help and the errors show. The relay (MakeSink),
// `courier config check` (CheckSink), `courier consume` and `courier tail` (MakeReader) find a
// broker here by the URL's scheme, so a new broker is its folder plus one entry in registry.cc.
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
  // The URLs a reader takes without a group (`courier tail`) and as a consumer group
  // (`courier consume`), as help and errors show them; empty when it cannot be read so.
  std::string_view tail_usage;
  std::string_view group_usage;
  // Null when the broker cannot be read back.
  Result<std::unique_ptr<Reader>> (*make_reader)(const ReaderOptions&) = nullptr;
};

// Every broker, in the order errors list them.
std::span<const Broker> Brokers();

// The broker answering to `scheme`, or nullptr.
const Broker* FindBroker(std::string_view scheme);

// "a, b or c" of the sink URLs, of the URLs read without a group and as a group.
std::string SinkUsages();
std::string TailUsages();
std::string GroupUsages();

// The reader for `options.url`'s broker. A scheme no broker reads that way is
// kInvalidArgument: "<command> reads <GroupUsages()>, not '<scheme>://'" for a group,
// "<command> cannot read '<scheme>://' URLs; expected <TailUsages()>" without one.
Result<std::unique_ptr<Reader>> MakeReader(const ReaderOptions& options, std::string_view command);

}  // namespace courier
