// Shared by the projection tests: a handler in plain shell that counts each application of an
// event in a table of the projection's database, and the checks over that table.
#pragma once

#include <curl/curl.h>

#include <map>
#include <string>
#include <vector>

#include "courier/projection.h"
#include "support/fixtures.h"

namespace courier::test {

// applied(event_id, n): n counts the times an event's effect committed (exactly once: 1).
inline Status CreateAppliedTable(const std::string& db_url) {
  return PgQuery(db_url,
                 "CREATE TABLE applied (event_id text PRIMARY KEY, stream text NOT NULL, n int "
                 "NOT NULL, amount bigint NOT NULL)")
      .status();
}

// A --exec handler: reads the event's JSON line and prints the SQL that records it in
// `applied` (a second application increments n).
inline std::string CountingHandler() {
  return R"SH(sed -E 's/.*"aggregate_id":"([^"]*)".*"event_id":"([^"]+)".*"amount":([0-9]+).*/INSERT INTO applied (event_id, stream, n, amount) VALUES ('"'"'\2'"'"', '"'"'\1'"'"', 1, \3) ON CONFLICT (event_id) DO UPDATE SET n = applied.n + 1;/')SH";
}

// `n` deposits spread over `streams` accounts; payload {"amount":K,"seq":I}.
inline std::vector<Event> AccountEvents(int n, int streams) {
  std::vector<Event> events;
  for (int i = 0; i < n; ++i) {
    Event e;
    e.event_id = NewUuidV7();
    e.aggregate_type = "account";
    e.aggregate_id = "acct-" + std::to_string(i % streams);
    e.event_type = "FundsDeposited";
    e.payload =
        "{\"amount\":" + std::to_string(1 + i % 7) + ",\"seq\":" + std::to_string(i + 1) + "}";
    e.created_at_us = 1700000000000000 + i;
    events.push_back(std::move(e));
  }
  return events;
}

// Publishes `events` through courier's sink for `url`.
inline void Publish(const std::string& url, const std::vector<Event>& events) {
  auto sink = MakeSink({.url = url});
  ASSERT_OK(sink);
  ASSERT_OK((*sink)->Open());
  const StopSignal never;
  for (const Status& st : (*sink)->Publish(events, never)) ASSERT_OK(st);
}

// event_id → times applied.
inline std::map<std::string, int> Applied(const std::string& db_url) {
  std::map<std::string, int> out;
  auto rows = PgQuery(db_url, "SELECT event_id || ' ' || n FROM applied");
  if (!rows.ok()) return out;
  for (const std::string& row : *rows) {
    const size_t space = row.find(' ');
    out[row.substr(0, space)] = std::atoi(row.c_str() + space + 1);
  }
  return out;
}

// Every event of `events` applied exactly once, and nothing else.
inline void ExpectEachAppliedOnce(const std::string& db_url, const std::vector<Event>& events) {
  const std::map<std::string, int> applied = Applied(db_url);
  EXPECT_EQ(applied.size(), events.size());
  int missing = 0;
  for (const Event& e : events) {
    auto it = applied.find(e.event_id);
    if (it == applied.end()) {
      ++missing;
    } else {
      EXPECT_EQ(it->second, 1) << "event " << e.event_id << " applied " << it->second << " times";
    }
  }
  EXPECT_EQ(missing, 0) << "events never applied";
}

// An HTTP answer (status 0: none).
struct Got {
  int status = 0;
  std::string body;
};

inline size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// GET http://127.0.0.1:PORT/PATH with libcurl (status 0: no answer within 30 s).
inline Got HttpGet(int port, const std::string& path) {
  Got got;
  CURL* curl = curl_easy_init();
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + path;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &got.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (curl_easy_perform(curl) == CURLE_OK) {
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    got.status = static_cast<int>(code);
  }
  curl_easy_cleanup(curl);
  return got;
}

}  // namespace courier::test
