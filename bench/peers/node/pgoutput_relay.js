'use strict';
// A Node pgoutput relay written the way a careful team would: pg-logical-replication
// (pgoutput, the outbox's publication) → kafkajs (acks = all, one request in flight), batched.
// Inserts are collected per transaction; whenever no send is in flight, every committed
// transaction waiting goes out in one producer.send, and the slot's LSN is acknowledged only
// once the broker acked every event up to it (at least once: a restart resumes after the last
// acknowledged commit). While a send is in flight the next batch grows; at 10 000 events
// waiting, reading pauses (flowControl) until the send returns, so memory stays bounded.
// kafkajs's idempotent producer does not start against the dev broker (librdkafka's mock
// cluster reports controller 0, a broker it does not have, and kafkajs looks the controller
// up first), hence no idempotence.
//
// usage: node pgoutput_relay.js URL SLOT PUBLICATION BOOTSTRAP TOPIC [--expect N]
//   --expect N: exit once N events were delivered and acknowledged (the throughput run);
//   otherwise run until SIGTERM.
const { LogicalReplicationService, PgoutputPlugin } = require('pg-logical-replication');
const { Kafka, Partitioners, logLevel } = require('kafkajs');

const MAX_WAITING = 10000;

async function main() {
  const args = process.argv.slice(2).filter((a, i, all) => a !== '--expect' && all[i - 1] !== '--expect');
  if (args.length !== 5) {
    console.error('usage: node pgoutput_relay.js URL SLOT PUBLICATION BOOTSTRAP TOPIC [--expect N]');
    process.exit(2);
  }
  const [url, slot, publication, bootstrap, topic] = args;
  const at = process.argv.indexOf('--expect');
  const expect = at > 0 ? Number(process.argv[at + 1]) : 0;

  const kafka = new Kafka({ clientId: 'bench-pgoutput-relay', brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  const producer = kafka.producer({ maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const service = new LogicalReplicationService(
    { connectionString: url },
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } });
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [publication] });

  let txn = [];         // the open transaction's inserts
  let ready = [];       // committed, not yet sent
  let readyLsn = null;  // the end of the last commit in `ready`
  let sending = null;   // the send in flight
  let delivered = 0;
  let finishing = false;

  const finish = async (code) => {
    if (finishing) return;
    finishing = true;
    await service.stop().catch(() => {});
    await producer.disconnect().catch(() => {});
    process.exit(code);
  };
  const pump = () => {
    if (sending || ready.length === 0) return;
    const messages = ready;
    const lsn = readyLsn;
    ready = [];
    sending = producer.send({ topic, acks: -1, messages }).then(async () => {
      await service.acknowledge(lsn);
      delivered += messages.length;
      sending = null;
      if (expect && delivered >= expect) return finish(0);
      pump();
    }, (err) => {
      console.error(`send failed: ${err.message}`);
      return finish(1);
    });
  };

  service.on('data', async (_lsn, log) => {
    if (log.tag === 'insert') {
      const row = log.new;
      const payload = typeof row.payload === 'string' ? row.payload : JSON.stringify(row.payload);
      txn.push({ key: row.aggregate_id, value: payload, headers: { event_id: row.event_id } });
    } else if (log.tag === 'commit' && txn.length > 0) {
      for (const m of txn) ready.push(m);
      txn = [];
      readyLsn = log.commitEndLsn;
      pump();
      while (ready.length >= MAX_WAITING && sending) await sending;
    }
  });
  service.on('error', (err) => {
    console.error(`replication failed: ${err.message}`);
    finish(1);
  });
  process.on('SIGTERM', () => finish(0));
  service.subscribe(plugin, slot).catch((err) => {
    console.error(`replication failed: ${err.message}`);
    finish(1);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
