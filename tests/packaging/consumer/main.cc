// Appends one event with the installed courier library, in a SQLite transaction, and reads it
// back: proves the installed headers, library and CMake package work together.
#include <courier/outbox.h>
#include <sqlite3.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer DB_PATH\n");
    return 2;
  }
  sqlite3* db = nullptr;
  if (sqlite3_open(argv[1], &db) != SQLITE_OK) return 1;
  sqlite3_exec(db,
               "CREATE TABLE courier_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
               " event_id TEXT NOT NULL, aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL,"
               " event_type TEXT NOT NULL, payload BLOB, headers TEXT,"
               " created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
               " published_at TEXT)",
               nullptr, nullptr, nullptr);
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  courier::OutboxWriter writer;
  auto id = writer.Append(db, {.aggregate_type = "order",
                               .aggregate_id = "42",
                               .event_type = "OrderPaid",
                               .payload = R"({"id":42})"});
  if (!id.ok()) {
    std::fprintf(stderr, "append: %s\n", id.status().ToString().c_str());
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return 1;
  }
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  std::printf("appended %s\n", id->c_str());
  sqlite3_close(db);
  return 0;
}
