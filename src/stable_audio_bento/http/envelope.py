"""The one error envelope and the one status table of the HTTP edge.

Every error answer, whoever writes it (the routes' exception handlers in ``errors.py``, the
request guard, the API key check, the in-flight bound, the native-API rewriter, the OpenAPI
documents), is ``{"error": {"message", "type", "param", "code"}}`` with the ``type`` and the
description this table gives its status. Plain ASGI (no framework), so the middleware in front
of the app can use it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    GenerationError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    JobNotFoundError,
    JobStoreUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    QueueFullError,
    RequestAbandonedError,
    StableAudioError,
    StorageError,
    UploadTooLargeError,
    new_error_id,
    public_message,
)

log = logging.getLogger(__name__)

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
        "model's range, a webhook URL the server will not call, a priority over the API key's "
        "cap; the envelope names the field",
    ),
    401: Status("AuthenticationError", "Missing or invalid API key"),
    404: Status(
        "NotFoundError", "No such model, job or output (or one that belongs to another API key)"
    ),
    405: Status("BadRequestError", "The method is not allowed on the path (see Allow)"),
    408: Status("BadRequestError", "The body did not arrive within STABLE_AUDIO_BODY_TIMEOUT"),
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


@dataclass(frozen=True)
class Answer:
    """What the server answers for one of the package's errors."""

    status: int
    message: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        """The envelope as the routes send it (compact JSON, as starlette's JSONResponse)."""
        body = error_body(self.status, self.message, self.param)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def answer_of(error: StableAudioError) -> Answer:
    """The package's error family -> status, message and field, in one place.

    Messages not written for clients (they may name paths, hosts, buckets) are replaced by
    one quoting an error id, logged here with the details.
    """
    if isinstance(error, UploadTooLargeError):
        return Answer(413, error.message, error.field)
    if isinstance(error, InvalidRequestError):
        return Answer(400, error.message, error.field)
    if isinstance(error, ModelNotFoundError):
        return Answer(404, str(error), getattr(error, "field", "model"))
    if isinstance(error, JobNotFoundError):
        return Answer(404, str(error), "id")
    if isinstance(error, IdempotencyKeyReusedError):
        return Answer(409, str(error), "Idempotency-Key")
    if isinstance(error, QueueFullError | JobStoreUnavailableError):
        status = 429 if isinstance(error, QueueFullError) else 503
        return Answer(status, str(error), None, {"Retry-After": str(error.retry_after)})
    if isinstance(error, RequestAbandonedError):
        return Answer(499, str(error))
    if isinstance(error, GenerationError):
        # The vLLM-Omni document answers "did not produce audio output" with 400.
        return Answer(400, str(error))
    message = str(error)
    if not error.public:
        error_id = new_error_id()
        log.error("Request failed (error id %s): %s: %s", error_id, type(error).__name__, error)
        message = public_message(error, "The request", error_id)
    if isinstance(error, ModelLoadError):
        return Answer(503, message, "model")
    if isinstance(error, StorageError):
        return Answer(502, message)
    return Answer(500, message)


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
