// The CDC source's LSN ledger: what the slot may confirm and what checkpoint_lsn records, as
// transactions stream in and their events are acked in any order. No database, no clock.
#include "sources/cdc/lsn_ledger.h"

#include <gtest/gtest.h>

namespace courier::cdc {
namespace {

constexpr int64_t kTime = 1700000000000000;

// A transaction of `events` events committed at `end`; returns their positions.
std::vector<int64_t> Stream(LsnLedger& ledger, int events, Lsn end) {
  ledger.Begin(kTime);
  std::vector<int64_t> positions;
  for (int i = 0; i < events; ++i) positions.push_back(ledger.Hand());
  ledger.Commit(end);
  return positions;
}

TEST(StartLsn, IsTheLaterOfTheSlotAndTheCheckpoint) {
  EXPECT_EQ(StartLsn(100, std::nullopt), 100u);
  // After a server crash the slot is back behind what the relay checkpointed: skip to it.
  EXPECT_EQ(StartLsn(100, 250), 250u);
  // A checkpoint_lsn behind the slot (the slot moved on keepalives) never moves it back.
  EXPECT_EQ(StartLsn(300, 250), 300u);
}

TEST(LsnLedger, ResetStartsWithNothingInFlight) {
  LsnLedger ledger;
  ledger.Reset(500, std::nullopt);
  EXPECT_EQ(ledger.received(), 500u);
  EXPECT_EQ(ledger.confirmed(), 500u);
  EXPECT_EQ(ledger.Confirmable(), 500u);
  EXPECT_FALSE(ledger.in_transaction());
  EXPECT_EQ(ledger.commit_time_us(), std::nullopt);
  // Nothing recorded yet: the first checkpoint stores the start.
  EXPECT_EQ(ledger.ToRecord(), std::optional<Lsn>(500));
}

TEST(LsnLedger, ATransactionIsConfirmedOnlyOnceAllItsEventsAreDone) {
  LsnLedger ledger;
  ledger.Reset(100, 100);
  const std::vector<int64_t> pos = Stream(ledger, 3, 200);
  EXPECT_EQ(pos, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(ledger.Confirmable(), 100u);
  ledger.Done(pos[0]);
  ledger.Done(pos[2]);
  // Partly acked: nothing of it may be confirmed, nor recorded.
  EXPECT_EQ(ledger.Confirmable(), 100u);
  EXPECT_EQ(ledger.ToRecord(), std::nullopt);
  ledger.Advance();
  EXPECT_EQ(ledger.confirmed(), 100u);
  ledger.Done(pos[1]);
  // Confirmable as soon as its checkpoint commits, confirmed after.
  EXPECT_EQ(ledger.Confirmable(), 200u);
  EXPECT_EQ(ledger.ToRecord(), std::optional<Lsn>(200));
  EXPECT_EQ(ledger.confirmed(), 100u);
  ledger.Advance();
  EXPECT_EQ(ledger.confirmed(), 200u);
}

TEST(LsnLedger, TransactionsAreConfirmedInCommitOrder) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  const std::vector<int64_t> first = Stream(ledger, 2, 200);
  const std::vector<int64_t> second = Stream(ledger, 1, 300);
  const std::vector<int64_t> third = Stream(ledger, 1, 400);
  // The later transactions are done, the first only partly: it holds them all back.
  ledger.Done(second[0]);
  ledger.Done(third[0]);
  ledger.Done(first[1]);
  ledger.Advance();
  EXPECT_EQ(ledger.Confirmable(), 100u);
  EXPECT_EQ(ledger.confirmed(), 100u);
  ledger.Done(first[0]);
  EXPECT_EQ(ledger.Confirmable(), 400u);
  ledger.Advance();
  EXPECT_EQ(ledger.confirmed(), 400u);
}

TEST(LsnLedger, AStillOpenTransactionHoldsBackWhatFollows) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  const std::vector<int64_t> first = Stream(ledger, 1, 200);
  ledger.Begin(kTime);
  const int64_t open = ledger.Hand();
  EXPECT_TRUE(ledger.in_transaction());
  ledger.Done(first[0]);
  ledger.Done(open);
  // Its events are done but its commit has not arrived: only the first may be confirmed.
  EXPECT_EQ(ledger.Confirmable(), 200u);
  ledger.Commit(350);
  EXPECT_FALSE(ledger.in_transaction());
  EXPECT_EQ(ledger.confirmed(), 350u);  // nothing open: confirmed as it commits
}

TEST(LsnLedger, ATransactionWithoutEventsIsConfirmedAsItCommits) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  Stream(ledger, 0, 180);
  EXPECT_EQ(ledger.confirmed(), 180u);
}

TEST(LsnLedger, DoneIsIdempotentAndIgnoresUnknownPositions) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  const std::vector<int64_t> first = Stream(ledger, 1, 200);
  const std::vector<int64_t> second = Stream(ledger, 1, 300);
  ledger.Done(first[0]);
  ledger.Done(first[0]);  // a second ack of the same event must not count for another
  ledger.Done(99);
  EXPECT_EQ(ledger.Confirmable(), 200u);
  ledger.Done(second[0]);
  EXPECT_EQ(ledger.Confirmable(), 300u);
}

TEST(LsnLedger, KeepalivesConfirmTheServerPositionOnlyWhenIdle) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  // Idle: other tables' traffic up to the server's position is done too.
  ledger.Keepalive(1000);
  EXPECT_EQ(ledger.received(), 1000u);
  EXPECT_EQ(ledger.confirmed(), 1000u);
  // An event in flight: the keepalive must not confirm past it.
  const std::vector<int64_t> pos = Stream(ledger, 1, 1100);
  ledger.Keepalive(2000);
  EXPECT_EQ(ledger.received(), 2000u);
  EXPECT_EQ(ledger.confirmed(), 1000u);
  // Inside a transaction being decoded: neither.
  ledger.Done(pos[0]);
  ledger.Advance();
  EXPECT_EQ(ledger.confirmed(), 1100u);
  ledger.Begin(kTime);
  ledger.Keepalive(3000);
  EXPECT_EQ(ledger.confirmed(), 1100u);
  ledger.Commit(3100);
  ledger.Keepalive(4000);
  EXPECT_EQ(ledger.confirmed(), 4000u);
}

TEST(LsnLedger, ReceivedNeverMovesBack) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  ledger.Received(500);
  ledger.Received(300);
  EXPECT_EQ(ledger.received(), 500u);
}

TEST(LsnLedger, ANonTransactionalMessageIsATransactionOfItsOwn) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  ledger.Standalone(150, kTime + 5);
  const int64_t pos = ledger.Hand();
  EXPECT_EQ(ledger.commit_time_us(), std::optional<int64_t>(kTime + 5));
  EXPECT_EQ(ledger.Confirmable(), 100u);
  ledger.Done(pos);
  EXPECT_EQ(ledger.Confirmable(), 150u);
}

TEST(LsnLedger, CommitTimeIsTheCurrentTransactions) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  ledger.Begin(kTime);
  EXPECT_EQ(ledger.commit_time_us(), std::optional<int64_t>(kTime));
  ledger.Hand();
  ledger.Commit(200);
  ledger.Begin(kTime + 1);
  EXPECT_EQ(ledger.commit_time_us(), std::optional<int64_t>(kTime + 1));
}

TEST(LsnLedger, CheckpointLsnIsRecordedOnlyWhenItMoves) {
  LsnLedger ledger;
  // Restarted after a checkpoint at 300: the server skips what it covers, and the first
  // checkpoint stores nothing new until a transaction past it is done.
  ledger.Reset(StartLsn(200, 300), 300);
  EXPECT_EQ(ledger.confirmed(), 300u);
  EXPECT_EQ(ledger.ToRecord(), std::nullopt);
  const std::vector<int64_t> pos = Stream(ledger, 2, 400);
  ledger.Done(pos[0]);
  EXPECT_EQ(ledger.ToRecord(), std::nullopt);
  ledger.Done(pos[1]);
  ASSERT_EQ(ledger.ToRecord(), std::optional<Lsn>(400));
  ledger.Recorded(400);
  ledger.Advance();
  EXPECT_EQ(ledger.ToRecord(), std::nullopt);
  // A keepalive moves the confirmed position, and with it the next record.
  ledger.Keepalive(900);
  EXPECT_EQ(ledger.ToRecord(), std::optional<Lsn>(900));
}

TEST(LsnLedger, AnEventBeforeAnyBeginIsNeverConfirmedBeforeItIsDone) {
  LsnLedger ledger;
  ledger.Reset(100, std::nullopt);
  const int64_t pos = ledger.Hand();
  ledger.Commit(200);
  EXPECT_EQ(ledger.Confirmable(), 100u);
  ledger.Done(pos);
  EXPECT_EQ(ledger.Confirmable(), 200u);
}

// Pipelined checkpoints: an event whose checkpoint is on its way (settled) lets the position
// stored with that checkpoint pass its transaction, but never the slot: not when the
// transaction's Commit arrives afterwards, not on a keepalive, not on Advance. Only Done
// (the checkpoint committed) does.
TEST(LsnLedger, SettledEventsAreRecordedButNotConfirmedUntilDone) {
  LsnLedger ledger;
  ledger.Reset(100, 100);
  const std::vector<int64_t> first = Stream(ledger, 2, 200);
  ledger.Begin(kTime);
  const int64_t second = ledger.Hand();  // its Commit is not read yet
  for (int64_t pos : first) ledger.Settle(pos);
  ledger.Settle(second);
  EXPECT_EQ(ledger.ToRecordSettled(), std::optional<Lsn>(200));
  EXPECT_EQ(ledger.ToRecord(), std::nullopt) << "nothing is done yet";
  ledger.Commit(300);  // all of its events settled, none done
  ledger.Keepalive(400);
  ledger.Advance();
  EXPECT_EQ(ledger.confirmed(), 100u) << "the slot moved past rows not deleted yet";
  EXPECT_EQ(ledger.Confirmable(), 100u);
  EXPECT_EQ(ledger.ToRecordSettled(), std::optional<Lsn>(300));
  ledger.Recorded(300);
  EXPECT_EQ(ledger.ToRecordSettled(), std::nullopt);
  // The first checkpoint committed: its transaction is confirmed, the next one still waits.
  for (int64_t pos : first) ledger.Done(pos);
  ledger.Advance();
  EXPECT_EQ(ledger.confirmed(), 200u);
  ledger.Done(second);
  ledger.Settle(second);  // done already: ignored
  ledger.Advance();
  EXPECT_EQ(ledger.confirmed(), 300u);
}

// A transaction with an event neither settled nor done stops the recorded position there.
TEST(LsnLedger, UnsettledEventHoldsTheRecordedPosition) {
  LsnLedger ledger;
  ledger.Reset(100, 100);
  const std::vector<int64_t> first = Stream(ledger, 2, 200);
  const std::vector<int64_t> second = Stream(ledger, 1, 300);
  ledger.Settle(first[1]);  // first[0] was not acked
  ledger.Settle(second[0]);
  EXPECT_EQ(ledger.ToRecordSettled(), std::nullopt);
  ledger.Settle(first[0]);
  EXPECT_EQ(ledger.ToRecordSettled(), std::optional<Lsn>(300));
}

}  // namespace
}  // namespace courier::cdc
