"""Audio in, audio out: variations, inpainting and continuation, behind every entry point.

``plan`` checks everything before any model work, cheapest first: the upload's size, the model
and whether it can do the mode, the generation fields (through the text-to-audio planner), then
decodes the source (its length, its content) and fits it to the model. ``run`` goes through the
model's coalescer like text-to-audio: a variation or an inpainting is one engine request; a
continuation is a chain of them (``continuation.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..engine import (
    AUDIO_TO_AUDIO,
    CONTINUATION,
    INPAINTING,
    EngineRequest,
    ModelInfo,
    ProgressCallback,
    model_info,
)
from ..errors import InvalidRequestError
from ..formats import encode_audio
from ..schemas import GenerationParams
from .continuation import extend, plan_windows, window_request
from .generation import AudioGenerator, GeneratedAudio, Plan
from .source_audio import SourceAudio, check_size, conform, decode_audio, fit_window

AUDIO_IN_MODES = (AUDIO_TO_AUDIO, INPAINTING, CONTINUATION)
DEFAULT_NOISE_LEVEL = 0.9
# The shortest clip worth continuing (the join needs some audio to crossfade from).
MIN_CONTEXT_SECONDS = 0.1
# What errors call the audio-in fields (the stand-in's names).
FIELD_NAMES = {
    "init_audio": "audio",
    "init_noise_level": "init_noise_level",
    "inpaint_regions": "inpaint_start_seconds",
    "mode": "mode",
}


@dataclass(frozen=True)
class AudioInParams:
    """One audio-in request besides its source: the mode and the mode's own fields.

    ``params.seconds_total`` is the target length of a continuation (source included) and
    is not used by the other modes, whose output is as long as the source.
    """

    mode: str
    params: GenerationParams
    init_noise_level: float = DEFAULT_NOISE_LEVEL
    regions: tuple[tuple[float, float], ...] = ()
    trim: bool = False

    def to_record(self) -> dict[str, Any]:
        """What a job stores beside its source file."""
        return {
            "mode": self.mode,
            "params": self.params.to_record(),
            "init_noise_level": self.init_noise_level,
            "regions": [list(r) for r in self.regions],
            "trim": self.trim,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AudioInParams:
        return cls(
            mode=str(record["mode"]),
            params=GenerationParams.from_record(record["params"]),
            init_noise_level=float(record["init_noise_level"]),
            regions=tuple((float(a), float(b)) for a, b in record.get("regions") or ()),
            trim=bool(record.get("trim", False)),
        )


@dataclass(frozen=True)
class AudioInPlan:
    """A validated audio-in request: the text-to-audio plan, and the engine request(s)."""

    spec: AudioInParams
    base: Plan
    info: ModelInfo
    source: SourceAudio
    # Continuation: the target length in samples (the chain is planned from it).
    target: int = 0

    @property
    def seed(self) -> int:
        return self.base.seed

    @property
    def windows(self) -> int:
        if self.spec.mode != CONTINUATION:
            return 1
        return len(plan_windows(self.source.audio.shape[-1], self.target, self.window))

    @property
    def window(self) -> int:
        return math.floor(self.info.max_seconds * self.info.sample_rate)

    @property
    def total_steps(self) -> int:
        return self.base.sampling.steps * self.windows


class AudioToAudio:
    """Plans and runs audio-in requests with the text-to-audio pipeline's parts."""

    def __init__(self, generator: AudioGenerator) -> None:
        self.generator = generator
        self.settings = generator.settings
        self.registry = generator.registry

    def check_mode(self, model: str | None, mode: str) -> ModelInfo:
        """The model's description; a 400 naming model and mode if it cannot do ``mode``."""
        if mode not in AUDIO_IN_MODES:
            raise InvalidRequestError(
                f"mode must be one of {', '.join(AUDIO_IN_MODES)}, got {mode!r}", field="mode"
            )
        entry = self.registry.resolve(model)
        info = model_info(entry)
        if mode not in info.modes:
            raise InvalidRequestError(
                f"{entry.name} cannot do {mode} (it can do: {', '.join(info.modes)})",
                field="mode",
            )
        return info

    def plan(self, spec: AudioInParams, data: bytes, field: str = "audio") -> AudioInPlan:
        """Validate ``spec`` and decode ``data`` (the uploaded file). Raises, never loads."""
        check_size(len(data), self.settings.max_upload_mb, field)
        info = self.check_mode(spec.params.model, spec.mode)
        params = spec.params
        names = {**params.field_names, **FIELD_NAMES, "init_audio": field}
        if params.outputs != 1:
            out_field = names.get("outputs", "outputs")
            raise InvalidRequestError(
                f"{out_field} must be 1 for {spec.mode}, got {params.outputs}", field=out_field
            )
        if params.speed != 1.0:
            raise InvalidRequestError(f"speed is not supported for {spec.mode}", field="speed")
        if not 0 <= spec.init_noise_level <= 1:
            raise InvalidRequestError(
                f"init_noise_level must be between 0 and 1, got {spec.init_noise_level:g}",
                field="init_noise_level",
            )
        target_field = names.get("seconds_total", "seconds_total")
        if spec.mode == CONTINUATION:
            if params.seconds_total is None:
                raise InvalidRequestError(
                    f"{target_field} (the length to extend the audio to) is required",
                    field=target_field,
                )
            if params.seconds_total > self.settings.max_duration:
                raise InvalidRequestError(
                    f"{target_field} must be at most {self.settings.max_duration:g} seconds "
                    f"(server limit), got {params.seconds_total:g}",
                    field=target_field,
                )
        if spec.mode == INPAINTING and not spec.regions:
            raise InvalidRequestError(
                "inpaint_start_seconds and inpaint_end_seconds are required for inpainting",
                field="inpaint_start_seconds",
            )
        decoded = decode_audio(data, max_seconds=self.settings.max_upload_seconds, field=field)
        source = conform(decoded, info.sample_rate, info.channels, field)
        if spec.mode == CONTINUATION:
            return self._plan_continuation(spec, info, source, names)
        source = fit_window(source, info.max_seconds, trim=spec.trim, model=info.name, field=field)
        seconds = source.audio.shape[-1] / info.sample_rate
        # The model's own duration padding (SA3's reference pads variations and inpainting
        # as it pads text-to-audio; the source is zero past its end).
        base = self.generator.plan(dataclasses.replace(params, seconds_total=seconds))
        request = dataclasses.replace(
            base.request,
            seconds_start=0.0,
            seconds_total=seconds,
            init_audio=source.audio,
            init_noise_level=spec.init_noise_level if spec.mode == AUDIO_TO_AUDIO else 1.0,
            inpaint_regions=spec.regions if spec.mode == INPAINTING else (),
        )
        info.check_request(request, names)
        return AudioInPlan(spec, dataclasses.replace(base, requests=(request,)), info, source)

    def _plan_continuation(
        self,
        spec: AudioInParams,
        info: ModelInfo,
        source: SourceAudio,
        names: dict[str, str],
    ) -> AudioInPlan:
        params = spec.params
        assert params.seconds_total is not None
        target_field = names.get("seconds_total", "seconds_total")
        if params.seconds_total <= source.seconds:
            raise InvalidRequestError(
                f"{target_field} must be longer than the audio ({source.seconds:.2f} s), "
                f"got {params.seconds_total:g}",
                field=target_field,
            )
        if source.seconds < MIN_CONTEXT_SECONDS:
            raise InvalidRequestError(
                f"{names['init_audio']} must be at least {MIN_CONTEXT_SECONDS:g} s long to "
                f"continue it, got {source.seconds:.3f} s",
                field=names["init_audio"],
            )
        sr = info.sample_rate
        target = round(params.seconds_total * sr)
        window = math.floor(info.max_seconds * sr)
        first = plan_windows(source.audio.shape[-1], target, window)[0]
        base = self.generator.plan(
            dataclasses.replace(params, seconds_total=first.total / sr, padding_seconds=0.0)
        )
        plan = AudioInPlan(spec, base, info, source, target)
        # The first window's request, checked now (each later one has the same shape).
        info.check_request(window_request(base.request, source.audio, first, sr, 0), names)
        return plan

    def run(self, plan: AudioInPlan, progress: ProgressCallback | None = None) -> GeneratedAudio:
        """Generate and encode a planned audio-in request."""
        if plan.spec.mode != CONTINUATION:
            return self.generator.run(plan.base, progress)
        info, base = plan.info, plan.base
        with self.registry.use(base.entry.name) as loaded:

            def generate(request: EngineRequest, report: ProgressCallback | None) -> Any:
                return loaded.batcher.run(request, base.sampling, report).audio

            audio, _ = extend(
                plan.source.audio,
                plan.target,
                plan.window,
                dataclasses.replace(base.request, seconds_start=0.0, padding_seconds=0.0),
                info.sample_rate,
                generate,
                progress,
                base.sampling.steps,
            )
        encoded = encode_audio(audio, info.sample_rate, base.params.response_format)
        return GeneratedAudio(
            outputs=(encoded,), seeds=(plan.seed,), model=base.entry.name, batch_size=1
        )

    def generate(
        self, spec: AudioInParams, data: bytes, progress: ProgressCallback | None = None
    ) -> GeneratedAudio:
        return self.run(self.plan(spec, data), progress)
