#!/usr/bin/python3
"""A batched polling outbox relay, written the way a careful team would write one by hand.

psycopg2 + confluent-kafka (Debian's python3-psycopg2 and python3-confluent-kafka). Each
round, in one transaction: take up to 1000 outbox rows in id order with
SELECT ... FOR UPDATE SKIP LOCKED (several relays may run), produce them all (key =
aggregate_id, value = payload, header event_id), flush and check every delivery report, then
DELETE them and COMMIT. A failed delivery rolls the transaction back, so the rows are sent
again (at least once). Idempotent producer, acks=all.

Usage: poll_relay.py URL BOOTSTRAP TOPIC [--once] [--poll-interval SECONDS]
  --once: drain the outbox and exit (the throughput run); otherwise poll until SIGTERM.
"""
import argparse
import signal
import sys
import time

import psycopg2
from confluent_kafka import Producer

BATCH = 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--poll-interval", type=float, default=0.1)
    args = parser.parse_args()  # exits 2 on bad input
    url, bootstrap, topic = args.url, args.bootstrap, args.topic
    once, interval = args.once, args.poll_interval

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1000000,
    })
    # Connected to the broker (and the topic's metadata at hand) before the first batch.
    try:
        producer.list_topics(topic, timeout=30)
    except Exception as e:  # noqa: BLE001  (KafkaException; one line, not a trace)
        sys.exit(f"cannot reach the broker at {bootstrap}: {e}")
    conn = psycopg2.connect(url)
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    while not stopping:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, event_id::text, aggregate_id, payload::text FROM courier_outbox"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (BATCH,))
            rows = cur.fetchall()
            if not rows:
                conn.commit()
                if once:
                    break
                time.sleep(interval)
                continue
            for _id, event_id, aggregate_id, payload in rows:
                while True:
                    try:
                        producer.produce(topic, key=aggregate_id, value=payload,
                                         headers=[("event_id", event_id)],
                                         on_delivery=on_delivery)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain
                        producer.poll(0.01)
            producer.flush()
            if failures:
                print(f"delivery failed: {failures[0]}; the batch is sent again", file=sys.stderr)
                failures.clear()
                conn.rollback()
                continue
            cur.execute("DELETE FROM courier_outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
        conn.commit()
    conn.close()


if __name__ == "__main__":
    main()
