"""A real webhook receiver for tests: a threaded HTTP server that checks every signature.

It verifies each POST with the ``standardwebhooks`` package (the receiver's side of the
spec), keeps what it got, and answers as told: ``status`` (204), ``fail_first`` failures
(500) before that, or ``hang`` (no answer until the test ends).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Received:
    id: str
    type: str
    data: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    url: str
    secret: str = SECRET
    status: int = 204
    fail_first: int = 0
    hang: bool = False
    attempts: list[str] = field(default_factory=list)  # webhook-id of every POST, in order
    received: list[Received] = field(default_factory=list)  # verified ones, in order
    forged: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unique(self) -> list[Received]:
        """What a deduplicating receiver keeps: the first of each webhook-id."""
        seen: set[str] = set()
        out = []
        for r in self.received:
            if r.id not in seen:
                seen.add(r.id)
                out.append(r)
        return out

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.unique()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.unique())} of {count}: {self.received}")
            time.sleep(0.02)
        return self.unique()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.lock:
                receiver.attempts.append(headers.get("webhook-id", ""))
                failing = len(receiver.attempts) <= receiver.fail_first
            if receiver.hang:
                receiver.release.wait(60)
                return
            try:
                payload = Webhook(receiver.secret).verify(body, headers)
            except Exception:
                with receiver.lock:
                    receiver.forged += 1
                self.send_response(401)
                self.end_headers()
                return
            if failing:
                self.send_response(500)
                self.end_headers()
                return
            with receiver.lock:
                receiver.received.append(
                    Received(headers["webhook-id"], payload["type"], payload["data"], headers)
                )
            self.send_response(receiver.status)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def webhook_receiver(port: int = 0, **options: Any) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (``port`` 0: any free one) until the block ends."""
    receiver = Receiver("", **options)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
