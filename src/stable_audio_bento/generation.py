"""The one generation pipeline behind every entry point (sync API, task API, jobs, web page).

``plan`` resolves and validates a request against the model's store entry without loading
weights (so a job is rejected at submit time, not minutes later); ``run`` goes through the
model's coalescer, then time-stretches and encodes in the caller's thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from .audio import time_stretch
from .engine import EngineRequest, ProgressCallback, SamplingParams, model_info
from .errors import InvalidRequestError
from .formats import EncodedAudio, encode_audio
from .modelstore import ModelEntry
from .registry import ModelRegistry
from .schemas import GenerationParams, resolve_seed
from .settings import Settings


@dataclass(frozen=True)
class Plan:
    """A validated generation: which model, what to ask the engine, how to deliver it."""

    entry: ModelEntry
    request: EngineRequest
    sampling: SamplingParams
    params: GenerationParams

    @property
    def seed(self) -> int:
        return self.request.seed


@dataclass(frozen=True)
class GeneratedAudio:
    encoded: EncodedAudio
    seed: int
    model: str
    batch_size: int = 1

    def headers(self) -> dict[str, str]:
        """Response headers that say what the body is (and how many requests shared its batch)."""
        return {
            "X-Seed": str(self.seed),
            "X-Model": self.model,
            "X-Sample-Rate": str(self.encoded.sample_rate),
            "X-Channels": str(self.encoded.channels),
            "X-Audio-Duration": f"{self.encoded.duration:.6f}",
            "X-Batch-Size": str(self.batch_size),
        }


class AudioGenerator:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry

    def plan(self, params: GenerationParams) -> Plan:
        """Resolve the model, fill its defaults, check every limit. Raises, never loads."""
        names = params.field_names
        entry = self.registry.resolve(params.model)
        info = model_info(entry)
        cap = self.settings.max_duration
        if params.seconds_total is None:
            length = min(info.window_seconds - params.seconds_start, cap)
        else:
            length = params.seconds_total
            if length > cap:
                field = names.get("seconds_total", "seconds_total")
                raise InvalidRequestError(
                    f"{field} must be at most {cap:g} seconds (server limit), got {length:g}",
                    field=field,
                )
        request = EngineRequest(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            seconds_start=params.seconds_start,
            seconds_total=max(length, 0.0),
            seed=resolve_seed(params.seed),
        )
        info.check_request(request, names)
        sampling = info.sampling(
            params.steps,
            params.cfg_scale,
            params.sampler,
            max_steps=self.settings.max_steps,
            names=names,
        )
        return Plan(entry=entry, request=request, sampling=sampling, params=params)

    def run(self, plan: Plan, progress: ProgressCallback | None = None) -> GeneratedAudio:
        """Generate, stretch and encode one planned request."""
        with self.registry.use(plan.entry.name) as loaded:
            batched = loaded.batcher.run(plan.request, plan.sampling, progress)
            sample_rate = loaded.engine.info.sample_rate
        audio = batched.audio
        if plan.params.speed != 1.0:
            audio = time_stretch(audio, sample_rate, plan.params.speed)
        encoded = encode_audio(audio, sample_rate, plan.params.response_format)
        return GeneratedAudio(
            encoded=encoded, seed=plan.seed, model=plan.entry.name, batch_size=batched.batch_size
        )

    def generate(
        self, params: GenerationParams, progress: ProgressCallback | None = None
    ) -> GeneratedAudio:
        return self.run(self.plan(params), progress)
