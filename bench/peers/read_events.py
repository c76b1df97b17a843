#!/usr/bin/python3
"""The benchmark's independent reader: what a contender delivered, counted by its event ids.

Every benchmark event's payload is a JSON object whose "id" is the event's number, 1..N (the
latency runs' payloads also carry "t", the microseconds since the epoch at its INSERT). This
reader knows nothing of the contender that wrote the output: it reads a Kafka topic from its
beginning to its end (confluent-kafka, partitions assigned, no consumer group), or a JSONL
file, and counts.

  read_events.py count kafka BOOTSTRAP TOPIC EXPECTED
  read_events.py count file PATH EXPECTED
      prints "read=R distinct=D lost=L duplicates=U dropped=X": L of the ids 1..EXPECTED never
      seen, U records beyond the first of each id, X records the broker no longer holds (the
      dev broker keeps the newest 5 MiB of a partition): with X > 0 the count says nothing.
  read_events.py latency BOOTSTRAP TOPIC TOTAL SECONDS READY_FILE
      follows the topic (creates READY_FILE once it does) until TOTAL distinct ids arrived or
      SECONDS passed; prints "seen=S p50=… p99=… max=…" (milliseconds from INSERT to read).
"""
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def consumer(bootstrap, fetch_wait_ms=100):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "courier-bench-reader",  # required by the client; never joined (assign)
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        # How long the broker may hold a fetch that finds nothing new: a record arriving
        # meanwhile may wait for its end, so the latency reader keeps it short.
        "fetch.wait.max.ms": fetch_wait_ms,
    })


def partitions(c, topic):
    meta = c.list_topics(topic, timeout=30)
    t = meta.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        sys.exit(f"topic {topic} not found")
    return sorted(t.partitions)


def payload_of(value):
    return json.loads(value)


def report(ids, expected, dropped=0):
    distinct = set(ids)
    lost = sum(1 for i in range(1, expected + 1) if i not in distinct)
    print(f"read={len(ids)} distinct={len(distinct)} lost={lost}"
          f" duplicates={len(ids) - len(distinct)} dropped={dropped}")


def count_kafka(bootstrap, topic, expected):
    c = consumer(bootstrap)
    ends = {}
    assign = []
    dropped = 0
    for p in partitions(c, topic):
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        dropped += low
        if high > low:
            ends[p] = high
            assign.append(TopicPartition(topic, p, low))
    c.assign(assign)
    ids = []
    deadline = time.monotonic() + 600
    while ends and time.monotonic() < deadline:
        for m in c.consume(num_messages=10000, timeout=1):
            if m.error() is not None:
                continue
            ids.append(payload_of(m.value()).get("id"))
            if m.offset() + 1 >= ends.get(m.partition(), 0):
                ends.pop(m.partition(), None)
    c.close()
    if ends:
        sys.exit(f"partitions {sorted(ends)} not read to their end in time")
    report(ids, expected, dropped)


def count_file(path, expected):
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                ids.append(json.loads(line)["payload"].get("id"))
    report(ids, expected)


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def latency(bootstrap, topic, total, seconds, ready_file):
    c = consumer(bootstrap, fetch_wait_ms=2)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions(c, topic)])
    c.poll(0.5)  # connected and fetching
    open(ready_file, "w").close()
    seen = {}
    deadline = time.monotonic() + seconds
    while len(seen) < total and time.monotonic() < deadline:
        # poll returns as soon as one record is there (consume(n) would wait for n or its
        # timeout); then whatever else already arrived.
        first = c.poll(0.1)
        if first is None:
            continue
        now_us = time.time() * 1e6
        for m in [first] + c.consume(num_messages=10000, timeout=0):
            if m.error() is not None:
                continue
            p = payload_of(m.value())
            if p.get("id") not in seen:
                seen[p.get("id")] = (now_us - p["t"]) / 1000.0
    c.close()
    v = sorted(seen.values()) or [float("nan")]
    print(f"seen={len(seen)} p50={percentile(v, 0.5):.1f} p99={percentile(v, 0.99):.1f}"
          f" max={v[-1]:.1f}")


def main():
    a = sys.argv[1:]
    if len(a) == 5 and a[:2] == ["count", "kafka"]:
        count_kafka(a[2], a[3], int(a[4]))
    elif len(a) == 4 and a[:2] == ["count", "file"]:
        count_file(a[2], int(a[3]))
    elif len(a) == 6 and a[0] == "latency":
        latency(a[1], a[2], int(a[3]), float(a[4]), a[5])
    else:
        print("usage: read_events.py count kafka BOOTSTRAP TOPIC EXPECTED |"
              " count file PATH EXPECTED | latency BOOTSTRAP TOPIC TOTAL SECONDS READY_FILE",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
