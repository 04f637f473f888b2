"""The engine contract: what the registry, the coalescer, the pipeline and the benchmarks use.

An engine is one loaded model on one device. It generates a batch of requests that share the
batch-wide ``SamplingParams``; each request keeps its own prompt, length and seed and gets the
audio it would get alone. Nothing HTTP lives behind this contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..audio import FloatAudio

if TYPE_CHECKING:
    from .info import ModelInfo

ProgressCallback = Callable[[int, int], None]
Scalar = float | int | bool | str

TEXT_TO_AUDIO = "text-to-audio"
AUDIO_TO_AUDIO = "audio-to-audio"
INPAINTING = "inpainting"
CONTINUATION = "continuation"
MODES = (TEXT_TO_AUDIO, AUDIO_TO_AUDIO, INPAINTING, CONTINUATION)


@dataclass(frozen=True)
class EngineRequest:
    """One item of a batch. ``seconds_total`` is the length of audio returned.

    ``padding_seconds`` is generated past the end and cut off (models that condition on the
    length give a cleaner ending when they are asked for a little more than is kept).

    Audio in: ``init_audio`` is float32 (channels, samples) at the model's rate and channel
    count, ``seconds_total`` long. Without ``inpaint_regions`` it is a variation: sampling
    starts from the source noised to ``init_noise_level`` (1 = pure noise, as text-to-audio).
    With regions (seconds, start < end) those spans are generated anew and the rest is kept
    from the source (continuation is inpainting of the span past the given clip).
    """

    prompt: str
    seed: int
    seconds_total: float
    seconds_start: float = 0.0
    negative_prompt: str | None = None
    padding_seconds: float = 0.0
    init_audio: Any = field(default=None, compare=False, repr=False)
    init_noise_level: float = 1.0
    inpaint_regions: tuple[tuple[float, float], ...] = ()

    @property
    def mode(self) -> str:
        if self.init_audio is None:
            return TEXT_TO_AUDIO
        return INPAINTING if self.inpaint_regions else AUDIO_TO_AUDIO


@dataclass(frozen=True)
class SamplingParams:
    """Settings shared by every item of one diffusion batch (hashable: the coalescer's key)."""

    steps: int
    cfg_scale: float
    sampler: str
    # Adaptive projected guidance; None: plain classifier-free guidance.
    apg_scale: float | None = None
    # Extra sampler settings, validated by the model's ModelInfo.
    sampler_kwargs: tuple[tuple[str, Scalar], ...] = ()
    # LoRAs as (store tag, strength), in stacking order (``lora.apply``).
    loras: tuple[tuple[str, float], ...] = ()


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


@runtime_checkable
class AudioEngine(Protocol):
    """One loaded model: describe it, generate batches, free it."""

    info: ModelInfo
    device: str
    stats: EngineStats

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
        peak-normalised (never clipping)."""
        ...

    def unload(self) -> None:
        """Drop the weights; the engine is unusable afterwards."""
        ...

    def nbytes(self) -> int:
        """Bytes of parameters and buffers held on the device."""
        ...
