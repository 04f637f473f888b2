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

import fnmatch
import logging
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Literal

# huggingface_hub reads its cache and offline settings once, at import: set them first.
from stable_audio_bento.hub_cache import prepare_offline_hub

prepare_offline_hub()

import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException  # noqa: E402
from bentoml.validators import ContentType  # noqa: E402
from starlette.middleware.cors import CORSMiddleware  # noqa: E402
from starlette.responses import Response  # noqa: E402

from stable_audio_bento.api_docs import ApiDocsMiddleware  # noqa: E402
from stable_audio_bento.auth import ApiKeyMiddleware  # noqa: E402
from stable_audio_bento.concurrency import ConcurrencyLimit  # noqa: E402
from stable_audio_bento.errors import InvalidRequestError, StableAudioError  # noqa: E402
from stable_audio_bento.http import create_app, map_error  # noqa: E402
from stable_audio_bento.http.audio_in import AUDIO_IN_PATHS, native_request  # noqa: E402
from stable_audio_bento.http.cors import cors_options  # noqa: E402
from stable_audio_bento.http.native import write_output  # noqa: E402
from stable_audio_bento.lifecycle import exit_when_orphaned, requeue_on_sigterm  # noqa: E402
from stable_audio_bento.native_errors import (  # noqa: E402
    Form,
    FormFile,
    NativeApiErrors,
    form_validator,
    form_values,
    task_validator,
)
from stable_audio_bento.request_guard import RequestGuard  # noqa: E402
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
            # BentoML 1.4 leaves a task whose function raises `in_progress` forever; answering
            # with an error status ends it `failed` instead, with the error body as its result.
            error = e if isinstance(e, StableAudioError) else StableAudioError(str(e))
            response = map_error(error)
            ctx.response.status_code = response.status_code
            return response  # type: ignore[return-value]
        # A task's result is stored from a Response: BentoML 1.4 cannot store a Path's (its
        # result store raises KeyError 'method' and the task stays in_progress forever).
        body = Response(result.body(), media_type=result.media_type, headers=result.headers())
        return body  # type: ignore[return-value]

    def _audio_in(self, mode: str, audio: Path, fields: dict[str, Any]) -> Any:
        data = audio.read_bytes()
        spec = native_request(mode, data, fields, settings.max_upload_mb)
        return self.runtime.audio_in.generate(spec, data)

    @bentoml.api(route="/api/audio_to_audio")
    def audio_to_audio(
        self,
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
        """Variation (audio-to-audio), inpainting or continuation of an uploaded file."""
        fields = dict(locals())
        for name in ("self", "audio", "ctx", "mode"):
            fields.pop(name)
        try:
            result = self._audio_in(mode, audio, fields)
        except StableAudioError as e:
            raise ApiError(e) from e
        return _send(ctx, *write_output(result, ctx.temp_dir))

    @bentoml.task(route="/api/audio_to_audio_async")
    def audio_to_audio_async(
        self,
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
        """The same as a BentoML task (submit, then poll status and get)."""
        fields = dict(locals())
        for name in ("self", "audio", "ctx", "mode"):
            fields.pop(name)
        try:
            result = self._audio_in(mode, audio, fields)
        except Exception as e:  # ends the task `failed` (see generate_async)
            error = e if isinstance(e, StableAudioError) else StableAudioError(str(e))
            response = map_error(error)
            ctx.response.status_code = response.status_code
            return response  # type: ignore[return-value]
        # A task's result is stored from a Response (BentoML 1.4 cannot store a Path's).
        body = Response(result.body(), media_type=result.media_type, headers=result.headers())
        return body  # type: ignore[return-value]


def _plan_task(raw: bytes) -> object:
    """What a task's run would check first (schema, model, limits), at submit; loads nothing."""
    request = AudioGenerateRequest.model_validate_json(raw)
    return app.state.runtime.generator.plan(request.to_params())


def _plan_audio_task(form: Form) -> object:
    """What an audio-in task's run checks first, at submit: its input model (read from the
    form as BentoML reads it), the fields, the uploaded file decoded; loads nothing."""
    model: Any = service.apis["audio_to_audio_async"].input_spec
    values = form_values(form, frozenset(model.multipart_fields))
    files = [part for part in values.pop("audio", []) if isinstance(part, FormFile)]
    if files:
        upload = files[0]
        if upload.content_type and not fnmatch.fnmatch(upload.content_type, AUDIO_TYPES):
            raise InvalidRequestError(
                f"audio: the file's content type is {upload.content_type}, expected {AUDIO_TYPES}",
                field="audio",
            )
        # BentoML's file type takes a path as it is (nothing is read): the bytes themselves
        # are checked by the plan below.
        values["audio"] = Path(upload.filename or "audio")
    request = model.model_validate(values)
    fields = {k: getattr(request, k) for k in model.model_fields if k not in ("audio", "mode")}
    data = files[0].data
    spec = native_request(request.mode, data, fields, settings.max_upload_mb)
    return app.state.runtime.audio_in.plan(spec, data)


# The decorators made StableAudio a bentoml Service; mypy cannot see through them.
service: Any = StableAudio
if (cors := cors_options(settings)) is not None:
    # Outside the key check, so that a 401 also carries the CORS headers a browser needs to
    # read it; preflights (OPTIONS) never need a key.
    service.add_asgi_middleware(CORSMiddleware, **cors)
# Outermost first: the in-flight bound, the key (who is calling), native API errors in our
# shape, both OpenAPI documents completed, then the body bounds.
service.add_asgi_middleware(
    ConcurrencyLimit, limit=settings.max_concurrency, retry_after=settings.job_retry_after
)
service.add_asgi_middleware(
    ApiKeyMiddleware, keys=settings.api_keys, admin_keys=settings.admin_api_keys
)
service.add_asgi_middleware(
    NativeApiErrors,
    validate=task_validator(_plan_task),
    validate_form=form_validator(_plan_audio_task),
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
