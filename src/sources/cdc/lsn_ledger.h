// The CDC source's LSN bookkeeping: which positions of the replication stream it received,
// which events of which transaction it handed to the sink and which of them are done (acked,
// or parked as dead letters, and checkpointed), and from that what the slot may confirm as
// flushed and what the relay stores as its checkpoint_lsn.
//
// The rule it keeps (docs/cdc.md): the slot moves past a transaction only once every event of
// it is done, and transactions are confirmed in commit order, so a transaction partly acked
// holds back every later one. A restart resumes at the later of the slot's confirmed position
// and checkpoint_lsn (StartLsn), which the server treats as "everything committed before it
// is done".
//
// Pure: no I/O, no clock (times come in as arguments), so every rule is unit-tested
// (tests/unit/lsn_ledger_test.cc).
//
// Thread-safety: none; the CDC source uses it on the relay thread only, and hands the
// positions to report to the stream (cdc/stream.h), which owns the reader thread.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>

#include "sources/pgoutput.h"

namespace courier::cdc {

using pgoutput::Lsn;

// Where streaming restarts: the slot's confirmed position, or the relay's checkpoint_lsn when
// that is later (after a server crash the slot is back at its position of the last server
// checkpoint, while checkpoint_lsn was committed with the rows it deleted).
Lsn StartLsn(Lsn slot_confirmed, std::optional<Lsn> checkpoint_lsn);

class LsnLedger {
 public:
  // Streaming (re)starts at `start`: everything before it counts as done, nothing is in
  // flight. `checkpoint_lsn` is what the relay stored last (nullopt: nothing yet).
  void Reset(Lsn start, std::optional<Lsn> checkpoint_lsn);

  // The stream reached `lsn` (an XLogData's start, a keepalive's server position).
  void Received(Lsn lsn);

  // A keepalive at the server's position `wal_end`: with nothing of ours in flight, that
  // position is done too, even if it was other tables' traffic. This is what keeps an idle
  // outbox from pinning WAL.
  void Keepalive(Lsn wal_end);

  // A transaction begins (committed at `commit_time_us`, Unix microseconds).
  void Begin(int64_t commit_time_us);
  // The transaction ends at `end_lsn`; confirms it at once if none of its events is open.
  void Commit(Lsn end_lsn);
  // A non-transactional logical message at `lsn`: a transaction of its own, committed.
  void Standalone(Lsn lsn, int64_t time_us);

  // An event of the current transaction is handed to the sink: its position (1, 2, ...).
  int64_t Hand();
  // The event at `pos` is acked or parked, and checkpointed. Unknown positions are ignored.
  void Done(int64_t pos);
  // The event at `pos` is acked and its checkpoint is on its way, not committed yet
  // (pipelined checkpoints): it still holds its transaction back from the slot
  // (Confirmable), but the position stored with that checkpoint may pass it (ToRecordSettled).
  void Settle(int64_t pos);

  // Where the slot may move once the events now done are checkpointed: past every leading
  // transaction that is committed and has no event open.
  Lsn Confirmable() const;
  // The checkpoint_lsn to store with the checkpoint now committing: Confirmable() when it is
  // past what was stored last, else nullopt (nothing new to record).
  std::optional<Lsn> ToRecord() const;
  // Pipelined checkpoints: the position to store with the checkpoint of the events settled so
  // far, which commits after (or with) the checkpoints of every event settled before: past
  // every leading transaction that is committed and whose open events are all settled, when
  // that is past what was stored last.
  std::optional<Lsn> ToRecordSettled() const;
  // `lsn` (from ToRecord or ToRecordSettled) is stored.
  void Recorded(Lsn lsn);
  // The checkpoint is committed: confirms every leading transaction with no event open.
  void Advance();

  Lsn received() const { return received_; }
  Lsn confirmed() const { return confirmed_; }
  bool in_transaction() const { return in_tx_; }
  // The commit time of the transaction being decoded (or last decoded), if known.
  std::optional<int64_t> commit_time_us() const;

 private:
  // A transaction of the stream whose events are not all done yet.
  struct Tx {
    uint64_t seq = 0;
    Lsn end_lsn = 0;
    bool committed = false;
    int64_t open = 0;            // events handed out and not yet done
    int64_t settled = 0;         // of those, settled (Settle)
    int64_t commit_time_us = 0;  // 0: unknown
  };

  Lsn received_ = 0;
  Lsn confirmed_ = 0;
  Lsn recorded_ = 0;  // checkpoint_lsn as last stored
  bool in_tx_ = false;
  std::deque<Tx> txs_;
  struct Open {
    uint64_t seq = 0;  // Tx::seq
    bool settled = false;
  };
  std::map<int64_t, Open> open_;  // by position, the events not yet done
  int64_t next_pos_ = 1;
  uint64_t next_tx_ = 1;
};

}  // namespace courier::cdc
