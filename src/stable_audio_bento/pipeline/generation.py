"""The one generation pipeline behind every entry point (sync API, task API, jobs, web page).

``plan`` resolves and validates a request against the model's store entry without loading
weights (so a job is rejected at submit time, not minutes later); ``run`` goes through the
model's coalescer, then time-stretches and encodes in the caller's thread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..archive import ZIP_EXTENSION, ZIP_MEDIA_TYPE, zip_outputs
from ..audio import time_stretch
from ..engine import EngineRequest, ProgressCallback, SamplingParams, model_info
from ..engine.lora.stored import load_adapter
from ..errors import InvalidRequestError
from ..formats import EncodedAudio, encode_audio
from ..limits import DEFAULT_DURATION_PADDING
from ..lora.store import LoraCatalog
from ..schemas import GenerationParams, output_seeds, resolve_seed
from ..settings import Settings
from ..store.catalog import ModelEntry
from .peer_fields import drop_inapplicable
from .registry import ModelRegistry


@dataclass(frozen=True)
class Plan:
    """A validated generation: which model, what to ask the engine, how to deliver it.

    One engine request per output (``batch_size`` of the stable-audio-api routes), with the
    seeds ``seed``, ``seed + 1``, ...; they go through the model's coalescer together.
    """

    entry: ModelEntry
    requests: tuple[EngineRequest, ...]
    sampling: SamplingParams
    params: GenerationParams
    # Peer fields the model cannot honour, sent at their defaults: ignored (``peer_fields``).
    ignored: tuple[str, ...] = ()

    @property
    def request(self) -> EngineRequest:
        return self.requests[0]

    @property
    def seed(self) -> int:
        return self.requests[0].seed

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.requests]


@dataclass(frozen=True)
class GeneratedAudio:
    """The encoded outputs of one request (one file, or several sent as a zip)."""

    outputs: tuple[EncodedAudio, ...]
    seeds: tuple[int, ...]
    model: str
    batch_size: int = 1
    ignored: tuple[str, ...] = ()

    @property
    def encoded(self) -> EncodedAudio:
        return self.outputs[0]

    @property
    def seed(self) -> int:
        return self.seeds[0]

    @property
    def count(self) -> int:
        return len(self.outputs)

    @property
    def media_type(self) -> str:
        return ZIP_MEDIA_TYPE if self.count > 1 else self.encoded.media_type

    @property
    def extension(self) -> str:
        return ZIP_EXTENSION if self.count > 1 else self.encoded.format.extension

    def body(self) -> bytes:
        """The response body: the file, or a zip of ``01.<ext>``, ``02.<ext>``, ..."""
        if self.count == 1:
            return self.encoded.data
        return zip_outputs([o.data for o in self.outputs], self.encoded.format.extension)

    def headers(self) -> dict[str, str]:
        """Response headers that say what the body is (and how many requests shared its batch).

        With several outputs, ``X-Seed`` is the first one's and ``X-Seeds`` lists them all
        (each output's audio also has the same rate, channels and duration).
        """
        return {
            "X-Seed": str(self.seed),
            "X-Seeds": ",".join(str(s) for s in self.seeds),
            "X-Model": self.model,
            "X-Sample-Rate": str(self.encoded.sample_rate),
            "X-Channels": str(self.encoded.channels),
            "X-Audio-Duration": f"{self.encoded.duration:.6f}",
            "X-Output-Count": str(self.count),
            "X-Batch-Size": str(self.batch_size),
            **({"X-Ignored-Fields": ",".join(self.ignored)} if self.ignored else {}),
        }


class AudioGenerator:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.loras = LoraCatalog()

    def plan(self, params: GenerationParams) -> Plan:
        """Resolve the model, fill its defaults, check every limit. Raises, never loads."""
        names = params.field_names
        entry = self.registry.resolve(params.model)
        info = model_info(entry)
        params, ignored = drop_inapplicable(params, info)
        cap = self.settings.max_duration
        if not 1 <= params.outputs <= self.settings.max_outputs:
            field = names.get("outputs", "outputs")
            raise InvalidRequestError(
                f"{field} must be between 1 and {self.settings.max_outputs} (server limit), "
                f"got {params.outputs}",
                field=field,
            )
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
        length = max(length, 0.0)
        padding = params.padding_seconds
        if padding is None:
            # The peer pads the models whose latent is as long as the request (Stable Audio 3);
            # a fixed window's reference (Stable Audio Open) is told the exact length.
            honours = "duration_padding" in info.options and not info.fixed_window
            padding = DEFAULT_DURATION_PADDING if honours else 0.0
        if padding and "duration_padding" in info.options:
            # Padding never takes a request past what the model was trained to generate.
            padding = min(padding, max(0.0, info.max_seconds - params.seconds_start - length))
        base = EngineRequest(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            seconds_start=params.seconds_start,
            seconds_total=length,
            seed=resolve_seed(params.seed),
            padding_seconds=padding,
            normalize=params.normalize,
            loras=tuple(
                (self.loras.resolve(name, entry).tag, strength) for name, strength in params.loras
            ),
        )
        info.check_request(base, names)
        sampling = info.sampling(
            params.steps,
            params.cfg_scale,
            params.sampler,
            max_steps=self.settings.max_steps,
            names=names,
            apg_scale=params.apg_scale,
            sampler_kwargs=dict(params.sampler_kwargs),
        )
        requests = tuple(
            replace(base, seed=seed) for seed in output_seeds(base.seed, params.outputs)
        )
        return Plan(entry, requests, sampling, params, ignored)

    def run(self, plan: Plan, progress: ProgressCallback | None = None) -> GeneratedAudio:
        """Generate, stretch and encode a planned request's outputs.

        Every output is queued at once, so the coalescer batches them together (and with
        whatever else is compatible); ``progress`` follows the first.
        """
        for tag, _ in plan.requests[0].loras:
            load_adapter(tag)  # a LoRA that cannot be read fails this request before it queues
        with self.registry.use(plan.entry.name) as loaded:
            futures = [
                loaded.batcher.submit(request, plan.sampling, progress if i == 0 else None)
                for i, request in enumerate(plan.requests)
            ]
            batched = [future.result() for future in futures]
            sample_rate = loaded.engine.info.sample_rate
        outputs = []
        for item in batched:
            audio = item.audio
            if plan.params.speed != 1.0:
                audio = time_stretch(audio, sample_rate, plan.params.speed)
            outputs.append(encode_audio(audio, sample_rate, plan.params.response_format))
        return GeneratedAudio(
            outputs=tuple(outputs),
            seeds=tuple(plan.seeds),
            model=plan.entry.name,
            batch_size=max(item.batch_size for item in batched),
            ignored=plan.ignored,
        )

    def generate(
        self, params: GenerationParams, progress: ProgressCallback | None = None
    ) -> GeneratedAudio:
        return self.run(self.plan(params), progress)
