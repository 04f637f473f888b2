"""Post-processing: peak normalisation, pitch-preserving time stretch, exact trimming."""

from __future__ import annotations

import numpy as np
import pytest

from stable_audio_bento.audio import peak_normalize, time_stretch, trim
from stable_audio_bento.errors import GenerationError, InvalidRequestError

RATE = 44100


def tone(seconds: float = 1.5, channels: int = 2, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.repeat(amplitude * np.sin(2 * np.pi * 440 * t)[None], channels, axis=0).astype(
        np.float32
    )


def dominant_frequency(channel: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(channel * np.hanning(channel.size)))
    return float(np.argmax(spectrum) * RATE / channel.size)


@pytest.mark.parametrize("peak", [0.98, 0.5, 1.0])
def test_peak_normalize_hits_the_peak_exactly(peak: float) -> None:
    audio = tone(amplitude=0.3)
    audio[1, 100] = -0.7  # the loudest sample is negative and in one channel only
    normalized = peak_normalize(audio, peak)

    assert normalized.dtype == np.float32
    assert np.max(np.abs(normalized)) == np.float32(peak)
    assert normalized[1, 100] == -np.float32(peak)
    np.testing.assert_allclose(normalized, audio * (peak / 0.7), rtol=1e-6)


def test_peak_normalize_defaults_to_the_model_card_peak() -> None:
    assert np.max(np.abs(peak_normalize(tone()))) == np.float32(0.98)


def test_peak_normalize_leaves_the_input_alone() -> None:
    audio = tone()
    before = audio.copy()
    peak_normalize(audio)
    np.testing.assert_array_equal(audio, before)


def test_silence_stays_silence() -> None:
    normalized = peak_normalize(np.zeros((2, 1000), dtype=np.float32))
    assert normalized.shape == (2, 1000)
    assert not np.any(normalized)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_peak_normalize_rejects_non_finite_samples(bad: float) -> None:
    audio = tone()
    audio[0, 10] = bad
    with pytest.raises(GenerationError, match="model produced non-finite samples"):
        peak_normalize(audio)


@pytest.mark.parametrize("peak", [0.0, -0.5, 1.5])
def test_peak_normalize_rejects_an_impossible_peak(peak: float) -> None:
    with pytest.raises(ValueError, match=r"peak must be in \(0, 1\]"):
        peak_normalize(tone(), peak)


@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_time_stretch_keeps_the_pitch(speed: float) -> None:
    audio = tone()
    stretched = time_stretch(audio, RATE, speed)

    assert stretched.shape == (2, round(audio.shape[1] / speed))
    assert stretched.dtype == np.float32
    for channel in stretched:
        # Bins are 1.3 Hz apart at speed 2.0 (0.75 s left), 0.33 Hz at 0.5.
        assert dominant_frequency(channel) == pytest.approx(440, abs=3)


@pytest.mark.parametrize("speed", [0.25, 0.75, 1.5, 3.0, 4.0])
@pytest.mark.parametrize("samples", [66150, 12345, 1001])
def test_time_stretch_length_is_exact(samples: int, speed: float) -> None:
    audio = tone()[:, :samples]
    assert time_stretch(audio, RATE, speed).shape == (2, round(samples / speed))


def test_time_stretch_mono() -> None:
    assert time_stretch(tone(channels=1), RATE, 2.0).shape == (1, 33075)


def test_speed_one_is_the_input_itself() -> None:
    audio = tone()
    assert time_stretch(audio, RATE, 1.0) is audio


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_time_stretch_never_peaks_above_the_input(speed: float) -> None:
    # The phase vocoder scatters the phases of a square wave's harmonics: unchecked, this
    # normalised input comes back peaking near 3.7.
    t = np.arange(RATE) / RATE
    square = np.sign(np.sin(2 * np.pi * 220 * t))
    audio = peak_normalize(np.stack([square, square]).astype(np.float32))
    stretched = time_stretch(audio, RATE, speed)
    assert np.max(np.abs(stretched)) == np.float32(0.98)


@pytest.mark.parametrize("speed", [5.0, 0.1, 0.0, -1.0, float("nan")])
def test_time_stretch_rejects_speed_out_of_range(speed: float) -> None:
    with pytest.raises(InvalidRequestError, match=r"speed must be between 0\.25 and 4\.0") as e:
        time_stretch(tone(), RATE, speed)
    assert e.value.field == "speed"


def test_trim_takes_the_exact_samples() -> None:
    ramp = np.arange(2 * RATE, dtype=np.float32).reshape(1, -1).repeat(2, axis=0)
    trimmed = trim(ramp, RATE, start_seconds=0.5, length_seconds=0.25)

    assert trimmed.shape == (2, 11025)
    assert trimmed[0, 0] == 22050
    assert trimmed[1, -1] == 22050 + 11025 - 1


def test_trim_rounds_to_the_nearest_sample() -> None:
    ramp = np.arange(RATE, dtype=np.float32)[None]
    # 0.35 s * 44100 is 15434.999999999998 and 0.57 s is 25136.999999999996 in floating point;
    # truncating would start and end one sample early.
    trimmed = trim(ramp, RATE, start_seconds=0.35, length_seconds=0.57)
    assert trimmed.shape == (1, 25137)
    assert trimmed[0, 0] == 15435


def test_trim_to_the_very_end() -> None:
    assert trim(tone(), RATE, 0.5, 1.0).shape == (2, RATE)


@pytest.mark.parametrize(("start", "length"), [(-0.1, 0.5), (0.0, -1.0), (1.0, 0.6)])
def test_trim_rejects_a_range_outside_the_audio(start: float, length: float) -> None:
    with pytest.raises(ValueError, match="Cannot take"):
        trim(tone(), RATE, start, length)
