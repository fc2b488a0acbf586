#!/usr/bin/env python3
"""A local HTTP receiver for webhook and heartbeat tests: logs every request as a JSON line.

usage: receiver.py PORTFILE LOGFILE
Binds a port the kernel picks and writes it to PORTFILE (no port race).
Paths starting with /flaky answer 500 to the first two requests, then 200; /down always 503.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

portfile, log = sys.argv[1], sys.argv[2]
flaky = {"n": 0}


class Handler(BaseHTTPRequestHandler):
    def handle_any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "body": body,
                                "content_type": self.headers.get("content-type")}) + "\n")
        code = 200
        if self.path.startswith("/flaky"):
            flaky["n"] += 1
            code = 500 if flaky["n"] <= 2 else 200
        elif self.path.startswith("/down"):
            code = 503
        self.send_response(code)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = do_HEAD = handle_any

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(portfile + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(portfile + ".tmp", portfile)
server.serve_forever()
