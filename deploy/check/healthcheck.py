#!/usr/bin/env python3
"""Runs the Dockerfile's HEALTHCHECK command against local HTTP servers, for deploy/check.sh.

    healthcheck.py deploy/Dockerfile

The command must pass against a server whose GET /health answers 200 and fail against one
that answers 503 and against a closed port. The servers listen on loopback, on ports the
kernel picks; the command's port 9000 is replaced by theirs.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading


def serve(status: int) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = b'{"status":"ok"}'
            self.send_response(status if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except ConnectionError:
                pass  # the check reads the status line and hangs up

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    if not match:
        print("error: no exec-form HEALTHCHECK CMD found")
        return 1
    argv = json.loads(match.group(1))
    if ":9000" not in " ".join(argv) and "/9000" not in " ".join(argv):
        print(f"error: the healthcheck does not probe port 9000: {argv}")
        return 1
    ok, failing = serve(200), serve(503)
    cases = [
        ("200", ok.server_address[1], 0),
        ("503", failing.server_address[1], 1),
        ("closed port", closed_port(), 1),
    ]
    errors = 0
    for label, port, want in cases:
        cmd = [a.replace("9000", str(port)) for a in argv]
        rc = subprocess.run(cmd, check=False, capture_output=True, timeout=10).returncode
        healthy = rc == 0
        print(f"{label}: {'healthy' if healthy else 'unhealthy'}")
        if healthy != (want == 0):
            print(f"error: expected {'healthy' if want == 0 else 'unhealthy'} for {label}")
            errors += 1
    ok.shutdown()
    failing.shutdown()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
