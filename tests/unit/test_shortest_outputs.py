"""The shortest outputs: one sample, a few samples, speed 4 on a tiny length, every format.

Each file is checked by an independent decoder (ffprobe / ffmpeg), as a client would open it.
"""

from __future__ import annotations

import numpy as np
import pytest

from stable_audio_bento.audio import MAX_SPEED, MIN_SPEED, time_stretch
from stable_audio_bento.formats import FORMATS, encode_audio
from tests.probe import ffprobe

RATE = 44100
TINY = [1, 2, 3, 255, 700, 1023]


def tone(channels: int, samples: int) -> np.ndarray:
    t = np.arange(samples) / RATE
    audio = 0.5 * np.sin(2 * np.pi * 440 * t, dtype=np.float64)
    return np.tile(audio, (channels, 1)).astype(np.float32)


@pytest.mark.parametrize("samples", TINY)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_tiny_audio_encodes_and_decodes_in_every_format(
    fmt: str, channels: int, samples: int
) -> None:
    encoded = encode_audio(tone(channels, samples), RATE, fmt)
    rate = FORMATS[fmt].sample_rate or RATE
    assert encoded.duration == pytest.approx(samples / RATE, abs=1.5 / rate)
    probe = ffprobe(encoded.data, pcm=(rate, channels) if fmt == "pcm" else None)
    assert (probe.sample_rate, probe.channels) == (rate, channels)
    assert len(probe.samples) >= 1
    assert np.isfinite(probe.samples).all() and np.abs(probe.samples).max() < 1.0


@pytest.mark.parametrize("samples", [1, 2, 3, 4, 5, 300])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("speed", [MIN_SPEED, 0.9, 3.9, MAX_SPEED])
def test_stretching_a_tiny_clip_keeps_at_least_one_sample(
    speed: float, channels: int, samples: int
) -> None:
    audio = tone(channels, samples)
    stretched = time_stretch(audio, RATE, speed)
    assert stretched.shape == (channels, max(1, round(samples / speed)))
    assert stretched.dtype == np.float32 and stretched.flags.c_contiguous
    assert np.abs(stretched).max() <= np.abs(audio).max() + 1e-6
    encode_audio(stretched, RATE, "wav")  # something every format can encode
