"""The one place that turns the package's errors into HTTP answers (status, envelope, headers).

``install_error_handlers`` registers every exception handler of the app; new error kinds are
added here, next to the others.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import (
    GenerationError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    JobNotFoundError,
    JobStoreUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    QueueFullError,
    StableAudioError,
    StorageError,
)
from ..schemas import ErrorResponse
from .deps import get_runtime


def error_response(
    status: int, message: str, type_: str, param: str | None = None, **headers: str
) -> JSONResponse:
    """The documented envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def map_error(error: StableAudioError) -> JSONResponse:
    """The package's error family -> status code and envelope."""
    if isinstance(error, InvalidRequestError):
        return error_response(400, error.message, "BadRequestError", error.field)
    if isinstance(error, ModelNotFoundError):
        return error_response(404, str(error), "NotFoundError", "model")
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
    if isinstance(error, GenerationError):
        # The vLLM-Omni document answers "did not produce audio output" with 400.
        return error_response(400, str(error), "BadRequestError")
    if isinstance(error, ModelLoadError):
        return error_response(503, str(error), "ServiceUnavailableError", "model")
    if isinstance(error, StorageError):
        return error_response(502, str(error), "InternalServerError")
    return error_response(500, str(error), "InternalServerError")


async def _package_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StableAudioError)
    return map_error(exc)


async def _job_store_down(request: Request, exc: Exception) -> JSONResponse:
    retry_after = get_runtime(request).settings.job_retry_after
    message = f"The job store is unavailable ({type(exc).__name__}: {exc}); retry later."
    return map_error(JobStoreUnavailableError(message, retry_after))


def install_error_handlers(app: FastAPI) -> None:
    """Every exception handler of the app."""
    app.add_exception_handler(StableAudioError, _package_error)
    for unavailable in (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        app.add_exception_handler(unavailable, _job_store_down)


# The documented error bodies, for the OpenAPI description of the generation routes.
OPENAPI_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
}
