// Application writers for the chaos tests: transactions of 1-4 events on their own
// aggregates (numbered so order can be checked), some rolled back, some held open so that ids
// commit out of order, and one bulk writer of 100-event transactions.
#pragma once

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "core/postgres.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {

struct Writer {
  std::set<std::string> committed;
  int64_t rolled_back = 0;
  // Transactions whose COMMIT got no answer (the server restarted): their events may or may
  // not exist, so they may be delivered, or not.
  std::set<std::string> in_doubt;
  int64_t reconnects = 0;
};

// Commits transactions of 1-4 events on its own aggregates until `stop`. Every 10th
// transaction rolls back; every 7th holds its transaction open for a while before committing,
// so that later transactions with higher ids commit first.
// With `tolerate_restarts`, a failed transaction (the server went away) is counted in doubt
// and the writer reconnects until it can go on.
inline void WriteLoop(const TestDb& db, int writer_id, std::atomic<bool>& stop, Writer& out,
                      bool tolerate_restarts = false) {
  std::mt19937 rng(static_cast<unsigned>(writer_id * 7919 + 1));
  std::map<std::string, int64_t> seq;
  PgConn conn;  // PostgreSQL writers keep one session, like an application's pool
  if (db.postgres) {
    auto c = PgConnect(db.url);
    if (!c.ok()) {
      ADD_FAILURE() << c.status().ToString();
      return;
    }
    conn = std::move(c).value();
  }
  int tx = 0;
  while (!stop.load()) {
    ++tx;
    const std::string aggregate = "w" + std::to_string(writer_id) + "-" + std::to_string(rng() % 8);
    const bool commit = tx % 10 != 0;
    std::vector<std::string> statements;
    std::vector<std::string> ids;
    int64_t next = seq[aggregate];
    for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n; ++i) {
      ids.push_back(NewUuidV7());
      statements.push_back(InsertEventSql(ids.back(), aggregate, ++next));
    }
    if (db.postgres && tx % 7 == 0) statements.push_back("SELECT pg_sleep(0.2)");
    Status st;
    if (db.postgres && writer_id == 0) {
      // The bulk writer: 100 events per transaction, so that kills land mid-batch.
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
      ids.clear();
      st = PgRun(conn.get(), "BEGIN");
      auto rows = PgExec(conn.get(),
                         "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type,"
                         " payload) SELECT 'order', $1, 'Happened', json_build_object('seq', g)"
                         " FROM generate_series($2::int8 + 1, $2::int8 + 100) g RETURNING event_id",
                         {aggregate, std::to_string(seq[aggregate])});
      if (st.ok()) st = rows.status();
      for (int i = 0; st.ok() && i < PQntuples(rows->get()); ++i) {
        ids.push_back(PQgetvalue(rows->get(), i, 0));
      }
      next = seq[aggregate] + 100;
      if (st.ok()) st = PgRun(conn.get(), commit ? "COMMIT" : "ROLLBACK");
    } else if (db.postgres) {
      std::string sql = "BEGIN;";
      for (const std::string& s : statements) sql += s + ";";
      st = PgRun(conn.get(), sql + (commit ? "COMMIT" : "ROLLBACK"));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      st = db.Transaction(statements, commit);
    }
    if (!st.ok() && tolerate_restarts) {
      // A transaction meant to roll back never commits, whatever happened to its session.
      if (commit) {
        out.in_doubt.insert(ids.begin(), ids.end());
      } else {
        ++out.rolled_back;
      }
      seq[aggregate] = next;  // the numbers may be used: later events stay above them
      while (!stop.load()) {
        auto c = PgConnect(db.url);
        if (c.ok()) {
          conn = std::move(c).value();
          ++out.reconnects;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      continue;
    }
    if (!st.ok()) {
      ADD_FAILURE() << "writer: " << st.ToString();
      return;
    }
    if (commit) {
      seq[aggregate] = next;
      out.committed.insert(ids.begin(), ids.end());
    } else {
      ++out.rolled_back;
    }
  }
}

}  // namespace courier::test
