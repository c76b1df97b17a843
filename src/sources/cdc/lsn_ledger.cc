#include "sources/cdc/lsn_ledger.h"

#include <algorithm>

namespace courier::cdc {

Lsn StartLsn(Lsn slot_confirmed, std::optional<Lsn> checkpoint_lsn) {
  return checkpoint_lsn ? std::max(slot_confirmed, *checkpoint_lsn) : slot_confirmed;
}

void LsnLedger::Reset(Lsn start, std::optional<Lsn> checkpoint_lsn) {
  *this = LsnLedger{};
  received_ = start;
  confirmed_ = start;
  recorded_ = checkpoint_lsn.value_or(0);
}

void LsnLedger::Received(Lsn lsn) { received_ = std::max(received_, lsn); }

void LsnLedger::Keepalive(Lsn wal_end) {
  Received(wal_end);
  if (!in_tx_ && txs_.empty() && open_.empty()) confirmed_ = std::max(confirmed_, wal_end);
}

void LsnLedger::Begin(int64_t commit_time_us) {
  txs_.push_back(Tx{next_tx_++, 0, false, 0, 0, commit_time_us});
  in_tx_ = true;
}

void LsnLedger::Commit(Lsn end_lsn) {
  if (!txs_.empty()) {
    txs_.back().end_lsn = end_lsn;
    txs_.back().committed = true;
  }
  in_tx_ = false;
  Advance();
}

void LsnLedger::Standalone(Lsn lsn, int64_t time_us) {
  txs_.push_back(Tx{next_tx_++, lsn, true, 0, 0, time_us});
}

int64_t LsnLedger::Hand() {
  // An event before any Begin (pgoutput sends none): accounted to a transaction of its own,
  // so it is never confirmed before it is done.
  if (txs_.empty()) txs_.push_back(Tx{next_tx_++, 0, false, 0, 0, 0});
  const int64_t pos = next_pos_++;
  ++txs_.back().open;
  open_.emplace(pos, Open{txs_.back().seq, false});
  return pos;
}

void LsnLedger::Done(int64_t pos) {
  auto it = open_.find(pos);
  if (it == open_.end()) return;
  const Open event = it->second;
  open_.erase(it);
  if (!txs_.empty() && event.seq >= txs_.front().seq) {
    Tx& tx = txs_[static_cast<size_t>(event.seq - txs_.front().seq)];
    --tx.open;
    if (event.settled) --tx.settled;
  }
}

void LsnLedger::Settle(int64_t pos) {
  auto it = open_.find(pos);
  if (it == open_.end() || it->second.settled) return;
  it->second.settled = true;
  if (!txs_.empty() && it->second.seq >= txs_.front().seq) {
    ++txs_[static_cast<size_t>(it->second.seq - txs_.front().seq)].settled;
  }
}

std::optional<Lsn> LsnLedger::ToRecordSettled() const {
  Lsn lsn = confirmed_;
  for (const Tx& tx : txs_) {
    if (!tx.committed || tx.open != tx.settled) break;
    lsn = std::max(lsn, tx.end_lsn);
  }
  if (lsn > recorded_) return lsn;
  return std::nullopt;
}

Lsn LsnLedger::Confirmable() const {
  Lsn lsn = confirmed_;
  for (const Tx& tx : txs_) {
    if (!tx.committed || tx.open != 0) break;
    lsn = std::max(lsn, tx.end_lsn);
  }
  return lsn;
}

std::optional<Lsn> LsnLedger::ToRecord() const {
  const Lsn lsn = Confirmable();
  if (lsn > recorded_) return lsn;
  return std::nullopt;
}

void LsnLedger::Recorded(Lsn lsn) { recorded_ = std::max(recorded_, lsn); }

void LsnLedger::Advance() {
  while (!txs_.empty() && txs_.front().committed && txs_.front().open == 0) {
    confirmed_ = std::max(confirmed_, txs_.front().end_lsn);
    txs_.pop_front();
  }
}

std::optional<int64_t> LsnLedger::commit_time_us() const {
  if (txs_.empty() || txs_.back().commit_time_us == 0) return std::nullopt;
  return txs_.back().commit_time_us;
}

}  // namespace courier::cdc
