#!/usr/bin/python3
"""A consumer written against Debezium's documented change-event envelope (the PostgreSQL
connector's value with the JSON converter and schemas off, and its key), using only the json
module. It reads the JSON lines of courier's file sink (key = aggregate_id, value = payload),
checks every event the way such a consumer relies on it, and prints one JSON object: the
number of events per op and the rows it saw ("after" of c/u/r, "before" of d), by key.

Usage: debezium_consumer.py EVENTS.jsonl
Exit status 1 with one line on stderr for the first event a Debezium consumer could not read.
"""
import json
import sys

OPS = {"c", "u", "d", "r", "t"}
SNAPSHOT = {"true", "false", "last", "first", "first_in_data_collection",
            "last_in_data_collection", "incremental"}


def fail(n, why):
    sys.stderr.write("event %d: %s\n" % (n, why))
    sys.exit(1)


def check(n, key, value):
    if not isinstance(value, dict):
        fail(n, "value is not an object")
    for field in ("before", "after", "source", "op", "ts_ms"):
        if field not in value:
            fail(n, "value has no %r" % field)
    op = value["op"]
    if op not in OPS:
        fail(n, "op %r is not one of c, u, d, r, t" % (op,))
    before, after = value["before"], value["after"]
    if op in ("c", "r", "u") and not isinstance(after, dict):
        fail(n, "op %s without an after row" % op)
    if op in ("c", "r") and before is not None:
        fail(n, "op %s with a before row" % op)
    if op == "d" and (after is not None or not isinstance(before, dict)):
        fail(n, "op d needs before and no after")
    if op == "t" and (after is not None or before is not None):
        fail(n, "op t with a row")
    if not isinstance(value["ts_ms"], int):
        fail(n, "ts_ms is not an integer")
    if "transaction" in value and value["transaction"] is not None \
            and not isinstance(value["transaction"], dict):
        fail(n, "transaction is neither null nor an object")
    s = value["source"]
    if not isinstance(s, dict):
        fail(n, "source is not an object")
    for field, kind in (("version", str), ("connector", str), ("name", str), ("ts_ms", int),
                        ("snapshot", str), ("db", str), ("schema", str), ("table", str),
                        ("lsn", int)):
        if not isinstance(s.get(field), kind):
            fail(n, "source.%s is not a %s" % (field, kind.__name__))
    if s["connector"] != "postgresql":
        fail(n, "source.connector is %r" % s["connector"])
    if s["snapshot"] not in SNAPSHOT:
        fail(n, "source.snapshot is %r" % s["snapshot"])
    if (op == "r") != (s["snapshot"] != "false"):
        fail(n, "op %s with source.snapshot %r" % (op, s["snapshot"]))
    if s.get("txId") is not None and not isinstance(s["txId"], int):
        fail(n, "source.txId is not an integer")
    if "sequence" in s and s["sequence"] is not None:
        seq = json.loads(s["sequence"])
        if not (isinstance(seq, list) and len(seq) == 2 and
                all(x is None or (isinstance(x, str) and x.isdigit()) for x in seq)):
            fail(n, "source.sequence %r is not [last commit LSN, LSN]" % s["sequence"])
    # The key: the primary key's columns as an object, present in the row; none for t.
    if op == "t":
        if key is not None:
            fail(n, "a truncate with a key")
        return op, None, None, s
    if not isinstance(key, dict) or not key:
        fail(n, "key %r is not an object of the key columns" % (key,))
    row = after if op != "d" else before
    for k, v in key.items():
        if row.get(k) != v:
            fail(n, "key column %s=%r differs from the row's %r" % (k, v, row.get(k)))
    return op, json.dumps(key, sort_keys=True), row, s


def main():
    counts = {op: 0 for op in sorted(OPS)}
    rows = {}
    tables = set()
    dbs = set()
    with open(sys.argv[1], encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            record = json.loads(line)
            key_text = record.get("aggregate_id") or ""
            key = json.loads(key_text) if key_text else None
            op, key_id, row, source = check(n, key, record["payload"])
            counts[op] += 1
            tables.add(source["schema"] + "." + source["table"])
            dbs.add(source["db"])
            if key_id is not None:
                rows[key_id] = None if op == "d" else row
    print(json.dumps({"counts": counts, "rows": rows, "tables": sorted(tables), "dbs": sorted(dbs)},
                     sort_keys=True))


if __name__ == "__main__":
    main()
