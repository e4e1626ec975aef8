#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace sink for load runs: answers every POST /v1/traces with an empty
ExportTraceServiceResponse (200, no body) and counts the requests. What it receives is not
checked here; tests/it/traces.rs checks the spans against a receiver on the proto types."""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    exports = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Sink.exports += 1
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
