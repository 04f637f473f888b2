"""The BentoML service: a thin adapter from typed APIs and HTTP routes to ``stable_audio_bento``.

Native APIs (usable from ``bentoml.SyncHTTPClient`` / ``AsyncHTTPClient``):
  ``POST /api/generate``                 sync: request in, audio file out
  ``POST /api/generate_async/submit``    task: ``/status``, ``/get`` (BentoML task protocol)
  ``POST /api/audio_to_audio``           sync: an audio file and the mode's fields in, audio out
  ``POST /api/audio_to_audio_async/submit``  the same as a task
Compatible routes (FastAPI, mounted at ``/``): ``/v1/audio/generate``, ``/v1/audio/generations``,
``/generate``, ``/jobs``, ``/health``, ``/outputs/{key}``, ``/ui/``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

# huggingface_hub reads its cache and offline settings once, at import: set them first.
from stable_audio_bento.store.hub_cache import prepare_offline_hub

prepare_offline_hub()

import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException  # noqa: E402
from bentoml.validators import ContentType  # noqa: E402
from starlette.middleware.cors import CORSMiddleware  # noqa: E402
from starlette.responses import Response  # noqa: E402

from stable_audio_bento.errors import StableAudioError  # noqa: E402
from stable_audio_bento.http import create_app, map_error  # noqa: E402
from stable_audio_bento.http.audio_to_audio import AUDIO_IN_PATHS, native_request  # noqa: E402
from stable_audio_bento.http.cors import cors_options  # noqa: E402
from stable_audio_bento.http.middleware.api_docs import ApiDocsMiddleware  # noqa: E402
from stable_audio_bento.http.middleware.auth import ApiKeyMiddleware  # noqa: E402
from stable_audio_bento.http.middleware.body_limits import BodyLimits  # noqa: E402
from stable_audio_bento.http.middleware.concurrency import ConcurrencyLimit  # noqa: E402
from stable_audio_bento.http.middleware.guard import RequestGuard  # noqa: E402
from stable_audio_bento.http.middleware.native_errors import (  # noqa: E402
    NativeApiErrors,
    form_validator,
    task_validator,
)
from stable_audio_bento.http.native import (  # noqa: E402
    plan_audio_task,
    plan_task,
    write_output,
)
from stable_audio_bento.http.views import bind_views  # noqa: E402
from stable_audio_bento.lifecycle import exit_when_orphaned, requeue_on_sigterm  # noqa: E402
from stable_audio_bento.pipeline.generation import GeneratedAudio  # noqa: E402
from stable_audio_bento.schemas import AudioGenerateRequest, Normalize  # noqa: E402
from stable_audio_bento.settings import Settings  # noqa: E402

# BentoML sets up the handlers; our loggers report model loads, evictions and job outcomes.
logging.getLogger("stable_audio_bento").setLevel(logging.INFO)
settings = Settings()
app = create_app()

AUDIO_TYPES = "audio/*"
AudioFile = Annotated[Path, ContentType(AUDIO_TYPES)]
AudioInMode = Literal["audio-to-audio", "inpainting", "continuation"]


def _send(ctx: bentoml.Context, path: Path, headers: dict[str, str]) -> Path:
    """``path`` as the response body, with ``headers`` (BentoML adds ctx's to its response)."""
    for name, value in headers.items():
        ctx.response.headers[name] = value
    return path


class ApiError(BentoMLException):
    """Carries an HTTP status chosen by ``map_error`` through BentoML's API layer."""

    def __init__(self, error: StableAudioError) -> None:
        response = map_error(error)
        super().__init__(bytes(response.body).decode())
        self.error_code = HTTPStatus(response.status_code)


def _audio_in_form(
    audio: AudioFile,
    prompt: str,
    ctx: bentoml.Context,
    mode: AudioInMode = "audio-to-audio",
    model: str | None = None,
    negative_prompt: str | None = None,
    duration: float | None = None,
    steps: int | None = None,
    cfg_scale: float | None = None,
    seed: int = -1,
    response_format: str = "wav",
    init_noise_level: float = 0.9,
    inpaint_start_seconds: list[float] | None = None,
    inpaint_end_seconds: list[float] | None = None,
    trim: bool = False,
    normalize: Normalize | None = None,
) -> AudioFile:
    """The fields of both native audio-in APIs, written once: BentoML reads an API's form (and
    its OpenAPI schema) from its signature, which ``audio_in_fields`` gives it from this one."""
    raise NotImplementedError


F = TypeVar("F", bound=Callable[..., Any])


def audio_in_fields(func: F) -> F:
    """``func(self, audio, ctx, mode, **fields)`` with ``_audio_in_form``'s signature: BentoML
    calls it with every field by name; ``fields`` are those but the file, ``ctx`` and mode."""
    form = inspect.signature(_audio_in_form)
    own = next(iter(inspect.signature(func).parameters.values()))
    func.__signature__ = form.replace(  # type: ignore[attr-defined]
        parameters=[own, *form.parameters.values()]
    )
    return func


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="stable-audio",
    resources={"gpu": 1},
    # No BentoML max_concurrency: its 429 is plain text without Retry-After, from outside our
    # middlewares; ConcurrencyLimit (STABLE_AUDIO_MAX_CONCURRENCY) answers in our shape.
    traffic={"timeout": 3600},
    # Sync APIs and routes run in this pool: status and health stay responsive during
    # generation, and concurrent requests reach the coalescer together.
    threads=32,
    workers=1,
)
class StableAudio:
    def __init__(self) -> None:
        from stable_audio_bento.runtime import Runtime

        self.runtime = Runtime(settings)
        app.state.runtime = self.runtime
        bind_views(self.runtime)
        # Running jobs go back to the queue the moment this process is told to stop, or finds
        # its supervisor gone (a kill -9 of the server leaves BentoML's workers running).
        requeue_on_sigterm(self.runtime.worker.begin_shutdown)
        exit_when_orphaned(self.runtime.worker.begin_shutdown)
        self.runtime.start()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.runtime.stop()

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    @bentoml.api(route="/api/generate")
    def generate(self, request: AudioGenerateRequest, /, ctx: bentoml.Context) -> AudioFile:
        """Generate audio; the body is a vLLM-Omni Audio Generate request."""
        try:
            result = self.runtime.generate(request.to_params())
        except StableAudioError as e:
            raise ApiError(e) from e
        return _send(ctx, *write_output(result, ctx.temp_dir))

    @bentoml.task(route="/api/generate_async")
    def generate_async(self, request: AudioGenerateRequest, /, ctx: bentoml.Context) -> AudioFile:
        """The same generation as a BentoML task (submit, then poll status and get)."""
        try:
            result = self.runtime.generate(request.to_params())
        except Exception as e:
            return _task_failed(ctx, e)
        return _task_result(result)

    def _audio_in(self, mode: str, audio: Path, fields: dict[str, Any]) -> GeneratedAudio:
        data = audio.read_bytes()
        spec = native_request(mode, data, fields, settings.max_upload_mb)
        return self.runtime.audio_in.generate(spec, data)

    @bentoml.api(route="/api/audio_to_audio")
    @audio_in_fields
    def audio_to_audio(
        self, audio: Path, ctx: bentoml.Context, mode: str, **fields: Any
    ) -> AudioFile:
        """Variation (audio-to-audio), inpainting or continuation of an uploaded file."""
        try:
            result = self._audio_in(mode, audio, fields)
        except StableAudioError as e:
            raise ApiError(e) from e
        return _send(ctx, *write_output(result, ctx.temp_dir))

    @bentoml.task(route="/api/audio_to_audio_async")
    @audio_in_fields
    def audio_to_audio_async(
        self, audio: Path, ctx: bentoml.Context, mode: str, **fields: Any
    ) -> AudioFile:
        """The same as a BentoML task (submit, then poll status and get)."""
        try:
            result = self._audio_in(mode, audio, fields)
        except Exception as e:
            return _task_failed(ctx, e)
        return _task_result(result)


def _task_failed(ctx: bentoml.Context, e: Exception) -> AudioFile:
    """A task's error as its result. BentoML 1.4 leaves a task whose function raises
    ``in_progress`` forever; answering with an error status ends it ``failed`` instead, with
    the error body as its result."""
    error = e if isinstance(e, StableAudioError) else StableAudioError(str(e))
    response = map_error(error)
    ctx.response.status_code = response.status_code
    return response  # type: ignore[return-value]


def _task_result(result: GeneratedAudio) -> AudioFile:
    """A task's result is stored from a Response: BentoML 1.4 cannot store a Path's (its
    result store raises KeyError 'method' and the task stays in_progress forever)."""
    body = Response(result.body(), media_type=result.media_type, headers=result.headers())
    return body  # type: ignore[return-value]


# The decorators made StableAudio a bentoml Service; mypy cannot see through them.
service: Any = StableAudio
if (cors := cors_options(settings)) is not None:
    # Outside the key check, so that a 401 also carries the CORS headers a browser needs to
    # read it; preflights (OPTIONS) never need a key.
    service.add_asgi_middleware(CORSMiddleware, **cors)
# Outermost first: body sizes and the body deadline (before anything reads a body or takes a
# slot), the in-flight bound, the key (who is calling), native API errors in our shape, both
# OpenAPI documents completed, then the body checks.
service.add_asgi_middleware(
    BodyLimits,
    max_body_bytes=settings.max_body_kb * 1024,
    max_upload_bytes=int((settings.max_upload_mb + 1) * 2**20),
    upload_json_paths=AUDIO_IN_PATHS,
    body_timeout=settings.body_timeout,
)
service.add_asgi_middleware(
    ConcurrencyLimit, limit=settings.max_concurrency, retry_after=settings.job_retry_after
)
service.add_asgi_middleware(
    ApiKeyMiddleware, keys=settings.api_keys, admin_keys=settings.admin_api_keys
)
service.add_asgi_middleware(
    NativeApiErrors,
    validate=task_validator(lambda raw: plan_task(app.state.runtime, raw)),
    validate_form=form_validator(
        lambda form: plan_audio_task(
            app.state.runtime,
            service.apis["audio_to_audio_async"].input_spec,
            form,
            max_mb=settings.max_upload_mb,
            accepted=AUDIO_TYPES,
        )
    ),
    max_body_bytes=int((settings.max_upload_mb + 1) * 2**20),
)
service.add_asgi_middleware(ApiDocsMiddleware)
service.add_asgi_middleware(
    RequestGuard,
    max_body_bytes=settings.max_body_kb * 1024,
    max_upload_bytes=int((settings.max_upload_mb + 1) * 2**20),
    max_prompt_chars=settings.max_prompt_chars,
    upload_json_paths=AUDIO_IN_PATHS,
)
