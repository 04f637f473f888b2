"""Request and response schemas of the public API.

Two request shapes follow the reference servers (vLLM-Omni's Audio Generate API and the
stable-audio-api server); both convert to one internal ``GenerationParams``, which is also what
a job stores (versioned, see ``to_record`` / ``from_record``).

Like both peers, a body may carry fields neither knows: they are ignored (the response names
them in ``X-Ignored-Fields``), or refused with a 422 when ``STABLE_AUDIO_STRICT_REQUESTS`` is
on. Types are strict: ``true`` is not a length and ``"8"`` is not a step count.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import limits
from .engine.request import Scalar
from .formats import FormatName
from .lora.request import LORAS_DESCRIPTION, MAX_LORAS, LoraRequest
from .unset import NullMeansUnset

Seed = Annotated[
    int,
    Field(ge=-1, le=limits.SEED_MAX, description="Random seed; -1 or omitted picks one at random."),
]


def resolve_seed(seed: int | None) -> int:
    """The seed a request runs with: its own, or a fresh random one for None / -1."""
    if seed is None or seed < 0:
        return secrets.randbelow(limits.SEED_MAX + 1)
    return seed


def output_seeds(seed: int, count: int) -> list[int]:
    """The seeds of ``count`` outputs of one request: ``seed``, ``seed + 1``, ... (wrapping)."""
    return [(seed + i) % (limits.SEED_MAX + 1) for i in range(count)]


VLLM_API = "vllm-omni"
STABLE_API = "stable-audio-api"
# Internal field -> the client's name for it, per API, so that errors name the client's field.
FIELD_NAMES: dict[str, dict[str, str]] = {
    VLLM_API: {
        "prompt": "input",
        "seconds_start": "audio_start",
        "seconds_total": "audio_length",
        "steps": "num_inference_steps",
        "cfg_scale": "guidance_scale",
    },
    STABLE_API: {
        "seconds_total": "duration",
        "outputs": "batch_size",
        "duration_padding": "duration_padding_sec",
    },
}
VLLM_FIELDS = FIELD_NAMES[VLLM_API]
STABLE_API_FIELDS = FIELD_NAMES[STABLE_API]

PARAMS_VERSION = 2

# The output level (``audio.LEVELS``), the same field on every route.
Normalize = Literal["peak", "attenuate", "clamp"]
NORMALIZE_DESCRIPTION = (
    "Output level. 'peak': scaled so the loudest sample is 0.98 (Stable Audio Open's default); "
    "'attenuate': the model's own level, divided by the peak only above full scale, never "
    "boosted (Stable Audio 3's default, as its reference); 'clamp': the model's level clipped "
    "to [-1, 1] (what the SA3 reference's generate() returns). Default: the model family's."
)
_KEY_RE = re.compile(rf"^[A-Za-z_][A-Za-z0-9_]{{0,{limits.SAMPLER_KWARGS_KEY_MAX_CHARS - 1}}}$")


@dataclass(frozen=True)
class GenerationParams:
    """One generation, normalised from any request shape. ``None`` means the model's default."""

    prompt: str
    model: str | None = None
    negative_prompt: str | None = None
    seconds_start: float = 0.0
    seconds_total: float | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    sampler: str | None = None
    response_format: FormatName = "wav"
    speed: float = 1.0
    outputs: int = 1
    apg_scale: float | None = None
    padding_seconds: float | None = None
    sampler_kwargs: tuple[tuple[str, Scalar], ...] = ()
    chunked_decode: bool = False
    normalize: Normalize | None = None
    # (LoRA name, strength) in stacking order.
    loras: tuple[tuple[str, float], ...] = ()
    # Which API the request came in through: errors name that API's fields.
    api: str = VLLM_API

    @property
    def field_names(self) -> dict[str, str]:
        return FIELD_NAMES.get(self.api, {})

    def to_record(self) -> dict[str, Any]:
        """What a job stores: every field, versioned, independent of the API it came from."""
        record = asdict(self)
        record["sampler_kwargs"] = dict(self.sampler_kwargs)
        record["loras"] = [{"name": n, "strength": s} for n, s in self.loras]
        return {"version": PARAMS_VERSION, **record}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GenerationParams:
        """A stored record back; a record without a version is a job queued by an older
        release, which stored the stable-audio-api body (``duration`` None: the window)."""
        if "version" not in record:
            return cls(
                prompt=record["prompt"],
                model=record.get("model"),
                negative_prompt=record.get("negative_prompt"),
                seconds_total=record.get("duration"),
                steps=record.get("steps"),
                cfg_scale=record.get("cfg_scale"),
                seed=record.get("seed"),
                response_format=record.get("response_format", "wav"),
                api=STABLE_API,
            )
        values = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        values["sampler_kwargs"] = tuple(sorted(dict(values.get("sampler_kwargs") or {}).items()))
        values["loras"] = tuple(
            (x["name"], float(x["strength"])) for x in values.get("loras") or ()
        )
        return cls(**values)


def lora_pairs(loras: list[LoraRequest] | None) -> tuple[tuple[str, float], ...]:
    return tuple((item.name, item.strength) for item in loras or ())


def _not_blank(value: str, field_name: str) -> str:
    if not value.strip():
        raise ValueError(f"{field_name} must not be blank")
    return value


def check_sampler_kwargs(value: dict[str, Scalar] | None) -> dict[str, Scalar] | None:
    """Scalars only, a few short keys, none the server sets itself (steps, seed, ...)."""
    if value is None:
        return None
    if len(value) > limits.SAMPLER_KWARGS_MAX_KEYS:
        raise ValueError(f"at most {limits.SAMPLER_KWARGS_MAX_KEYS} keys, got {len(value)}")
    for key, item in value.items():
        if not _KEY_RE.match(key):
            raise ValueError(f"key {key!r} is not a name (letters, digits, _; at most 64)")
        if key in limits.RESERVED_SAMPLER_KWARGS:
            raise ValueError(f"key {key!r} is reserved: the server sets it (use its own field)")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{key} must be a finite number")
        if isinstance(item, str) and len(item) > limits.SAMPLER_KWARGS_STR_MAX_CHARS:
            raise ValueError(f"{key} is longer than {limits.SAMPLER_KWARGS_STR_MAX_CHARS} chars")
    return value


class CompatRequest(NullMeansUnset):
    """Shared config: strict types, unknown fields kept aside (``ignored_fields``), a null
    field taken as not given (``unset``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    @field_validator(
        "seed", "steps", "num_inference_steps", "batch_size", mode="before", check_fields=False
    )
    @classmethod
    def _integral_numbers(cls, value: object) -> object:
        # JSON Schema counts 8.0 as an integer, so both OpenAPI documents promise it: it is 8
        # (8.5, "8" and true stay refused).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @property
    def ignored_fields(self) -> list[str]:
        """Fields of the body that no API knows, in the order sent."""
        return list(self.model_extra or {})


class AudioGenerateRequest(CompatRequest):
    """``POST /v1/audio/generate`` (vLLM-Omni), also the body of the native BentoML APIs."""

    input: str = Field(min_length=1, description="Text prompt describing the audio.")
    model: str | None = Field(default=None, description="Model name, alias or repo id.")
    response_format: FormatName = Field(default="wav", description="Audio format.")
    speed: float = Field(
        default=1.0,
        ge=limits.SPEED_MIN,
        le=limits.SPEED_MAX,
        description="Playback speed (pitch-preserving stretch).",
    )
    stream_format: Literal["sse", "audio"] | None = Field(
        default="audio",
        description="'audio': the file in the body; 'sse': progress events, then the file in "
        "base64 chunks (text/event-stream; ours: vLLM-Omni refuses it).",
    )
    audio_length: float | None = Field(default=None, gt=0, description="Seconds of audio.")
    audio_start: float = Field(default=0.0, ge=0, description="Start time in seconds.")
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    guidance_scale: float | None = Field(default=None, ge=0, le=limits.GUIDANCE_SCALE_MAX)
    num_inference_steps: int | None = Field(default=None, ge=1, le=limits.INFERENCE_STEPS_MAX)
    seed: Seed | None = None
    normalize: Normalize | None = Field(default=None, description=NORMALIZE_DESCRIPTION)
    loras: list[LoraRequest] | None = Field(
        default=None, max_length=MAX_LORAS, description=LORAS_DESCRIPTION
    )

    @field_validator("input")
    @classmethod
    def _input_not_blank(cls, value: str) -> str:
        return _not_blank(value, "input")

    def to_params(self) -> GenerationParams:
        return GenerationParams(
            prompt=self.input,
            model=self.model,
            negative_prompt=self.negative_prompt,
            seconds_start=self.audio_start,
            seconds_total=self.audio_length,
            steps=self.num_inference_steps,
            cfg_scale=self.guidance_scale,
            seed=self.seed,
            response_format=self.response_format,
            speed=self.speed,
            normalize=self.normalize,
            loras=lora_pairs(self.loras),
            api=VLLM_API,
        )


class GenerationsRequest(CompatRequest):
    """``POST /v1/audio/generations``, ``POST /generate`` and ``POST /jobs`` (stable-audio-api)."""

    prompt: str = Field(min_length=1, description="Text prompt describing the audio.")
    model: str | None = Field(default=None, description="Model name, alias or repo id.")
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    duration: float = Field(
        default=limits.STABLE_API_DEFAULT_DURATION, gt=0, description="Seconds of audio."
    )
    steps: int | None = Field(default=None, ge=1, description="Sampling steps.")
    cfg_scale: float | None = Field(
        default=None, ge=0, le=limits.CFG_SCALE_MAX, description="CFG scale."
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        description="Outputs of this request (at most STABLE_AUDIO_MAX_OUTPUTS); more than one "
        "comes back as a zip of 01.<ext>, 02.<ext>, ... with seeds seed, seed+1, ...",
    )
    seed: Seed = -1
    chunked_decode: bool = Field(
        default=False, description="Bounded-memory decode (ours always is; accepted)."
    )
    apg_scale: float | None = Field(
        default=None,
        ge=0,
        le=limits.APG_SCALE_MAX,
        description="Adaptive projected guidance, on models that have it.",
    )
    duration_padding_sec: float | None = Field(
        default=None,
        ge=0,
        le=limits.DURATION_PADDING_MAX,
        description="Seconds generated past the end and cut off, on models that honour it "
        f"(default {limits.DEFAULT_DURATION_PADDING:g} there).",
    )
    sampler_kwargs: dict[str, Scalar] | None = Field(
        default=None, description="Extra sampler settings (scalars) the model accepts."
    )
    response_format: FormatName = Field(default="wav", description="Audio format.")
    normalize: Normalize | None = Field(default=None, description=NORMALIZE_DESCRIPTION)
    loras: list[LoraRequest] | None = Field(
        default=None, max_length=MAX_LORAS, description=LORAS_DESCRIPTION
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        return _not_blank(value, "prompt")

    @field_validator("sampler_kwargs")
    @classmethod
    def _scalar_kwargs(cls, value: dict[str, Scalar] | None) -> dict[str, Scalar] | None:
        return check_sampler_kwargs(value)

    def to_params(self) -> GenerationParams:
        return GenerationParams(
            prompt=self.prompt,
            model=self.model,
            negative_prompt=self.negative_prompt,
            seconds_total=self.duration,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            seed=self.seed,
            response_format=self.response_format,
            outputs=self.batch_size,
            apg_scale=self.apg_scale,
            padding_seconds=self.duration_padding_sec,
            sampler_kwargs=tuple(sorted((self.sampler_kwargs or {}).items())),
            chunked_decode=self.chunked_decode,
            normalize=self.normalize,
            loras=lora_pairs(self.loras),
            api=STABLE_API,
        )


ErrorType = Literal[
    "BadRequestError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "RateLimitError",
    "InternalServerError",
    "ServiceUnavailableError",
]


class ErrorBody(BaseModel):
    message: str
    type: ErrorType
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """The documented error envelope: ``{"error": {message, type, param, code}}``."""

    error: ErrorBody


def stable_api_body(params: GenerationParams) -> dict[str, Any]:
    """``params`` in the stable-audio-api request's names (what a job record shows)."""
    return {
        "prompt": params.prompt,
        "model": params.model,
        "negative_prompt": params.negative_prompt,
        "duration": params.seconds_total,
        "steps": params.steps,
        "cfg_scale": params.cfg_scale,
        "batch_size": params.outputs,
        "seed": params.seed,
        "chunked_decode": params.chunked_decode,
        "apg_scale": params.apg_scale,
        "duration_padding_sec": params.padding_seconds,
        "sampler_kwargs": dict(params.sampler_kwargs) or None,
        "response_format": params.response_format,
        "normalize": params.normalize,
        "loras": [{"name": n, "strength": s} for n, s in params.loras] or None,
    }
