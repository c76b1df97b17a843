// The Kafka transactional.id of an outbox: the same for every relay of one outbox, distinct
// between databases, tables and shards.
#include <gtest/gtest.h>

#include "relay/relay_internal.h"

namespace courier::test {
namespace {

RelayOptions Outbox(const std::string& source, const std::string& table = "courier_outbox") {
  RelayOptions o;
  o.source_url = source;
  o.outbox_table = table;
  return o;
}

TEST(OutboxTransactionalId, NamesTheDatabaseTheTableAndTheShard) {
  EXPECT_EQ(OutboxTransactionalId(Outbox("postgres://app:secret@db1:5432/shop"), 0),
            "courier db1:5432/shop courier_outbox");
  RelayOptions sharded = Outbox("postgres://db1:5432/shop", "orders_outbox");
  sharded.shard_index = 1;
  sharded.shard_count = 4;
  EXPECT_EQ(OutboxTransactionalId(sharded, 0), "courier db1:5432/shop orders_outbox shard 1/4");
  EXPECT_EQ(OutboxTransactionalId(sharded, 2),
            "courier db1:5432/shop orders_outbox shard 1/4 sink 2");
  EXPECT_EQ(OutboxTransactionalId(Outbox("postgresql:///shop?host=/run/pg&port=5433"), 0),
            "courier /run/pg:5433/shop courier_outbox");
}

TEST(OutboxTransactionalId, SameOutboxSameIdWhateverTheCredentials) {
  EXPECT_EQ(OutboxTransactionalId(Outbox("postgres://a:x@db1:5432/shop?sslmode=require"), 0),
            OutboxTransactionalId(Outbox("postgres://b:y@db1:5432/shop"), 0));
  EXPECT_NE(OutboxTransactionalId(Outbox("postgres://db1:5432/shop"), 0),
            OutboxTransactionalId(Outbox("postgres://db1:5432/shop2"), 0));
}

TEST(OutboxTransactionalId, NoneForSqlite) {
  EXPECT_EQ(OutboxTransactionalId(Outbox("sqlite:///tmp/app.db"), 0), "");
}

}  // namespace
}  // namespace courier::test
