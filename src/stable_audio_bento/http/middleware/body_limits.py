"""Request bodies a client can be told about: a 413 it reads, a bound on slow uploads.

The outermost of our ASGI middlewares (inside CORS only), so that a body is bounded before
anything reads it (the request guard, the native API's submit check) and before it takes one
of the ``STABLE_AUDIO_MAX_CONCURRENCY`` slots:

- **Too large, declared** (``Content-Length`` past the route's limit): the 413 is sent before a
  byte of the body is read, with ``Connection: close``. A client that sent
  ``Expect: 100-continue`` (curl does for bodies over 1 MiB) gets it instead of the 100 and
  never sends the body. Any other client is already sending: the server reads and discards
  what it sends, at most ``DRAIN_MAX_BYTES`` and ``DRAIN_SECONDS``, before it closes, so the
  client finishes writing and reads the 413 (closing on unread data would answer it with a TCP
  reset, which loses the 413 in the client's buffer). Past either bound the connection closes.
- **Too large, streamed** (chunked, or more bytes than declared): the route is told the client
  left as soon as the count passes the limit, and the 413 follows (drained the same way).
- **Too slow**: the whole body must arrive within ``body_timeout`` seconds
  (``STABLE_AUDIO_BODY_TIMEOUT``) of the request; past it the route is told the client left, a
  408 is sent and the connection closes. A request so holds a concurrency slot at most that long
  while its body arrives.

The limits are the request guard's (``body_limit``): JSON bodies ``STABLE_AUDIO_MAX_BODY_KB``,
uploads ``STABLE_AUDIO_MAX_UPLOAD_MB`` plus 1 MiB of fields, base64 JSON uploads a third more.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..envelope import ASGIApp, Message, Receive, Scope, Send, envelope
from .guard import body_limit, too_large_message

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# What the server reads and throws away of a refused body, at most, before it closes.
DRAIN_MAX_BYTES = 64 * 2**20
DRAIN_SECONDS = 30.0
_CLOSE = (b"connection", b"close")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


class BodyLimits:
    """ASGI middleware: a 413 the client reads, and a deadline on the body (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = 64 * 1024,
        max_upload_bytes: int = 51 * 1024 * 1024,
        upload_json_paths: frozenset[str] = frozenset(),
        body_timeout: float = 60.0,
        drain_max_bytes: int = DRAIN_MAX_BYTES,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_json_paths = upload_json_paths
        self.body_timeout = body_timeout
        self.drain_max_bytes = drain_max_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit, is_json = body_limit(
            scope, self.max_body_bytes, self.max_upload_bytes, self.upload_json_paths
        )
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            expects = (_header(scope, b"expect") or b"").lower() == b"100-continue"
            await self._refuse(send, receive, 413, too_large_message(limit, is_json), expects)
            return
        await self._bounded(scope, receive, send, limit, is_json)

    async def _bounded(
        self, scope: Scope, receive: Receive, send: Send, limit: int, is_json: bool
    ) -> None:
        """Run the app with a ``receive`` that counts the body and keeps its deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        seen = 0
        done = False  # the whole body is in: later receives wait for a disconnect
        refused: int | None = None  # 413 or 408, once decided
        started = False

        async def bounded_receive() -> Message:
            nonlocal seen, done, refused
            if refused is not None:
                return {"type": "http.disconnect"}
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                refused = 408
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > limit:
                    refused = 413
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # what the route answers to a cut-off body; ours follows
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except Exception:
            if refused is None:
                raise
        if refused is None or started:
            return
        if refused == 413:
            await self._refuse(send, receive, 413, too_large_message(limit, is_json), False)
        else:
            message = (
                f"The request body did not arrive within {self.body_timeout:g} s "
                "(STABLE_AUDIO_BODY_TIMEOUT)."
            )
            body = envelope(408, message, "body")
            # A client this slow is not drained: the connection closes after the answer.
            await _send_json(send, 408, body, more=False)

    async def _refuse(
        self, send: Send, receive: Receive, status: int, body: bytes, expects: bool
    ) -> None:
        """Answer ``status`` and close; drain what the client is still sending first."""
        if expects:
            # The client waits for a 100 that never comes: it sends no body.
            await _send_json(send, status, body, more=False)
            return
        await _send_json(send, status, body, more=True)
        await self._drain(receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _drain(self, receive: Receive) -> None:
        """Read and discard the rest of the body, within ``drain_*``."""
        read = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.drain_seconds):
                while read <= self.drain_max_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    read += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return


async def _send_json(send: Send, status: int, body: bytes, more: bool) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                _CLOSE,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": more})
