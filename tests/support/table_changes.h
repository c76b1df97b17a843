// Changes of captured tables built in a test (Event::table_change, sources/cdc/change.h), for
// the sinks that mirror rows, and a sink to publish them with.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "brokers/registry.h"
#include "brokers/sink.h"
#include "core/event.h"
#include "support/matchers.h"

namespace courier::test {

// A change in courier's shape: `op` insert/update/read/delete/truncate, `after` the row's JSON
// text (empty: null), at version {lsn, position}.
inline Event TableChangeEvent(const std::string& op, const std::string& table,
                              const std::string& key, uint64_t lsn, uint64_t position,
                              const std::string& after = "",
                              const std::vector<std::string>& unavailable = {}) {
  Event e;
  e.table_change = true;
  e.aggregate_type = table;
  e.aggregate_id = key;
  e.event_type = op;
  e.version = Version{lsn, position};
  e.event_id = "00000000-0000-4000-8000-" + std::to_string(100000000000 + lsn * 1000 + position);
  nlohmann::json unavailable_json = unavailable;
  e.payload = R"({"op":")" + op + R"(","before":null,"after":)" + (after.empty() ? "null" : after) +
              (unavailable.empty() ? "" : R"(,"unavailable":)" + unavailable_json.dump()) +
              R"(,"source":{"lsn":"0/)" + std::to_string(lsn) + R"(","xid":7,"schema":"public",)" +
              R"("table":")" + table + R"(","snapshot":false}})";
  return e;
}

// A sink of `url`, opened.
inline std::unique_ptr<Sink> OpenSink(const std::string& url) {
  SinkOptions options;
  options.url = url;
  options.delivery_timeout = Duration(10000);
  auto sink = MakeSink(options);
  EXPECT_OK(sink);
  if (!sink.ok()) return nullptr;
  EXPECT_OK((*sink)->Open());
  return std::move(sink).value();
}

// Publishes `events` as one batch; one status per event.
inline std::vector<Status> PublishAll(Sink& sink, const std::vector<Event>& events) {
  StopSignal stop;
  return sink.Publish(events, stop);
}

}  // namespace courier::test
