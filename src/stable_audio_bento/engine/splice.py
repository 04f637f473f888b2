"""Audio in, shared by the backends: which latent frames are kept, and the splice back to audio.

Inpainting keeps the source outside the regions. In the latent loop the kept frames follow the
noised source at every step (``keep_mask``); after decoding, the samples outside the regions are
the source's own (``splice``), so what the client did not ask to change comes back exactly as
sent, joined to the new audio by short crossfades that lie inside the regions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..audio import DEFAULT_PEAK, FloatAudio
from .contract import EngineRequest

# Crossfade at each edge of a region, inside it (seconds).
CROSSFADE_SECONDS = 0.02
# The generated part is brought to the source's level, within these bounds.
GAIN_LIMITS = (0.05, 20.0)


def keep_mask(request: EngineRequest, sample_rate: int, ratio: int, frames: int) -> Any:
    """float (1, frames): 1 where the latent follows the source, 0 where it is generated.

    A frame touched by a region is generated; frames past the source (the rest of a fixed
    window) are free too. Variations keep nothing (all zeros).
    """
    import torch

    mask = torch.zeros((1, frames))
    if not request.inpaint_regions or request.init_audio is None:
        return mask
    source_frames = min(frames, math.ceil(request.init_audio.shape[-1] / ratio))
    mask[:, :source_frames] = 1.0
    for start, end in request.inpaint_regions:
        f0 = max(0, math.floor(start * sample_rate / ratio))
        f1 = min(frames, math.ceil(end * sample_rate / ratio))
        mask[:, f0:f1] = 0.0
    return mask


def region_weights(request: EngineRequest, sample_rate: int, count: int) -> FloatAudio:
    """float32 (count,): 1 inside the regions (generated), 0 outside, ramps inside the edges."""
    weights = np.zeros(count, np.float32)
    ramp = max(1, round(CROSSFADE_SECONDS * sample_rate))
    for start, end in request.inpaint_regions:
        s0 = max(0, round(start * sample_rate))
        s1 = min(count, round(end * sample_rate))
        if s1 <= s0:
            continue
        span = np.ones(s1 - s0, np.float32)
        width = min(ramp, (s1 - s0) // 2)
        if width and s0 > 0:  # no fade in at the very start of the audio
            span[:width] = np.linspace(0, 1, width + 2, dtype=np.float32)[1:-1]
        if width and s1 < count:  # none at the very end (continuation)
            span[-width:] = np.minimum(
                span[-width:], np.linspace(1, 0, width + 2, dtype=np.float32)[1:-1]
            )
        weights[s0:s1] = np.maximum(weights[s0:s1], span)
    return weights


def splice(generated: FloatAudio, request: EngineRequest, sample_rate: int) -> FloatAudio:
    """The source outside the regions, ``generated`` (at the source's level) inside them.

    The gain that brings ``generated`` to the source's level is measured where both cover the
    kept audio (a decoder reproduces the source there), and capped so the new audio stays
    under full scale. The kept samples are the source's exactly, unless the source itself
    clips (then everything is scaled under full scale).
    """
    source = np.asarray(request.init_audio, dtype=np.float32)
    count = generated.shape[-1]
    if source.shape[-1] < count:
        source = np.pad(source, ((0, 0), (0, count - source.shape[-1])))
    source = source[:, :count]
    weights = region_weights(request, sample_rate, count)
    kept = weights == 0
    gain = 1.0
    if kept.any():
        ours = float(np.sqrt(np.mean(generated[:, kept] ** 2)))
        theirs = float(np.sqrt(np.mean(source[:, kept] ** 2)))
        if ours > 0 and theirs > 0:
            gain = float(np.clip(theirs / ours, *GAIN_LIMITS))
    # The new audio never peaks past full scale (less 2 %): a crest the source's level would
    # push over is turned down, in the new part only.
    new_peak = float(np.max(np.abs(generated[:, weights > 0]))) if (weights > 0).any() else 0.0
    if new_peak > 0:
        gain = DEFAULT_PEAK / new_peak if not kept.any() else min(gain, DEFAULT_PEAK / new_peak)
    out: FloatAudio = (source * (1 - weights) + generated * (gain * weights)).astype(np.float32)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 1.0:
        out = out * (DEFAULT_PEAK / peak)
    return np.ascontiguousarray(out, dtype=np.float32)


def v_sigma(level: float, sigma_max: float) -> float:
    """A variation strength 0-1 as a v-objective starting sigma: tan(level * pi / 2).

    In v-diffusion's parametrisation the signal is cos(t pi/2) and the noise sin(t pi/2), so this
    is the noise-to-signal ratio at t = level; 1 is pure noise (``sigma_max``, text-to-audio).
    """
    if level >= 1.0:
        return sigma_max
    return float(min(sigma_max, max(1e-3, math.tan(level * math.pi / 2))))
