"""Request and response schemas of the public API.

Two request shapes follow the reference documents (vLLM-Omni's Audio Generate API and the
stable-audio-api README); both convert to one internal ``GenerationParams``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .formats import FormatName

SEED_MAX = 2**32 - 1
Seed = Annotated[
    int,
    Field(ge=-1, le=SEED_MAX, description="Random seed; -1 or omitted picks one at random."),
]


def resolve_seed(seed: int | None) -> int:
    """The seed a request runs with: its own, or a fresh random one for None / -1."""
    if seed is None or seed < 0:
        return secrets.randbelow(SEED_MAX + 1)
    return seed


VLLM_FIELDS = {
    "prompt": "input",
    "seconds_start": "audio_start",
    "seconds_total": "audio_length",
    "steps": "num_inference_steps",
    "cfg_scale": "guidance_scale",
}
STABLE_API_FIELDS = {"seconds_total": "duration"}


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
    # Internal field -> the name the client used, so errors name the client's field.
    field_names: dict[str, str] = field(default_factory=dict)


class AudioGenerateRequest(BaseModel):
    """``POST /v1/audio/generate`` (vLLM-Omni), also the body of the native BentoML APIs."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="Text prompt describing the audio.")
    model: str | None = Field(default=None, description="Model name, alias or repo id.")
    response_format: FormatName = Field(default="wav", description="Audio format.")
    speed: float = Field(default=1.0, ge=0.25, le=4.0, description="Playback speed.")
    audio_length: float | None = Field(default=None, gt=0, description="Seconds of audio.")
    audio_start: float = Field(default=0.0, ge=0, description="Start time in seconds.")
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    guidance_scale: float | None = Field(default=None, ge=0, le=100)
    num_inference_steps: int | None = Field(default=None, ge=1)
    seed: Seed | None = None

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
            field_names=VLLM_FIELDS,
        )


class GenerationsRequest(BaseModel):
    """``POST /v1/audio/generations``, ``POST /generate`` and ``POST /jobs`` (stable-audio-api)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="Text prompt describing the audio.")
    model: str | None = Field(default=None, description="Model name, alias or repo id.")
    duration: float | None = Field(default=None, gt=0, description="Seconds of audio.")
    steps: int | None = Field(default=None, ge=1, description="Sampling steps.")
    cfg_scale: float | None = Field(default=None, ge=0, le=100, description="CFG scale.")
    seed: Seed = -1
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    response_format: FormatName = Field(default="wav", description="Audio format.")

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
            field_names=STABLE_API_FIELDS,
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
