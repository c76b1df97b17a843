'use strict';
// pg-transactional-outbox (the npm library) as a relay to Kafka: its logical replication
// listener, with a kafkajs producer (acks = all, one request in flight) as its message handler, set up
// and configured as its README describes. Its fastest setting that keeps the order of each
// aggregate's events is the segment mutex concurrency controller with segment = aggregate id
// (messages of different aggregates are handled in parallel); max-attempts and poisonous-
// message protection are off, as the README's outbox example has them.
//
// usage: node ptxo_relay.js setup URL SLOT   the outbox table, publication and slot
//        node ptxo_relay.js run URL SLOT BOOTSTRAP TOPIC   relay until SIGTERM
// (slot names are unique per server, not per database)
const { Client } = require('pg');
const { Kafka, Partitioners, logLevel } = require('kafkajs');
const {
  DatabaseSetup,
  createReplicationSegmentMutexConcurrencyController,
  getDisabledLogger,
  initializeReplicationMessageListener,
} = require('pg-transactional-outbox');

const SETUP = {
  outboxOrInbox: 'outbox',
  database: '',
  schema: 'public',
  table: 'outbox',
  listenerRole: 'postgres',
  publication: 'bench_ptxo_pub',
};

async function setup(url, slot) {
  const config = { ...SETUP, replicationSlot: slot };
  const client = new Client({ connectionString: url });
  await client.connect();
  await client.query(DatabaseSetup.dropAndCreateTable(config));
  await client.query(DatabaseSetup.setupReplicationCore(config));
  // The slot in a transaction of its own, as the library says.
  await client.query(`SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`);
  await client.end();
}

async function run(url, slot, bootstrap, topic) {
  const kafka = new Kafka({ clientId: 'bench-ptxo', brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  const producer = kafka.producer({ maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const publisher = {
    handle: async (message) => {
      await producer.send({
        topic,
        acks: -1,
        messages: [{ key: message.aggregateId, value: JSON.stringify(message.payload), headers: { event_id: message.id } }],
      });
    },
  };
  const [shutdown] = initializeReplicationMessageListener(
    {
      outboxOrInbox: 'outbox',
      dbListenerConfig: { connectionString: url },
      dbHandlerConfig: { connectionString: url },
      settings: {
        dbSchema: SETUP.schema,
        dbTable: SETUP.table,
        enableMaxAttemptsProtection: false,
        enablePoisonousMessageProtection: false,
        dbPublication: SETUP.publication,
        dbReplicationSlot: slot,
      },
    },
    publisher,
    getDisabledLogger(),
    { concurrencyStrategy: createReplicationSegmentMutexConcurrencyController() },
  );
  process.on('SIGTERM', async () => {
    await shutdown().catch(() => {});
    await producer.disconnect().catch(() => {});
    process.exit(0);
  });
}

const [mode, ...rest] = process.argv.slice(2);
let done;
if (mode === 'setup' && rest.length === 2) {
  done = setup(...rest);
} else if (mode === 'run' && rest.length === 4) {
  done = run(...rest);
} else {
  console.error('usage: node ptxo_relay.js setup URL SLOT | node ptxo_relay.js run URL SLOT BOOTSTRAP TOPIC');
  process.exit(2);
}
done.catch((err) => {
  console.error(err);
  process.exit(1);
});
