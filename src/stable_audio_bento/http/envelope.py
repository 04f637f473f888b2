"""The one error envelope and the one status table of the HTTP edge.

Every error answer, whoever writes it (the routes' exception handlers in ``errors.py``, the
request guard, the API key check, the in-flight bound, the native-API rewriter, the OpenAPI
documents), is ``{"error": {"message", "type", "param", "code"}}`` with the ``type`` and the
description this table gives its status. Plain ASGI (no framework), so the middleware in front
of the app can use it too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Status:
    """An error status: its envelope ``type``, what the OpenAPI documents say of it, and
    whether its answer carries ``Retry-After``."""

    type: str
    description: str
    retry_after: bool = False


STATUSES: dict[int, Status] = {
    400: Status(
        "BadRequestError",
        "Bad request: a body that is not JSON (or NaN, a lone surrogate), a value out of the "
        "model's range; the envelope names the field",
    ),
    401: Status("AuthenticationError", "Missing or invalid API key"),
    404: Status(
        "NotFoundError", "No such model, job or output (or one that belongs to another API key)"
    ),
    405: Status("BadRequestError", "The method is not allowed on the path (see Allow)"),
    409: Status(
        "ConflictError", "Idempotency-Key reused with another body, or the job has no audio yet"
    ),
    413: Status("BadRequestError", "The body is larger than the server's limit"),
    422: Status("BadRequestError", "The body does not match the schema (pydantic's detail list)"),
    429: Status(
        "RateLimitError",
        "Too many requests at once, or the job queue is full: retry after Retry-After seconds",
        retry_after=True,
    ),
    # nginx's "client closed request": nobody reads it, but the access log says what it was.
    499: Status("BadRequestError", "The client went away before its request ran"),
    500: Status(
        "InternalServerError", "Unexpected server error (an error id to look up in the server log)"
    ),
    502: Status("InternalServerError", "The output storage failed"),
    503: Status(
        "ServiceUnavailableError",
        "The model cannot be loaded or the job store is unavailable: retry after Retry-After",
        retry_after=True,
    ),
}


def error_type(status: int) -> str:
    """The envelope ``type`` of ``status`` (one the table lacks: by its class)."""
    known = STATUSES.get(status)
    if known is not None:
        return known.type
    return "InternalServerError" if status >= 500 else "BadRequestError"


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The documented envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {"message": message, "type": error_type(status), "param": param, "code": status}
    }


def envelope(status: int, message: str, param: str | None = None) -> bytes:
    """The envelope as a response body."""
    return json.dumps(error_body(status, message, param)).encode()


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete JSON response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    status: int,
    message: str,
    param: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A complete error response in the envelope."""
    await send_json(send, status, envelope(status, message, param), headers)
