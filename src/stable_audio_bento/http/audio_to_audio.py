"""Audio in, audio out: variations, inpainting and continuation, sync and as jobs.

As the stable-audio-api stand-in has them: multipart ``POST /v1/audio/variations`` and
``/jobs/variations`` (the file in form field ``audio``, the generation fields as form fields,
``init_noise_level`` 0-1, default 0.9), ``POST /v1/audio/inpaint`` and ``/jobs/inpaint``
(``inpaint_start_seconds`` / ``inpaint_end_seconds`` or their ``inpaint_mask_*`` aliases, each a
number or a JSON list), and ours: ``POST /v1/audio/continue`` and ``/jobs/continue``
(``duration``: the length to extend the audio to). Each also takes a JSON body with the file as
base64 (or a data URL) in ``audio``. Field errors are 422 as pydantic gives them; audio that is
too big is a 413, audio that cannot be used a 400 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AliasChoices, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile

from .. import limits
from ..engine import AUDIO_TO_AUDIO, CONTINUATION, INPAINTING
from ..errors import InvalidRequestError
from ..formats import FormatName
from ..jobs.queue_control import JobFields
from ..lora.request import LORAS_DESCRIPTION, MAX_LORAS, LoraRequest
from ..pipeline.audio_to_audio import DEFAULT_NOISE_LEVEL, AudioInParams
from ..pipeline.source_audio import check_size
from ..schemas import (
    NORMALIZE_DESCRIPTION,
    STABLE_API,
    GenerationParams,
    Normalize,
    Seed,
    lora_pairs,
)
from ..unset import NullMeansUnset, drop_blank
from .deps import CallerDep, IdempotencyKeyHeader, PublicBaseDep, RuntimeDep
from .errors import OPENAPI_ERRORS
from .fields import ignored_fields_headers
from .generate import AUDIO_CONTENT, audio_response
from .middleware.auth import priority_cap
from .views import job_view

router = APIRouter(tags=["audio in"])

ROUTES = {
    "variations": AUDIO_TO_AUDIO,
    "inpaint": INPAINTING,
    "continue": CONTINUATION,
}
Seconds = float | list[float] | None


class AudioInFields(JobFields, NullMeansUnset):
    """The fields of an audio-in request besides the file (form fields or JSON).

    The job fields (priority, deadline, webhook: ``JobFields``) are read by the job routes.
    """

    # Fields these routes do not take are ignored and named (X-Ignored-Fields), as on the
    # text routes: the stand-in's client sends its text fields (apg_scale...) here too.
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    prompt: str = Field(min_length=1, description="Text prompt describing the result.")
    model: str | None = Field(default=None, description="Model name, alias or repo id.")
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    duration: float | None = Field(
        default=None, gt=0, description="Continuation: the length to extend the audio to."
    )
    steps: int | None = Field(default=None, ge=1, description="Sampling steps.")
    cfg_scale: float | None = Field(default=None, ge=0, le=limits.CFG_SCALE_MAX)
    seed: Seed = -1
    response_format: FormatName = Field(default="wav", description="Audio format.")
    init_noise_level: float = Field(
        default=DEFAULT_NOISE_LEVEL,
        ge=0,
        le=1,
        description="Variations: how much of the source is noised away (1 = none of it kept).",
    )
    inpaint_start_seconds: Seconds = Field(
        default=None,
        validation_alias=AliasChoices("inpaint_start_seconds", "inpaint_mask_start_seconds"),
        description="Inpainting: where each region starts (a number or a list).",
    )
    inpaint_end_seconds: Seconds = Field(
        default=None,
        validation_alias=AliasChoices("inpaint_end_seconds", "inpaint_mask_end_seconds"),
        description="Inpainting: where each region ends (a number or a list).",
    )
    trim: bool = Field(
        default=False, description="Use the start of audio longer than the model's window."
    )
    normalize: Normalize | None = Field(default=None, description=NORMALIZE_DESCRIPTION)
    loras: list[LoraRequest] | None = Field(
        default=None,
        max_length=MAX_LORAS,
        description=LORAS_DESCRIPTION + " In a form: a JSON list.",
    )
    batch_size: int = Field(
        default=1, ge=1, le=1, description="Outputs: one per audio-in request (the peer's field)."
    )

    @property
    def ignored_fields(self) -> list[str]:
        """Fields of the request these routes do not take, in the order sent."""
        return list(self.model_extra or {})

    @field_validator("inpaint_start_seconds", "inpaint_end_seconds", "loras", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                return json.loads(value)
            except ValueError as e:
                raise ValueError(f"not a JSON list: {e}") from e
        return value

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    def regions(self) -> tuple[tuple[float, float], ...]:
        """The (start, end) pairs; a 400 when the two lists do not pair up."""
        starts, ends = _as_list(self.inpaint_start_seconds), _as_list(self.inpaint_end_seconds)
        if len(starts) != len(ends):
            raise InvalidRequestError(
                f"inpaint_start_seconds has {len(starts)} value(s) and inpaint_end_seconds "
                f"{len(ends)}; give one end for each start",
                field="inpaint_end_seconds",
            )
        return tuple(zip(starts, ends, strict=True))

    def to_spec(self, mode: str) -> AudioInParams:
        params = GenerationParams(
            prompt=self.prompt,
            model=self.model,
            negative_prompt=self.negative_prompt,
            seconds_total=self.duration,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            seed=self.seed,
            response_format=self.response_format,
            normalize=self.normalize,
            loras=lora_pairs(self.loras),
            api=STABLE_API,
        )
        return AudioInParams(
            mode=mode,
            params=params,
            init_noise_level=self.init_noise_level,
            regions=self.regions() if mode == INPAINTING else (),
            trim=self.trim,
        )


def _as_list(value: Seconds) -> list[float]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


async def read_request(
    request: Request, max_mb: float, max_prompt_chars: int = limits.PROMPT_MAX_CHARS
) -> tuple[AudioInFields, bytes, str | None]:
    """The fields and the file of a multipart form or a JSON body (base64 ``audio``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=64)
        upload = form.get("audio")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError(
                "audio is required: the file in multipart form field `audio`", field="audio"
            )
        if upload.size is not None:
            check_size(upload.size, max_mb, "audio")
        data = await upload.read()
        filename = upload.filename
        raw: dict[str, Any] = {}
        for key in form:
            if key == "audio":
                continue
            values = [v for v in form.getlist(key) if isinstance(v, str)]
            raw[key] = values[0] if len(values) == 1 else values
        raw = drop_blank(raw)
    elif content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as e:
            raise InvalidRequestError(f"the body is not JSON: {e}", field="body") from e
        if not isinstance(body, dict):
            raise InvalidRequestError("the body must be a JSON object", field="body")
        data = _base64_audio(body.pop("audio", None), max_mb)
        filename = body.pop("audio_filename", None)
        raw = body
    else:
        raise InvalidRequestError(
            "send multipart/form-data with the file in field `audio`, or a JSON body with the "
            f"file as base64 in `audio` (got Content-Type {content_type or 'none'!r})",
            field="audio",
        )
    try:
        fields = AudioInFields.model_validate(raw)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        ) from e
    for name in ("prompt", "negative_prompt"):  # as the request guard bounds JSON prompts
        text = getattr(fields, name)
        if text is not None and len(text) > max_prompt_chars:
            raise RequestValidationError(
                [
                    {
                        "type": "string_too_long",
                        "loc": ("body", name),
                        "msg": f"String should have at most {max_prompt_chars} characters",
                        "input": text[:100],
                        "ctx": {"max_length": max_prompt_chars},
                    }
                ]
            )
    return fields, data, filename if isinstance(filename, str) else None


def _base64_audio(value: Any, max_mb: float) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(
            "audio is required: the file as a base64 string (or a data: URL)", field="audio"
        )
    if value.startswith("data:"):
        value = value.partition(",")[2]
    check_size(len(value) * 3 // 4, max_mb, "audio")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequestError(f"audio is not valid base64 ({e})", field="audio") from e


def _sync_route(name: str, mode: str) -> None:
    async def sync(request: Request, runtime: RuntimeDep) -> Response:
        fields, data, _ = await read_request(
            request, runtime.settings.max_upload_mb, runtime.settings.max_prompt_chars
        )
        ignored = ignored_fields_headers(fields, runtime.settings, f"/v1/audio/{name}")
        spec = fields.to_spec(mode)
        result = await run_in_threadpool(runtime.audio_in.generate, spec, data)
        return audio_response(result, {"X-Mode": mode, **ignored})

    router.add_api_route(
        f"/v1/audio/{name}",
        sync,
        methods=["POST"],
        response_class=Response,
        responses={200: {"content": AUDIO_CONTENT}, **OPENAPI_ERRORS},
        summary=f"{mode.capitalize()}: audio file in, audio file out",
    )

    async def job(
        request: Request,
        runtime: RuntimeDep,
        base: PublicBaseDep,
        caller: CallerDep,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> JSONResponse:
        fields, data, filename = await read_request(
            request, runtime.settings.max_upload_mb, runtime.settings.max_prompt_chars
        )
        ignored = ignored_fields_headers(fields, runtime.settings, f"/jobs/{name}")
        spec = fields.to_spec(mode)
        cap = priority_cap(runtime.settings, caller)
        options = await run_in_threadpool(fields.to_options().checked, runtime.settings, cap)
        queued = await run_in_threadpool(
            runtime.runner.submit_audio,
            spec,
            data,
            filename,
            idempotency_key,
            caller.owner,
            options,
        )
        view = job_view(queued, runtime, base)
        headers = {**ignored, "Location": view["status_url"]}
        return JSONResponse(view, status_code=202, headers=headers)

    router.add_api_route(
        f"/jobs/{name}",
        job,
        methods=["POST"],
        status_code=202,
        summary=f"Queue a {mode} job (the source is stored before the 202)",
    )


for _name, _mode in ROUTES.items():
    _sync_route(_name, _mode)

# The paths whose JSON bodies carry the file as base64 (the request guard bounds them as
# uploads).
AUDIO_IN_PATHS = frozenset(
    {f"/v1/audio/{name}" for name in ROUTES} | {f"/jobs/{name}" for name in ROUTES}
)
NATIVE_MODES = (AUDIO_TO_AUDIO, INPAINTING, CONTINUATION)


def native_request(mode: str, data: bytes, fields: dict[str, Any], max_mb: float) -> AudioInParams:
    """The native API's typed inputs as a spec, the file's bytes bounded (400s name the field)."""
    if mode not in NATIVE_MODES:
        raise InvalidRequestError(
            f"mode must be one of {', '.join(NATIVE_MODES)}, got {mode!r}", field="mode"
        )
    check_size(len(data), max_mb, "audio")
    try:
        parsed = AudioInFields.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise InvalidRequestError(f"{field}: {error['msg']}", field=field) from e
    return parsed.to_spec(mode)
