"""A bound on the requests one server process handles at once, answered in our error shape.

BentoML's own ``max_concurrency`` answers a plain-text 429 without ``Retry-After``, from a
middleware outside every one the service can add; this one replaces it: past ``limit``
requests in flight, a 429 with ``Retry-After`` and the documented envelope. Probes, metrics,
docs and the web page's files are never counted nor refused (BentoML skips those too), so a
busy server still answers its health checks.
"""

from __future__ import annotations

from ..envelope import ASGIApp, Receive, Scope, Send, envelope, send_json
from .auth import is_open


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in flight; 429 + Retry-After past it.

    Counting happens on the event loop (one thread), so a plain integer is exact.
    """

    def __init__(self, app: ASGIApp, limit: int = 256, retry_after: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            message = (
                f"The server is handling {self.limit} requests at once, its limit "
                f"(STABLE_AUDIO_MAX_CONCURRENCY); retry after {self.retry_after} s."
            )
            headers = [(b"retry-after", str(self.retry_after).encode())]
            await send_json(send, 429, envelope(429, message), headers)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
