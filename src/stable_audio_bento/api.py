"""The HTTP routes of both reference APIs, the job API, health, outputs and the web page.

A FastAPI app mounted on the BentoML service: BentoML's own API layer cannot give the
documented status codes and bodies (422 with a pydantic ``detail`` list, the error envelope).
HTTP status codes are chosen here and only here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import redis.exceptions
from fastapi import FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from .errors import (
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
from .formats import FORMATS
from .generation import GeneratedAudio
from .jobs.models import Job
from .runtime import Runtime
from .schemas import AudioGenerateRequest, ErrorResponse, GenerationsRequest
from .storage import LocalStorage

log = logging.getLogger(__name__)

WEB_DIR = Path(str(resources.files("stable_audio_bento") / "web"))


def error_response(
    status: int, message: str, type_: str, param: str | None = None, **headers: str
) -> JSONResponse:
    """The documented envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def map_error(error: StableAudioError) -> JSONResponse:
    """The one place that turns the package's errors into HTTP answers."""
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


def audio_response(result: GeneratedAudio) -> Response:
    encoded = result.encoded
    filename = f"audio-{result.seed}.{encoded.format.extension}"
    return Response(
        content=encoded.data,
        media_type=encoded.media_type,
        headers={**result.headers(), "Content-Disposition": f'inline; filename="{filename}"'},
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def public_base(request: Request) -> str:
    """Where clients reach this server: ``STABLE_AUDIO_PUBLIC_URL``, else the request's URL."""
    return get_runtime(request).settings.public_url or str(request.base_url)


def job_view(job: Job, runtime: Runtime, base_url: str) -> dict[str, Any]:
    """The public job record."""
    base = base_url.rstrip("/")
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "status_url": f"{base}/jobs/{job.id}",
        "model": job.model,
        "response_format": job.response_format,
        "seed": job.seed,
        "progress": {"step": job.progress_step, "total": job.progress_total},
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "attempts": job.attempts,
        "worker": job.worker,
        "request": job.request,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "download_url": None,
    }
    if job.status == "succeeded" and job.result_key:
        view["download_url"] = runtime.storage.url(job.result_key, base)
        view["sample_rate"] = job.sample_rate
        view["duration"] = job.duration
    return view


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def create_app() -> FastAPI:
    """The compatible routes. ``app.state.runtime`` is set by the service at start."""
    app = FastAPI(
        title="Stable Audio compatible routes",
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
    }

    @app.exception_handler(StableAudioError)
    async def _package_error(request: Request, exc: StableAudioError) -> JSONResponse:
        return map_error(exc)

    async def _job_store_down(request: Request, exc: Exception) -> JSONResponse:
        retry_after = get_runtime(request).settings.job_retry_after
        message = f"The job store is unavailable ({type(exc).__name__}: {exc}); retry later."
        return map_error(JobStoreUnavailableError(message, retry_after))

    for unavailable in (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        app.add_exception_handler(unavailable, _job_store_down)

    # ------------------------------------------------------------- vLLM-Omni
    @app.post(
        "/v1/audio/generate",
        response_class=Response,
        responses={200: {"content": {f.media_type: {} for f in FORMATS.values()}}, **errors},
        summary="Generate audio (vLLM-Omni Audio Generate API)",
    )
    def audio_generate(body: AudioGenerateRequest, request: Request) -> Response:
        return audio_response(get_runtime(request).generate(body.to_params()))

    # ---------------------------------------------------------- stable-audio-api
    def generations(body: GenerationsRequest, request: Request) -> Response:
        return audio_response(get_runtime(request).generate(body.to_params()))

    for path in ("/v1/audio/generations", "/generate"):
        app.add_api_route(
            path,
            generations,
            methods=["POST"],
            response_class=Response,
            responses={200: {"content": {"audio/wav": {}}}, **errors},
            summary="Generate audio (stable-audio-api)",
        )

    @app.get("/health", summary="Models, limits and queue")
    def health(request: Request) -> dict[str, Any]:
        return get_runtime(request).health()

    # ------------------------------------------------------------------- jobs
    @app.post("/jobs", status_code=202, summary="Queue a generation job")
    def create_job(
        body: GenerationsRequest,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JSONResponse:
        runtime = get_runtime(request)
        job = runtime.submit_job(body, idempotency_key)
        view = job_view(job, runtime, public_base(request))
        return JSONResponse(view, status_code=202, headers={"Location": view["status_url"]})

    @app.get("/jobs", summary="Recent jobs, newest first")
    def list_jobs(
        request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        runtime = get_runtime(request)
        base = public_base(request)
        return {"jobs": [job_view(j, runtime, base) for j in runtime.jobs.list_recent(limit)]}

    @app.get("/jobs/{job_id}", summary="Job status and download URL")
    def get_job(job_id: str, request: Request) -> dict[str, Any]:
        runtime = get_runtime(request)
        return job_view(runtime.jobs.get(job_id), runtime, public_base(request))

    @app.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        runtime = get_runtime(request)
        return job_view(runtime.jobs.request_cancel(job_id), runtime, public_base(request))

    @app.get("/outputs/{key}", summary="Download a job output (local storage)")
    async def output(key: str, request: Request) -> Response:
        storage = get_runtime(request).storage
        if not isinstance(storage, LocalStorage):
            return error_response(404, "outputs are served by object storage", "NotFoundError")
        try:
            path = await run_in_threadpool(storage.resolve, key)
        except (StorageError, FileNotFoundError, ValueError):
            return error_response(404, f"no output named {key!r}", "NotFoundError", "key")
        fmt = FORMATS.get(path.suffix.removeprefix("."))
        media_type = fmt.media_type if fmt else "application/octet-stream"
        return FileResponse(path, media_type=media_type, filename=path.name)

    # ---------------------------------------------------------------- web page
    @app.get("/ui", include_in_schema=False)
    def ui_redirect() -> RedirectResponse:
        return RedirectResponse("/ui/")

    # Mounted even if the files are missing (a broken install then answers 404, not a loop).
    app.mount("/ui/", StaticFiles(directory=WEB_DIR, html=True, check_dir=False), name="ui")
    return app
