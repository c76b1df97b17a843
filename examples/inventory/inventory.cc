// An inventory service: reserves stock for every OrderCreated event of the orders service,
// exactly once, although Kafka delivers at least once.
//
// It consumes courier's Kafka wire format (key = aggregate_id, headers event_id, event_type,
// aggregate_type; value = payload) in a consumer group, and for each event opens a SQLite
// transaction that claims the event in the inbox (courier::Inbox) and makes the reservation;
// only after COMMIT does it commit the Kafka offset. A duplicate, or a message redelivered after
// a crash between the two commits, finds its inbox row and changes nothing.
//
//   inventory --bootstrap HOST:PORT --topic orders --db inventory.db [--group inventory]
//             [--session-timeout-ms N] [--exit-when-idle SECONDS]
//
// (--session-timeout-ms, default 6000: how soon the group hands a dead instance's partitions to
// another; also how long the dev broker's group waits for members after one left, so a
// restarted instance gets its partitions within a few seconds.)
// --exit-when-idle counts from when the instance got its partitions: a slow rebalance is not
// idleness.
#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "courier/inbox.h"

namespace {

bool Exec(sqlite3* db, const std::string& sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    std::fprintf(stderr, "inventory: %s: %s\n", sql.c_str(), error);
    sqlite3_free(error);
    return false;
  }
  return true;
}

std::string Header(const rd_kafka_message_t* msg, const char* name) {
  rd_kafka_headers_t* headers = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  if (rd_kafka_message_headers(msg, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      rd_kafka_header_get_last(headers, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return "";
  }
  return std::string(static_cast<const char*>(value), size);
}

}  // namespace

int main(int argc, char** argv) {
  std::string bootstrap, topic, path, group = "inventory", session_timeout_ms = "6000";
  int idle_exit_s = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--bootstrap") bootstrap = argv[i + 1];
    if (flag == "--topic") topic = argv[i + 1];
    if (flag == "--db") path = argv[i + 1];
    if (flag == "--group") group = argv[i + 1];
    if (flag == "--session-timeout-ms") session_timeout_ms = argv[i + 1];
    if (flag == "--exit-when-idle") idle_exit_s = std::atoi(argv[i + 1]);
  }
  if (bootstrap.empty() || topic.empty() || path.empty()) {
    std::fprintf(stderr, "usage: inventory --bootstrap HOST:PORT --topic T --db FILE\n");
    return 2;
  }

  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return 1;
  sqlite3_busy_timeout(db, 10000);
  // The service's own tables, and the inbox (the table contract of docs/inbox.md).
  if (!Exec(db,
            "CREATE TABLE IF NOT EXISTS stock (item TEXT PRIMARY KEY, available INTEGER NOT NULL);"
            "INSERT OR IGNORE INTO stock VALUES ('widget', 1000000);"
            "CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY,"
            " event_id TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS courier_inbox (consumer TEXT NOT NULL,"
            " event_id TEXT NOT NULL, processed_at TEXT NOT NULL DEFAULT"
            " (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), PRIMARY KEY (consumer, event_id));")) {
    return 1;
  }

  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : {std::pair<const char*, std::string>{"bootstrap.servers", bootstrap},
                             {"group.id", group},
                             {"session.timeout.ms", session_timeout_ms},
                             {"heartbeat.interval.ms", "1000"},
                             {"enable.auto.commit", "false"},
                             {"auto.offset.reset", "earliest"}}) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
      std::fprintf(stderr, "inventory: %s\n", error);
      return 2;
    }
  }
  rd_kafka_t* consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
  if (consumer == nullptr) return 1;
  rd_kafka_poll_set_consumer(consumer);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(consumer, topics);
  rd_kafka_topic_partition_list_destroy(topics);

  const courier::Inbox inbox("inventory");
  const time_t start = std::time(nullptr);
  time_t last_message = start;
  bool assigned = false;
  long reserved = 0, skipped = 0;
  while (idle_exit_s == 0 || std::time(nullptr) - last_message < idle_exit_s) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(consumer, 200);
    if (!assigned) {
      rd_kafka_topic_partition_list_t* assignment = nullptr;
      if (rd_kafka_assignment(consumer, &assignment) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        assigned = assignment->cnt > 0;
        rd_kafka_topic_partition_list_destroy(assignment);
      }
      // Idle from the assignment on; but not waiting forever for a group that never forms.
      last_message = std::time(nullptr);
      if (!assigned && idle_exit_s > 0 && last_message - start > 60 + idle_exit_s) break;
    }
    if (msg == nullptr) continue;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_message_destroy(msg);
      continue;
    }
    last_message = std::time(nullptr);
    const std::string event_id = Header(msg, "event_id");
    const std::string event_type = Header(msg, "event_type");
    const std::string order_id(static_cast<const char*>(msg->key), msg->key_len);
    if (event_type == "OrderCreated") {
      // One transaction: the claim and the reservation commit together, or neither does.
      auto handled = inbox.Process(db, event_id, [&](sqlite3* tx) -> courier::Status {
        if (!Exec(tx, "INSERT INTO reservations VALUES ('" + order_id + "', '" + event_id +
                          "');"
                          "UPDATE stock SET available = available - 1 WHERE item = 'widget';")) {
          return courier::InternalError("reservation failed");
        }
        return courier::Status::Ok();
      });
      if (!handled.ok()) {
        // Not committed: the offset is not committed either; the message comes again.
        std::fprintf(stderr, "inventory: %s\n", handled.status().message().c_str());
        rd_kafka_message_destroy(msg);
        break;
      }
      if (*handled) {
        ++reserved;
      } else {
        ++skipped;
      }
    }
    // Only now, after the commit, is the message acknowledged.
    rd_kafka_commit_message(consumer, msg, /*async=*/0);
    rd_kafka_message_destroy(msg);
  }
  std::printf("inventory: reserved=%ld duplicates_skipped=%ld\n", reserved, skipped);
  rd_kafka_consumer_close(consumer);
  rd_kafka_destroy(consumer);
  sqlite3_close(db);
  return 0;
}
