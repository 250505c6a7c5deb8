"""A webhook receiver on loopback that verifies every delivery with the `standardwebhooks`
package (the reference implementation of the Standard Webhooks specification) and records what
arrived: the `webhook-id`, the parsed body and when it arrived. It can be stopped (the port then
refuses connections, as a receiver that is down does) and started again on the same port."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


class Receiver:
    def __init__(self, port: int):
        self.port = port
        self.secret = None
        self.got = []  # (webhook-id, body, arrival time)
        self.rejected = 0
        self.lock = threading.Lock()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                except Exception:  # noqa: BLE001 - any verification failure is a rejection
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.got.append((headers["webhook-id"], json.loads(body), arrived))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, n: int, timeout: float = 60) -> list:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.got)} deliveries arrived, expected {n}")
