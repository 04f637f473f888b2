"""The engine contract: what the registry, the coalescer, the pipeline and the benchmarks use.

An engine is one loaded model on one device. It generates a batch of requests that share the
batch-wide ``SamplingParams``; each request keeps its own prompt, length, seed and LoRAs and
gets the audio it would get alone. Nothing HTTP lives behind this contract.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..audio import FloatAudio
from .info import ModelInfo
from .precision import CpuOptions
from .request import (
    AUDIO_TO_AUDIO,
    CONTINUATION,
    INPAINTING,
    MODES,
    TEXT_TO_AUDIO,
    EngineRequest,
    ProgressCallback,
    SamplingParams,
    Scalar,
)

__all__ = [
    "AUDIO_TO_AUDIO",
    "CONTINUATION",
    "INPAINTING",
    "MODES",
    "TEXT_TO_AUDIO",
    "AudioEngine",
    "EngineRequest",
    "EngineStats",
    "LoadOptions",
    "ModelInfo",
    "ProgressCallback",
    "SamplingParams",
    "Scalar",
]


@dataclass(frozen=True)
class LoadOptions:
    """How a family loads a store entry (every family takes the same options).

    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``. ``dtype`` ``auto`` takes the
    entry's ``dtype`` metadata if it has one, else half precision on CUDA when ``half``. With
    ``check``, a short generation proves a reduced precision gives finite audio, else the next
    one is tried. ``compile`` compiles the diffusion transformer (warmed up by that check).
    ``threads`` > 0 sets torch's intra-op thread count. ``cpu``: the CPU fast path.
    """

    device: str = "auto"
    half: bool = True
    dtype: str = "auto"
    compile: bool = False
    check: bool = True
    threads: int = 0
    cpu: CpuOptions = field(default_factory=CpuOptions)
    # How LoRAs are applied (``engine.lora.apply.MODES``) and the merged weights' cache, MiB.
    lora_apply: str = "auto"
    lora_cache_mb: int = 512


@dataclass
class EngineStats:
    batches: int = 0
    items: int = 0
    seconds: float = 0.0
    last_batch_sizes: list[int] = field(default_factory=list)

    def record(self, items: int, seconds: float) -> None:
        self.batches += 1
        self.items += items
        self.seconds += seconds
        self.last_batch_sizes = [*self.last_batch_sizes[-99:], items]


class LoraBatching(Protocol):
    def batch_key(self, loras: tuple[tuple[str, float], ...]) -> Hashable:
        """What of a request's LoRA set its batch must share (part of the coalescer's key)."""
        ...


@runtime_checkable
class AudioEngine(Protocol):
    """One loaded model: describe it, generate batches, free it."""

    info: ModelInfo
    device: str
    stats: EngineStats
    # Requests' LoRAs on this engine (``engine.lora.apply.EngineLoras``).
    loras: LoraBatching

    @property
    def dtype_name(self) -> str:
        """The precision the weights run in: float32, float16 or bfloat16."""
        ...

    def generate(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[FloatAudio]:
        """One diffusion batch: float32 (channels, samples) per request, exactly its length,
        at the request's output level (``ModelInfo.level``; never above full scale)."""
        ...

    def unload(self) -> None:
        """Drop the weights; the engine is unusable afterwards."""
        ...

    def nbytes(self) -> int:
        """Bytes of parameters, buffers and cached LoRA weights held on the device."""
        ...
