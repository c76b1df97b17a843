// courier_bank_example: the seed's account service, twice (examples/bank/README.md).
//
//   bank event-sourced --db URL [--accounts N --writers W --commands K --seed S]
//   bank project       --db URL [--rebuild]
//   bank listen        --kafka kafka://HOST:PORT/TOPIC --db URL [--no-wait] [workload flags]
//   bank projector     --kafka kafka://HOST:PORT/TOPIC --db URL     (until SIGTERM)
//
// The writers print one JSON line of totals: deposits, deposited, withdrawals, withdrawn,
// refused, conflicts (appends retried after a concurrent writer won).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bank/services.h"

namespace {

int Fail(const courier::Status& st) {
  std::fprintf(stderr, "bank: %s\n", st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: bank event-sourced|project|listen|projector --db URL [--kafka URL] ...\n");
    return 2;
  }
  const std::string command = argv[1];
  std::string db, kafka;
  bool rebuild = false;
  bank::WorkloadOptions workload;
  bank::ListenOptions listen;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : "";
    if (flag == "--rebuild") {
      rebuild = true;
      continue;
    }
    if (flag == "--no-wait") {
      listen.read_your_writes = false;
      continue;
    }
    ++i;
    if (flag == "--db")
      db = value;
    else if (flag == "--kafka")
      kafka = value;
    else if (flag == "--accounts")
      workload.accounts = std::atoi(value);
    else if (flag == "--writers")
      workload.writers = std::atoi(value);
    else if (flag == "--commands")
      workload.commands = std::atoi(value);
    else if (flag == "--seed")
      workload.seed = std::strtoull(value, nullptr, 10);
    else if (flag == "--timeout-ms")
      listen.timeout = std::chrono::milliseconds(std::atoi(value));
    else {
      std::fprintf(stderr, "bank: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (db.empty()) return Fail(courier::InvalidArgumentError("--db URL is required"));
  listen.db_url = db;
  listen.kafka_url = kafka;
  if ((command == "listen" || command == "projector") && kafka.empty()) {
    return Fail(courier::InvalidArgumentError("--kafka kafka://HOST:PORT/TOPIC is required"));
  }
  if (command == "event-sourced") {
    auto totals = bank::RunEventSourcedWriters(db, workload);
    if (!totals.ok()) return Fail(totals.status());
    std::printf("%s\n", totals->Json().c_str());
    return 0;
  }
  if (command == "project") {
    courier::Status st = bank::ProjectBalances(db, rebuild);
    return st.ok() ? 0 : Fail(st);
  }
  if (command == "listen") {
    auto totals = bank::RunListenWriters(listen, workload);
    if (!totals.ok()) return Fail(totals.status());
    std::printf("%s\n", totals->Json().c_str());
    return 0;
  }
  if (command == "projector") {
    courier::Status st = bank::RunListenProjector(listen);
    return st.ok() ? 0 : Fail(st);
  }
  std::fprintf(stderr, "bank: unknown command %s\n", command.c_str());
  return 2;
}
