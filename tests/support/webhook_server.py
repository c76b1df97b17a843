#!/usr/bin/python3
"""A webhook receiver for the HTTP sink tests: a real HTTP/1.1 server (keep-alive, threads).

    webhook_server.py PORT LOG

Every accepted POST is appended to LOG as one JSON line {"path", "headers", "body"}.
Paths decide the answer: .../rejected -> 422 (not logged); .../unavailable -> 503, always (not
logged); .../flaky -> 503 the first time an Idempotency-Key is seen, then 200; .../flaky/N ->
503 the first N times, then 200; .../status/CODE -> CODE (not logged); anything else -> 200.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
LOG = sys.argv[2]
lock = threading.Lock()
seen_flaky = set()
refused = {}  # (path, Idempotency-Key) -> 503s answered so far


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = self.headers.get("Idempotency-Key", "")
        if self.path.endswith("/rejected"):
            return self.answer(422)
        if self.path.endswith("/unavailable"):
            return self.answer(503)
        parts = self.path.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "status":
            return self.answer(int(parts[-1]))
        if len(parts) >= 2 and parts[-2] == "flaky":
            with lock:
                count = refused.get((self.path, key), 0)
                refused[(self.path, key)] = count + 1
            if count < int(parts[-1]):
                return self.answer(503)
        if self.path.endswith("/flaky"):
            with lock:
                first = key not in seen_flaky
                seen_flaky.add(key)
            if first:
                return self.answer(503)
        record = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        with lock:
            with open(LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.answer(200)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
