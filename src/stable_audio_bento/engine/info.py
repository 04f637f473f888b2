"""What a model can do: rates, limits, defaults, samplers and modes, read without loading it."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from ..limits import MODEL_CFG_SCALE_MAX
from .request import (
    TEXT_TO_AUDIO,
    EngineRequest,
    SamplingParams,
    Scalar,
)

SAT_BACKEND = "stable-audio-tools"

# Samplers whose randomness we can seed per request. Deterministic ones draw nothing after the
# initial noise; the SDE / ancestral ones get a per-item noise source.
V_SAMPLERS = (
    "dpmpp-3m-sde",
    "dpmpp-2m-sde",
    "dpmpp-2m",
    "k-heun",
    "k-lms",
    "k-dpm-2",
    "k-dpmpp-2s-ancestral",
)
RF_SAMPLERS = ("pingpong", "euler", "dpmpp")
RF_OBJECTIVES = ("rectified_flow", "rf_denoiser")

# Model card defaults by objective (stable-audio-open-1.0 and stable-audio-open-small).
OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "v": {"steps": 100, "cfg_scale": 7.0, "sampler": "dpmpp-3m-sde"},
    "rectified_flow": {"steps": 50, "cfg_scale": 7.0, "sampler": "euler"},
    "rf_denoiser": {"steps": 8, "cfg_scale": 1.0, "sampler": "pingpong"},
}


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model can do, from its config and store metadata."""

    name: str
    sample_rate: int
    channels: int
    sample_size: int
    latent_downsampling: int
    objective: str
    default_steps: int
    default_cfg_scale: float
    default_sampler: str
    conditioning_ids: tuple[str, ...] = ("prompt", "seconds_start", "seconds_total")
    backend: str = SAT_BACKEND
    # SAO denoises its whole window whatever the request; SA3 latents are as long as the request.
    fixed_window: bool = True
    max_seconds_override: float | None = None
    default_negative_prompt: str | None = None
    modes: tuple[str, ...] = (TEXT_TO_AUDIO,)
    # Optional parameters the model honours: "apg_scale", "duration_padding", "seconds_start",
    # "negative_prompt". Asking a model for one it lacks is a 400, never a silent no-op.
    options: frozenset[str] = frozenset({"seconds_start", "negative_prompt"})
    # sampler_kwargs key -> (low, high) allowed range.
    sampler_kwargs: tuple[tuple[str, tuple[float, float]], ...] = ()
    # Variable-length models whose latent length is rounded as their reference rounds it (SA3:
    # whole samples, then up to this many latent frames); 0: the plain ceiling.
    latent_align: int = 0
    # The output level when a request names none (``audio.LEVELS``): each family's reference.
    default_level: str = "peak"

    @property
    def max_seconds(self) -> float:
        """The longest audio one request can get."""
        if self.max_seconds_override is not None:
            return self.max_seconds_override
        return self.sample_size / self.sample_rate

    @property
    def window_seconds(self) -> float:
        return self.max_seconds

    @property
    def samplers(self) -> tuple[str, ...]:
        return RF_SAMPLERS if self.objective in RF_OBJECTIVES else V_SAMPLERS

    # --------------------------------------------------------------- checks
    def sampling(
        self,
        steps: int | None = None,
        cfg_scale: float | None = None,
        sampler: str | None = None,
        max_steps: int = 1000,
        names: Mapping[str, str] | None = None,
        apg_scale: float | None = None,
        sampler_kwargs: Mapping[str, Scalar] | None = None,
    ) -> SamplingParams:
        """Fill the model's defaults and check ranges; ``names`` maps fields to API names."""
        names = names or {}
        steps = self.default_steps if steps is None else steps
        if not 1 <= steps <= max_steps:
            field = names.get("steps", "steps")
            raise InvalidRequestError(
                f"{field} must be between 1 and {max_steps}, got {steps}", field=field
            )
        cfg = self.default_cfg_scale if cfg_scale is None else float(cfg_scale)
        if not 0 <= cfg <= MODEL_CFG_SCALE_MAX:
            field = names.get("cfg_scale", "cfg_scale")
            raise InvalidRequestError(
                f"{field} must be between 0 and {MODEL_CFG_SCALE_MAX:g}, got {cfg:g}", field=field
            )
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers:
            raise InvalidRequestError(
                f"sampler must be one of {', '.join(self.samplers)} for {self.name}, "
                f"got {sampler!r}",
                field=names.get("sampler", "sampler"),
            )
        if apg_scale is not None:
            self.require_option("apg_scale", names)
        return SamplingParams(
            steps=steps,
            cfg_scale=cfg,
            sampler=sampler,
            apg_scale=apg_scale,
            sampler_kwargs=self._check_sampler_kwargs(sampler_kwargs or {}, names),
        )

    def require_option(self, option: str, names: Mapping[str, str] | None = None) -> None:
        """Raise a 400 naming the client's field when this model cannot honour ``option``."""
        if option not in self.options:
            field = (names or {}).get(option, option)
            raise InvalidRequestError(
                f"{field} is not supported by {self.name} ({self.backend} model)", field=field
            )

    def _check_sampler_kwargs(
        self, kwargs: Mapping[str, Scalar], names: Mapping[str, str]
    ) -> tuple[tuple[str, Scalar], ...]:
        field = names.get("sampler_kwargs", "sampler_kwargs")
        allowed = dict(self.sampler_kwargs)
        for key, value in kwargs.items():
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise InvalidRequestError(
                    f"{field}.{key} is not a setting of {self.name}'s sampler (it takes: {known})",
                    field=f"{field}.{key}",
                )
            low, high = allowed[key]
            number = (
                value if isinstance(value, int | float) and not isinstance(value, bool) else None
            )
            if number is None or not math.isfinite(number) or not low <= number <= high:
                raise InvalidRequestError(
                    f"{field}.{key} must be a number between {low:g} and {high:g}, got {value!r}",
                    field=f"{field}.{key}",
                )
        return tuple(sorted(kwargs.items()))

    def check_request(self, request: EngineRequest, names: Mapping[str, str] | None = None) -> None:
        """Raise ``InvalidRequestError`` for what this model's window cannot hold."""
        names = names or {}
        window = self.max_seconds
        length_field = names.get("seconds_total", "seconds_total")
        start_field = names.get("seconds_start", "seconds_start")
        if request.seconds_start and "seconds_start" not in self.options:
            self.require_option("seconds_start", names)
        if request.negative_prompt and "negative_prompt" not in self.options:
            self.require_option("negative_prompt", names)
        if request.padding_seconds and "duration_padding" not in self.options:
            self.require_option("duration_padding", names)
        if request.mode not in self.modes:
            raise InvalidRequestError(
                f"{self.name} cannot do {request.mode} (it can do: {', '.join(self.modes)})",
                field=names.get("mode", "mode"),
            )
        if request.init_audio is not None:
            self._check_source(request, names)
        # The start must leave room for at least one latent frame of audio.
        last_start = window - self.latent_downsampling / self.sample_rate
        if request.seconds_start < 0 or request.seconds_start > last_start:
            raise InvalidRequestError(
                f"{start_field} must be between 0 and {last_start:.2f} seconds "
                f"for {self.name}, got {request.seconds_start:g}",
                field=start_field,
            )
        if request.seconds_total * self.sample_rate < 1:
            raise InvalidRequestError(
                f"{length_field} must be greater than 0 seconds, got {request.seconds_total:g}",
                field=length_field,
            )
        end = request.seconds_start + request.seconds_total
        if end > window + 1e-6:
            raise InvalidRequestError(
                f"{length_field} must be at most {window - request.seconds_start:.2f} seconds "
                f"for {self.name} (its window is {window:.2f} s; start {request.seconds_start:g}"
                f" + length {request.seconds_total:g} = {end:g})",
                field=length_field,
            )

    def _check_source(self, request: EngineRequest, names: Mapping[str, str]) -> None:
        """Source audio: shaped for the model, as long as the request, regions inside it."""
        shape: tuple[int, ...] = tuple(getattr(request.init_audio, "shape", ()))
        count = round(request.seconds_total * self.sample_rate)
        audio_field = names.get("init_audio", "audio")
        if len(shape) != 2 or shape[0] != self.channels or abs(shape[1] - count) > 1:
            raise InvalidRequestError(
                f"{audio_field} must be {self.channels} channels of {count} samples at "
                f"{self.sample_rate} Hz, got shape {tuple(shape)}",
                field=audio_field,
            )
        if request.seconds_start:
            field = names.get("seconds_start", "seconds_start")
            raise InvalidRequestError(
                f"{field} cannot be used with source audio (the source starts at 0)", field=field
            )
        level_field = names.get("init_noise_level", "init_noise_level")
        if not 0 <= request.init_noise_level <= 1:
            raise InvalidRequestError(
                f"{level_field} must be between 0 and 1, got {request.init_noise_level:g}",
                field=level_field,
            )
        region_field = names.get("inpaint_regions", "inpaint_regions")
        for start, end in request.inpaint_regions:
            if not 0 <= start < end <= request.seconds_total + 1e-6:
                raise InvalidRequestError(
                    f"{region_field}: each region must lie within the audio (0 to "
                    f"{request.seconds_total:.2f} s) with start < end, got {start:g}-{end:g}",
                    field=region_field,
                )

    # ------------------------------------------------------------- batching
    def latent_frames(self, request: EngineRequest) -> int:
        """Latent frames a request is denoised over."""
        if self.fixed_window:
            return self.sample_size // self.latent_downsampling
        seconds = request.seconds_start + request.seconds_total + request.padding_seconds
        if self.latent_align:
            samples = int(seconds * self.sample_rate)
            frames = max(1, -(-samples // self.latent_downsampling))
            return -(-frames // self.latent_align) * self.latent_align
        return max(1, math.ceil(seconds * self.sample_rate / self.latent_downsampling))

    def level(self, request: EngineRequest) -> str:
        """The output level policy of ``request`` (its own, else the model's)."""
        return request.normalize or self.default_level

    def batch_key(self, request: EngineRequest) -> Hashable:
        """Besides SamplingParams, what two requests must share to run in one batch.

        The mode and the variation strength: the sampling loop starts where the noise level
        says, the same for every item of a batch.
        """
        frames = None if self.fixed_window else self.latent_frames(request)
        if request.mode == TEXT_TO_AUDIO:
            return frames
        return (frames, request.mode, request.init_noise_level)

    def cost_seconds(self, request: EngineRequest) -> float:
        """Seconds of audio the request is denoised over (the coalescer's memory budget)."""
        return self.latent_frames(request) * self.latent_downsampling / self.sample_rate

    def describe(self) -> dict[str, Any]:
        """The public description of what the model can do."""
        return {
            "backend": self.backend,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "max_seconds": round(self.max_seconds, 3),
            "objective": self.objective,
            "steps": self.default_steps,
            "cfg_scale": self.default_cfg_scale,
            "sampler": self.default_sampler,
            "samplers": list(self.samplers),
            "negative_prompt": self.default_negative_prompt,
            "variable_length": not self.fixed_window,
            "modes": list(self.modes),
            "options": sorted(self.options),
            "sampler_kwargs": {k: list(v) for k, v in self.sampler_kwargs},
        }
