"""Post-processing of generated audio: float32 numpy arrays shaped (channels, samples)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .errors import GenerationError, InvalidRequestError

FloatAudio = npt.NDArray[np.float32]

DEFAULT_PEAK = 0.98
MIN_SPEED = 0.25
MAX_SPEED = 4.0
# Below this many samples Rubber Band has nothing to work with (and pedalboard cannot tell
# channels from samples in a (2, 2) array).
MIN_STRETCH_SAMPLES = 256


def _peak(audio: FloatAudio) -> float:
    return float(np.max(np.abs(audio))) if audio.size else 0.0


def _scale(audio: FloatAudio, factor: float) -> FloatAudio:
    # In float64, so a sample scaled onto a float32 target lands on it, not one ulp above.
    return np.multiply(audio, factor, dtype=np.float64).astype(np.float32)


def peak_normalize(audio: FloatAudio, peak: float = DEFAULT_PEAK) -> FloatAudio:
    """Scale ``audio`` so its largest absolute sample is ``peak``; silence stays silence.

    Raises GenerationError for NaN or infinite samples: nothing sensible can be scaled from them.
    """
    if not 0.0 < peak <= 1.0:
        raise ValueError(f"peak must be in (0, 1], got {peak}")
    if not np.isfinite(audio).all():
        raise GenerationError("The model produced non-finite samples (NaN or infinity).")
    current = _peak(audio)
    if current == 0.0:
        return np.zeros_like(audio, dtype=np.float32)
    return _scale(audio, peak / current)


# Output level policies (a request's ``normalize``): "peak" scales every output to
# DEFAULT_PEAK (Stable Audio Open's model card); "attenuate" keeps the model's level and only
# divides by the peak when it is above full scale, never boosting (Stable Audio 3's reference
# output policy); "clamp" keeps the level and clips to [-1, 1] (what the reference generate()
# returns before any policy).
LEVELS = ("peak", "attenuate", "clamp")


def set_level(audio: FloatAudio, policy: str) -> FloatAudio:
    """``audio`` at the output level ``policy`` names (one of LEVELS)."""
    if policy == "peak":
        return peak_normalize(audio)
    if policy not in LEVELS:
        raise ValueError(f"normalize must be one of {', '.join(LEVELS)}, got {policy!r}")
    if not np.isfinite(audio).all():
        raise GenerationError("The model produced non-finite samples (NaN or infinity).")
    if policy == "clamp":
        return np.clip(audio, -1.0, 1.0).astype(np.float32)
    current = _peak(audio)
    return _scale(audio, 1.0 / current) if current > 1.0 else audio.astype(np.float32)


def time_stretch(audio: FloatAudio, sample_rate: int, speed: float) -> FloatAudio:
    """Play ``audio`` ``speed`` times faster without changing its pitch (Rubber Band).

    The result has exactly ``max(1, round(samples / speed))`` samples (never none: every
    format needs one) and never peaks above the input (nor above full scale). Speed 1.0
    returns ``audio`` itself, unprocessed. Clips shorter than ``MIN_STRETCH_SAMPLES`` (a few
    milliseconds: nothing has a pitch there) are resampled linearly instead.
    """
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidRequestError(
            f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}", field="speed"
        )
    if speed == 1.0:
        return audio
    from pedalboard import time_stretch as rubberband_stretch

    if audio.shape[-1] == 0:
        return np.zeros(audio.shape, dtype=np.float32)
    length = max(1, round(audio.shape[-1] / speed))
    if audio.shape[-1] < MIN_STRETCH_SAMPLES:
        return _interpolate(audio, length)
    stretched: FloatAudio = rubberband_stretch(
        np.ascontiguousarray(audio, dtype=np.float32), float(sample_rate), stretch_factor=speed
    )
    # Rubber Band rounds the output length its own way (off by one at half samples).
    if stretched.shape[-1] >= length:
        stretched = stretched[..., :length]
    else:
        missing = length - stretched.shape[-1]
        stretched = np.pad(stretched, [(0, 0)] * (stretched.ndim - 1) + [(0, missing)])
    # The phase vocoder can build peaks higher than any in the input; a normalised input must
    # not come back clipping.
    ceiling = min(_peak(audio), 1.0)
    overshoot = _peak(stretched)
    if overshoot > ceiling:
        stretched = _scale(stretched, ceiling / overshoot)
    return np.ascontiguousarray(stretched, dtype=np.float32)


def _interpolate(audio: FloatAudio, length: int) -> FloatAudio:
    """``audio`` linearly resampled to ``length`` samples per channel (no new peaks)."""
    source = np.linspace(0.0, 1.0, audio.shape[-1]) if audio.shape[-1] > 1 else np.zeros(1)
    target = np.linspace(0.0, 1.0, length) if length > 1 else np.zeros(1)
    flat = audio.reshape(-1, audio.shape[-1])
    out = np.stack([np.interp(target, source, channel) for channel in flat])
    return np.ascontiguousarray(out.reshape(*audio.shape[:-1], length), dtype=np.float32)


def trim(
    audio: FloatAudio, sample_rate: int, start_seconds: float, length_seconds: float
) -> FloatAudio:
    """The samples ``[round(start * rate), round(start * rate) + round(length * rate))``, as a view.

    Raises ValueError when that range is negative or runs past the end of ``audio``.
    """
    start = round(start_seconds * sample_rate)
    count = round(length_seconds * sample_rate)
    if start < 0 or count < 0 or start + count > audio.shape[-1]:
        raise ValueError(
            f"Cannot take {length_seconds} s from {start_seconds} s out of "
            f"{audio.shape[-1] / sample_rate} s of audio"
        )
    return audio[..., start : start + count]
