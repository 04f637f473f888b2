"""Continuation: extend a clip to a target length, window after window.

Each window is an inpainting request to the engine: the end of the audio so far (the context)
is kept, the span after it is generated in its light. A target past the model's window is
reached by chaining windows, each taking the end of the previous result as its context (at
least half a window of new audio each time, so the chain is short). The join is seam-free: the
region starts ``CROSSFADE_SECONDS`` before the end of the context, where the engine crossfades
from the kept audio to the new, and that crossfade replaces the last few milliseconds of the
audio so far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..audio import FloatAudio
from ..engine import EngineRequest, ProgressCallback
from ..engine.splice import CROSSFADE_SECONDS


@dataclass(frozen=True)
class Window:
    """One engine request of the chain, in samples: ``context`` kept, ``new`` generated."""

    context: int
    new: int

    @property
    def total(self) -> int:
        return self.context + self.new


def plan_windows(have: int, target: int, window: int) -> list[Window]:
    """The chain of windows that takes ``have`` samples to ``target``, each at most ``window``.

    Each window keeps as much context as leaves room for what is still missing, and never
    less than half a window (or all there is).
    """
    windows: list[Window] = []
    half = window // 2
    while have < target:
        missing = target - have
        context = min(have, max(window - missing, half))
        new = min(missing, window - context)
        windows.append(Window(context, new))
        have += new
    return windows


def window_request(
    base: EngineRequest, audio: FloatAudio, window: Window, sample_rate: int, index: int
) -> EngineRequest:
    """The engine request of one window: the context then silence, the region after it."""
    context = audio[:, audio.shape[-1] - window.context :]
    source = np.concatenate([context, np.zeros((audio.shape[0], window.new), np.float32)], axis=1)
    fade = min(round(CROSSFADE_SECONDS * sample_rate), window.context // 2)
    return dataclasses.replace(
        base,
        seed=(base.seed + index) % 2**32,
        seconds_total=window.total / sample_rate,
        init_audio=source,
        init_noise_level=1.0,
        inpaint_regions=(((window.context - fade) / sample_rate, window.total / sample_rate),),
    )


def extend(
    source: FloatAudio,
    target: int,
    window: int,
    base: EngineRequest,
    sample_rate: int,
    generate: Callable[[EngineRequest, ProgressCallback | None], FloatAudio],
    progress: ProgressCallback | None = None,
    steps: int = 1,
) -> tuple[FloatAudio, int]:
    """``source`` extended to ``target`` samples; also how many windows that took.

    ``generate`` runs one engine request (through the coalescer). Window k gets seed
    ``base.seed + k``. ``progress`` counts the steps of the whole chain.
    """
    windows = plan_windows(source.shape[-1], target, window)
    audio = np.ascontiguousarray(source, dtype=np.float32)
    for k, part in enumerate(windows):
        request = window_request(base, audio, part, sample_rate, k)
        offset = k * steps

        def report(step: int, total: int, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + step, len(windows) * steps)

        out = generate(request, report)
        fade = round((part.context / sample_rate - request.inpaint_regions[0][0]) * sample_rate)
        # The crossfade (inside the output's region) replaces the last `fade` samples so far.
        kept = audio[:, : audio.shape[-1] - fade]
        audio = np.concatenate([kept, out[:, part.context - fade :]], axis=1)
    return audio[:, :target], len(windows)
