"""Bounds every request body before any route sees it: size, JSON validity, prompt length.

One ASGI middleware in front of all routes (the compatible routes, the job API and BentoML's
native ``/api/...`` APIs alike), so that a hostile body costs a few microseconds, never a 500:

- a body past ``max_body_bytes`` (JSON) or ``max_upload_bytes`` (multipart uploads) is a 413,
  from ``Content-Length`` before anything is read, or as soon as the stream passes the bound;
- JSON that does not parse, ``NaN`` / ``Infinity`` (not JSON, though Python reads them), numbers
  too large for a float, and strings with lone surrogates (not Unicode) are a 400 naming the
  field;
- a prompt (``input``, ``prompt``, ``negative_prompt``) longer than ``max_prompt_chars`` is a
  422 in pydantic's shape, as the schema would give, before any parsing into models.

Errors use the documented envelope ``{"error": {message, type, param, code}}``.

On the sync generation paths (``cancel_paths``) the guard also watches the connection once the
body is in: a client that disconnects cancels the request's ``CancelToken``, and a request
still waiting for its batch is dropped (``cancellation``). Task and job submissions are not
watched: their work outlives the request that queued it, by design.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from typing import Any

from ...limits import PROMPT_MAX_CHARS
from ...pipeline.cancellation import CancelToken, current_token
from ..envelope import ASGIApp, Message, Receive, Scope, Send, envelope, send_json

PROMPT_FIELDS = ("input", "prompt", "negative_prompt")
# Where the client waits for the audio in the response: a client that leaves wants none.
SYNC_GENERATION_PATHS = frozenset(
    {"/v1/audio/generate", "/v1/audio/generations", "/generate", "/api/generate"}
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _NonFinite:
    def __init__(self, token: str) -> None:
        self.token = token


class BadJson(ValueError):
    """A body that is not JSON a client could mean; ``field`` is where (dotted path)."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


def _path(parts: list[str | int]) -> str | None:
    if not parts:
        return None
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check(value: Any, parts: list[str | int]) -> None:
    """Raise BadJson for the first value no client can mean (depth-first, in body order)."""
    if isinstance(value, _NonFinite) or (isinstance(value, float) and not math.isfinite(value)):
        token = value.token if isinstance(value, _NonFinite) else "a number too large"
        where = _path(parts) or "the body"
        raise BadJson(f"{where} must be a finite number, got {token}", _path(parts))
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadJson(
                f"{_path(parts) or 'the body'} is not valid Unicode (a lone surrogate "
                f"{_escaped(value[e.start : e.end])} at character {e.start})",
                _path(parts),
            ) from e
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, parts)  # a key with a surrogate is blamed on its parent
            _check(item, [*parts, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, [*parts, index])


def parse_strict_json(body: bytes) -> Any:
    """``body`` as JSON (RFC 8259: no NaN / Infinity), every string valid Unicode."""
    try:
        value = json.loads(body, parse_constant=_NonFinite)
    except UnicodeDecodeError as e:
        raise BadJson(f"The body is not UTF-8 text ({e.reason} at byte {e.start})", None) from e
    except json.JSONDecodeError as e:
        raise BadJson(
            f"The body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", None
        ) from e
    except ValueError as e:  # an integer of thousands of digits
        raise BadJson(f"The body is not JSON this server reads: {e}", None) from e
    except RecursionError as e:
        raise BadJson("The body nests arrays or objects too deeply", None) from e
    try:
        _check(value, [])
    except RecursionError as e:
        raise BadJson("The body nests arrays or objects too deeply", None) from e
    return value


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            return str(value.decode("latin-1").split(";")[0].strip().lower())
    return ""


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return b""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _is_json(content_type: str) -> bool:
    # FastAPI reads a body without a content type as JSON too.
    return not content_type or content_type == "application/json" or content_type.endswith("+json")


def body_limit(
    scope: Scope, max_body_bytes: int, max_upload_bytes: int, upload_json_paths: frozenset[str]
) -> tuple[int, bool]:
    """The most bytes a request's body may have, and whether that is the JSON body limit.

    JSON: ``max_body_bytes``; an upload (any other type): ``max_upload_bytes``; JSON that
    carries a file as base64 (``upload_json_paths``): the upload's limit plus a third.
    """
    if not _is_json(_content_type(scope)):
        return max_upload_bytes, False
    if scope.get("path") in upload_json_paths:
        return max_upload_bytes * 4 // 3 + max_body_bytes, False
    return max_body_bytes, True


def too_large_message(limit: int, is_json: bool) -> bytes:
    """The 413's body: which limit, and the setting that sets it."""
    what = "JSON body" if is_json else "upload"
    setting = "STABLE_AUDIO_MAX_BODY_KB" if is_json else "STABLE_AUDIO_MAX_UPLOAD_MB"
    message = f"The {what} is larger than {limit} bytes, the server's limit ({setting})."
    return envelope(413, message, "body")


class RequestGuard:
    """ASGI middleware bounding request bodies (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = 64 * 1024,
        max_upload_bytes: int = 51 * 1024 * 1024,
        max_prompt_chars: int = PROMPT_MAX_CHARS,
        cancel_paths: frozenset[str] = SYNC_GENERATION_PATHS,
        upload_json_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        # Routes whose JSON bodies carry a file as base64: bounded like uploads (plus a third).
        self.upload_json_paths = upload_json_paths
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_prompt_chars = max_prompt_chars
        self.cancel_paths = cancel_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = _content_type(scope)
        if content_type.startswith("multipart/") and b"boundary=" not in _header(
            scope, b"content-type"
        ):
            reason = f"Content-Type {content_type} needs a boundary parameter"
            await send_json(send, 400, envelope(400, reason, "body"))
            return
        is_json = _is_json(content_type)
        limit, plain_json = body_limit(
            scope, self.max_body_bytes, self.max_upload_bytes, self.upload_json_paths
        )
        base64_upload = is_json and not plain_json
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._too_large(send, limit, is_json and not base64_upload)
            return
        if not is_json:
            await self._stream_bounded(scope, receive, send, limit)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before it finished sending
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._too_large(send, limit, not base64_upload)
                return
        if body:
            try:
                value = parse_strict_json(bytes(body))
            except BadJson as e:
                await send_json(send, 400, envelope(400, str(e), e.field))
                return
            if await self._prompt_too_long(value, send):
                return
        if scope["path"] not in self.cancel_paths:
            await self.app(scope, replay_body(bytes(body), receive), send)
            return
        await self._watched(scope, bytes(body), receive, send)

    async def _watched(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """Run the app with a CancelToken that a disconnect of the client cancels."""
        token = CancelToken()
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    token.cancel()
                    return

        delivered = False

        async def app_receive() -> Message:
            # The body was read already; after it, the app (if it asks) learns of the disconnect.
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        watcher = asyncio.ensure_future(watch())
        reset = current_token.set(token)
        try:
            await self.app(scope, app_receive, send)
        finally:
            current_token.reset(reset)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _too_large(self, send: Send, limit: int, is_json: bool) -> None:
        await send_json(send, 413, too_large_message(limit, is_json))

    async def _prompt_too_long(self, value: Any, send: Send) -> bool:
        if not isinstance(value, dict):
            return False
        for name in PROMPT_FIELDS:
            text = value.get(name)
            if isinstance(text, str) and len(text) > self.max_prompt_chars:
                limit = self.max_prompt_chars
                detail = {
                    "type": "string_too_long",
                    "loc": ["body", name],
                    "msg": f"String should have at most {limit} characters",
                    "input": text[:64] + "...",
                    "ctx": {"max_length": limit},
                }
                await send_json(send, 422, json.dumps({"detail": [detail]}).encode())
                return True
        return False

    async def _stream_bounded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Pass a non-JSON body through as it arrives, cut off with a 413 past ``limit``."""
        seen = 0
        over = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}  # the route stops reading
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # what the route answers to a cut-off body; the 413 follows
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._too_large(send, limit, is_json=False)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the body read already, then the client's later messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
