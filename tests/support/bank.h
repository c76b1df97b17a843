// Shared by the tests of examples/bank (integration and chaos): balances read with plain SQL,
// the fold of the event store in SQL, and the fold of what Kafka received by a reader of the
// tests' own, all independent of the example's code but for the domain's rule (Account).
#pragma once

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "bank/account.h"
#include "support/fixtures.h"

namespace courier::test {

// Runs `sql`, whose rows are (account, balance).
inline std::map<std::string, int64_t> Balances(const std::string& url, const std::string& sql) {
  std::map<std::string, int64_t> out;
  auto conn = PgConnect(url);
  EXPECT_OK(conn);
  if (!conn.ok()) return out;
  auto rows = PgExec(conn->get(), sql);
  EXPECT_OK(rows);
  if (!rows.ok()) return out;
  for (int i = 0; i < PQntuples(rows->get()); ++i) {
    out[PQgetvalue(rows->get(), i, 0)] = std::stoll(PQgetvalue(rows->get(), i, 1));
  }
  return out;
}

// The first column of the first row; -1 when the query fails (quietly: a table the projector
// has not made yet, or a server being restarted).
inline int64_t Scalar(const std::string& url, const std::string& sql, bool quiet = false) {
  auto rows = PgQuery(url, sql);
  if (!quiet) EXPECT_OK(rows);
  return rows.ok() && !rows->empty() ? std::stoll((*rows)[0]) : -1;
}

// The fold of the store in SQL: (account, balance).
inline constexpr const char* kStoreFold =
    "SELECT stream_id, sum(CASE event_type WHEN 'FundsDeposited' THEN (payload->>'amount')::bigint"
    " ELSE -(payload->>'amount')::bigint END) FROM courier_events GROUP BY stream_id";

// The events after which their account's running balance, in version order, is below zero:
// overdrafts.
inline constexpr const char* kOverdrawnEvents =
    "SELECT count(*) FROM (SELECT sum(CASE event_type WHEN 'FundsDeposited' THEN "
    "(payload->>'amount')::bigint ELSE -(payload->>'amount')::bigint END) OVER "
    "(PARTITION BY stream_id ORDER BY version) AS running FROM courier_events) b "
    "WHERE running < 0";

// `records` in the order a reader of each partition met them.
inline std::vector<KafkaRecord> InPartitionOrder(std::vector<KafkaRecord> records) {
  std::sort(records.begin(), records.end(), [](const KafkaRecord& a, const KafkaRecord& b) {
    return std::tie(a.topic, a.partition, a.offset) < std::tie(b.topic, b.partition, b.offset);
  });
  return records;
}

// What Kafka received, folded: per account in offset order, each event_id once, withdrawal
// requests bounced when the balance cannot cover them. *events: the distinct event_ids.
inline std::map<std::string, int64_t> FoldKafka(const std::vector<KafkaRecord>& received,
                                                int64_t* events) {
  std::map<std::string, bank::Account> accounts;
  std::set<std::string> seen;
  for (const KafkaRecord& r : InPartitionOrder(received)) {
    if (!seen.insert(r.event.event_id).second) continue;
    accounts[r.event.aggregate_id].Apply(r.event.event_type, r.event.payload);
  }
  *events = static_cast<int64_t>(seen.size());
  std::map<std::string, int64_t> out;
  for (const auto& [id, account] : accounts) out[id] = account.balance;
  return out;
}

inline std::map<std::string, int64_t> FoldKafka(const DevBroker& broker, const std::string& topic,
                                                int64_t* events) {
  return FoldKafka(ReadTopic(broker, topic), events);
}

}  // namespace courier::test
