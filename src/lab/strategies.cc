// The list of strategies, in the order the lab runs and prints them (src/lab/strategy.h).
#include "lab/strategy.h"

namespace courier::lab {

const std::vector<StrategyInfo>& Strategies() {
  static const std::vector<StrategyInfo> kAll = {
      {"naive", "commit the order, then publish the event", false, MakeNaive, true},
      {"publish-first", "publish the event, then commit the order", false, MakePublishFirst, true},
      {"publish-in-transaction",
       "publish the event inside the open transaction, then commit the order", false,
       MakePublishInTransaction, true},
      {"in-memory-retry",
       "commit the order, then publish from an in-memory queue retried until the broker acks",
       false, MakeInMemoryRetry, true},
      {"2pc",
       "two-phase commit: PREPARE TRANSACTION, a Kafka transaction, a coordinator log, then "
       "both commits",
       true, MakeTwoPhaseCommit, true},
      {"outbox-poll", "the event row in the order's transaction; a polling relay publishes it",
       false, MakeOutboxPoll, true},
      {"outbox-cdc",
       "the event row in the order's transaction; a relay streams it from the WAL (logical "
       "replication)",
       true, MakeOutboxCdc, true},
      {"event-sourcing",
       "the event is the only write (an event store with expected versions); a relay publishes "
       "it",
       true, MakeEventSourcing, true},
      {"listen-to-yourself",
       "publish the event only; the service's own consumer applies it to the database", true,
       MakeListenToYourself, false},
  };
  return kAll;
}

const StrategyInfo* FindStrategy(const std::string& name) {
  for (const StrategyInfo& s : Strategies()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

}  // namespace courier::lab
