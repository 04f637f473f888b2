"""The one place that turns the package's errors into HTTP answers (status, envelope, headers).

``install_error_handlers`` registers every exception handler of the app; new error kinds are
added here, next to the others.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
from ..schemas import ErrorResponse
from .deps import get_runtime

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, type_: str, param: str | None = None, **headers: str
) -> JSONResponse:
    """The documented envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def map_error(error: StableAudioError) -> JSONResponse:
    """The package's error family -> status code and envelope.

    Messages not written for clients (they may name paths, hosts, buckets) are replaced by
    one quoting an error id, logged here with the details.
    """
    if isinstance(error, UploadTooLargeError):
        return error_response(413, error.message, "BadRequestError", error.field)
    if isinstance(error, InvalidRequestError):
        return error_response(400, error.message, "BadRequestError", error.field)
    if isinstance(error, ModelNotFoundError):
        return error_response(404, str(error), "NotFoundError", getattr(error, "field", "model"))
    if isinstance(error, JobNotFoundError):
        return error_response(404, str(error), "NotFoundError", "id")
    if isinstance(error, IdempotencyKeyReusedError):
        return error_response(409, str(error), "ConflictError", "Idempotency-Key")
    if isinstance(error, QueueFullError):
        return error_response(
            429, str(error), "RateLimitError", None, **{"Retry-After": str(error.retry_after)}
        )
    if isinstance(error, JobStoreUnavailableError):
        return error_response(
            503,
            str(error),
            "ServiceUnavailableError",
            None,
            **{"Retry-After": str(error.retry_after)},
        )
    if isinstance(error, RequestAbandonedError):
        # nginx's "client closed request": nobody reads it, but the access log says what it was.
        return error_response(499, str(error), "BadRequestError")
    if isinstance(error, GenerationError):
        # The vLLM-Omni document answers "did not produce audio output" with 400.
        return error_response(400, str(error), "BadRequestError")
    message = str(error)
    if not error.public:
        error_id = new_error_id()
        log.error("Request failed (error id %s): %s: %s", error_id, type(error).__name__, error)
        message = public_message(error, "The request", error_id)
    if isinstance(error, ModelLoadError):
        return error_response(503, message, "ServiceUnavailableError", "model")
    if isinstance(error, StorageError):
        return error_response(502, message, "InternalServerError")
    return error_response(500, message, "InternalServerError")


def _printable(value: Any) -> Any:
    """``value`` as JSON can carry it: NaN / Infinity as text, lone surrogates escaped."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with pydantic's ``detail`` list (the documented shape), always serialisable.

    The stock handler echoes each bad value, and a NaN or a lone surrogate made it a 500.
    A body that is not JSON at all is a 400 in the envelope, as the request guard answers.
    """
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if errors and all(e.get("type") == "json_invalid" for e in errors):
        reason = (errors[0].get("ctx") or {}).get("error", "JSON decode error")
        return error_response(
            400, f"The body is not valid JSON: {reason}", "BadRequestError", "body"
        )
    detail = jsonable_encoder(_printable(errors))
    return JSONResponse({"detail": detail}, status_code=422)


async def _package_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StableAudioError)
    return map_error(exc)


async def _job_store_down(request: Request, exc: Exception) -> JSONResponse:
    retry_after = get_runtime(request).settings.job_retry_after
    # Redis' own message names its host and port: the log has it, the client the kind.
    log.warning("The job store is unavailable: %s: %s", type(exc).__name__, exc)
    message = f"The job store is unavailable ({type(exc).__name__}); retry later."
    return map_error(JobStoreUnavailableError(message, retry_after))


def _methods_of(schema: dict[str, Any], path: str) -> list[str]:
    """The methods the OpenAPI document lists for the route template ``path`` matches."""
    paths = schema.get("paths", {})
    if path in paths:  # a literal route (/jobs/inpaint) before a template (/jobs/{job_id})
        return sorted(m.upper() for m in paths[path] if m in ("get", "post", "put", "delete"))
    methods: set[str] = set()
    for template, item in paths.items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {m.upper() for m in item if m in ("get", "post", "put", "patch", "delete")}
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 / 405 in the envelope; a 405 lists every method of the path.

    (Starlette's names only the first route that matched the path, so ``OPTIONS /jobs``
    said ``Allow: POST`` although ``GET /jobs`` exists too.)
    """
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods = _methods_of(request.app.openapi(), request.url.path)
        if methods:
            headers["Allow"] = ", ".join(methods)
        message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(405, message, "BadRequestError", None, **headers)
    if exc.status_code == 404:
        message = f"No route {request.url.path}"
        return error_response(404, message, "NotFoundError", None, **headers)
    type_ = "InternalServerError" if exc.status_code >= 500 else "BadRequestError"
    return error_response(exc.status_code, str(exc.detail), type_, None, **headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every exception handler of the app."""
    app.add_exception_handler(StableAudioError, _package_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for unavailable in (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        app.add_exception_handler(unavailable, _job_store_down)


# The documented error bodies, for the OpenAPI description of the generation routes.
OPENAPI_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
}
