"""What an engine is asked: one request of a batch, the batch's sampling settings, the modes.

Plain values with no engine behind them, so that the model description (``info``), the
contract and the pipeline share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    # Output level (``audio.LEVELS``); None: the model family's own (ModelInfo.default_level).
    normalize: str | None = None
    # LoRAs as (store tag, strength), in stacking order (``engine.lora.apply``).
    loras: tuple[tuple[str, float], ...] = ()

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
