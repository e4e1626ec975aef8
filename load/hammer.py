#!/usr/bin/env python3
"""A client loop for zero-downtime checks: keep-alive clients and new-connection clients send GETs
until told to stop (SIGTERM or --seconds), then print a JSON summary.

A request fails when it gets no response, or a status other than --expect. Like browsers and
HTTP libraries (RFC 9110 §9.2.2), a GET whose connection closed before any response byte is
retried once on a new connection; such retries are counted separately, not as failures.

    load/hammer.py --addr 127.0.0.1:8000 --host app.localhost:8000 --keepalive 4 --fresh 4 --seconds 10
"""
import argparse
import http.client
import json
import signal
import sys
import threading
import time

stop = threading.Event()
lock = threading.Lock()
stats = {"sent": 0, "ok": 0, "failed": 0, "retried": 0, "errors": {}}


def count(key, error=None):
    with lock:
        stats[key] += 1
        if error:
            stats["errors"][error] = stats["errors"].get(error, 0) + 1


def client(host, port, vhost, path, expect, keepalive):
    conn = None
    while not stop.is_set():
        for attempt in (0, 1):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=10)
                conn.request("GET", path, headers={"Host": vhost})
                r = conn.getresponse()
                r.read()
                if not keepalive or r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                count("sent")
                if r.status == expect:
                    count("ok")
                else:
                    count("failed", f"status {r.status}")
                break
            except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as e:
                # Closed before any response byte: safe to retry a GET once, as clients do.
                if conn is not None:
                    conn.close()
                conn = None
                if attempt == 0:
                    count("retried")
                    continue
                count("sent")
                count("failed", type(e).__name__)
            except Exception as e:  # refused, timed out, garbled: a dropped request
                if conn is not None:
                    conn.close()
                conn = None
                count("sent")
                count("failed", type(e).__name__)
                break


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True, help="host:port to connect to")
    p.add_argument("--host", required=True, help="Host header")
    p.add_argument("--path", default="/")
    p.add_argument("--expect", type=int, default=200)
    p.add_argument("--keepalive", type=int, default=4, help="clients reusing one connection")
    p.add_argument("--fresh", type=int, default=4, help="clients opening a connection per request")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: on SIGTERM)")
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [
        threading.Thread(target=client, args=(host, int(port), a.host, a.path, a.expect, ka), daemon=True)
        for ka in [True] * a.keepalive + [False] * a.fresh
    ]
    for t in threads:
        t.start()
    start = time.time()
    while not stop.is_set() and (a.seconds == 0 or time.time() - start < a.seconds):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    print(json.dumps(stats))
    sys.exit(1 if stats["failed"] else 0)


if __name__ == "__main__":
    main()
