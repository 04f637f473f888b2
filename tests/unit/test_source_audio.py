"""Uploaded audio: real files in each format (made by soundfile and PyAV), limits, bad input."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile

from stable_audio_bento.errors import InvalidRequestError, UploadTooLargeError
from stable_audio_bento.pipeline.source_audio import (
    SourceAudio,
    check_size,
    conform,
    decode_audio,
    fit_window,
    load_source,
)

MODEL_RATE = 44100


def chirp(seconds: float, rate: int, channels: int, amplitude: float = 0.5) -> np.ndarray:
    """(samples, channels): a 300 -> 1200 Hz sweep, channel 1 at half level (tells them apart)."""
    t = np.arange(round(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * (300 * t + 450 * t**2 / seconds))
    return np.stack([wave * (1.0 if c == 0 else 0.5) for c in range(channels)], axis=1).astype(
        np.float32
    )


def with_soundfile(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def with_av(audio: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    layout = "mono" if audio.shape[1] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio.T), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


# name -> (file maker, sample rate, channels, samples the codec may add or drop at the ends)
FILES = {
    "wav": (lambda a, r: with_soundfile(a, r, "WAV", "PCM_16"), 44100, 2, 0),
    "wav-float": (lambda a, r: with_soundfile(a, r, "WAV", "FLOAT"), 48000, 1, 0),
    "flac": (lambda a, r: with_soundfile(a, r, "FLAC"), 22050, 2, 0),
    "mp3": (lambda a, r: with_av(a, r, "mp3", "libmp3lame"), 44100, 2, 2400),
    "ogg-vorbis": (lambda a, r: with_soundfile(a, r, "OGG", "VORBIS"), 32000, 2, 2400),
    "ogg-opus": (lambda a, r: with_av(a, r, "ogg", "libopus"), 48000, 2, 2400),
    "m4a-aac": (lambda a, r: with_av(a, r, "mp4", "aac"), 44100, 2, 2400),
}


@pytest.mark.parametrize("name", list(FILES))
def test_each_format_decodes_to_model_rate_and_stereo(name: str) -> None:
    make, rate, channels, slack = FILES[name]
    original = chirp(1.0, rate, channels)
    data = make(original, rate)
    source = load_source(
        data, sample_rate=MODEL_RATE, channels=2, max_seconds=10, max_mb=1, field="audio"
    )
    assert source.sample_rate == MODEL_RATE
    assert source.audio.dtype == np.float32 and source.audio.shape[0] == 2
    expected = MODEL_RATE  # one second
    assert abs(source.audio.shape[-1] - expected) <= slack * MODEL_RATE / rate + 2
    # The sweep survives: the level of the first channel is about the original's.
    rms = float(np.sqrt(np.mean(source.audio[0] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.15)
    if channels == 1:  # mono -> both channels the same
        np.testing.assert_array_equal(source.audio[0], source.audio[1])
    else:  # stereo kept as it is: the second channel is at half level
        ratio = np.sqrt(np.mean(source.audio[1] ** 2)) / rms
        assert ratio == pytest.approx(0.5, rel=0.1)


def test_lossless_input_at_the_model_rate_is_kept_exactly() -> None:
    original = chirp(0.5, MODEL_RATE, 2)
    data = with_soundfile(original, MODEL_RATE, "WAV", "FLOAT")
    source = load_source(data, sample_rate=MODEL_RATE, channels=2, max_seconds=10, max_mb=1)
    np.testing.assert_array_equal(source.audio, original.T)


def test_resampling_keeps_the_pitch() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]
    source = conform(decode_audio(with_soundfile(tone, rate, "WAV"), max_seconds=5), 44100, 2)
    spectrum = np.abs(np.fft.rfft(source.audio[0]))
    peak_hz = np.argmax(spectrum) * 44100 / source.audio.shape[-1]
    assert peak_hz == pytest.approx(1000, abs=2)


def test_more_than_two_channels_are_downmixed() -> None:
    audio = np.repeat(chirp(0.3, 44100, 1), 6, axis=1)
    source = decode_audio(with_soundfile(audio, 44100, "WAV", "FLOAT"), max_seconds=5)
    assert source.channels == 2


def test_stereo_to_a_mono_model_is_the_mean() -> None:
    stereo = chirp(0.3, 44100, 2)
    source = conform(SourceAudio(stereo.T.copy(), 44100), 44100, 1)
    np.testing.assert_allclose(source.audio[0], stereo.mean(axis=1), atol=1e-7)


def test_size_cap_is_a_413_naming_the_limit() -> None:
    with pytest.raises(UploadTooLargeError, match=r"limit is 1 MB.*STABLE_AUDIO_MAX_UPLOAD_MB"):
        check_size(2 * 1024 * 1024, 1, "audio")
    data = with_soundfile(chirp(10.0, 44100, 2), 44100, "WAV", "FLOAT")  # 3.5 MB
    with pytest.raises(UploadTooLargeError) as caught:
        load_source(data, sample_rate=44100, channels=2, max_seconds=60, max_mb=1)
    assert caught.value.field == "audio"
    check_size(1024 * 1024, 1, "audio")  # exactly at the cap is fine


@pytest.mark.parametrize("name", ["wav", "mp3", "ogg-opus"])
def test_duration_cap_is_a_400_saying_the_limit(name: str) -> None:
    make, rate, channels, _ = FILES[name]
    data = make(chirp(4.0, rate, channels), rate)
    with pytest.raises(InvalidRequestError, match=r"4\.\d+ s long; .* at most 2 s") as caught:
        decode_audio(data, max_seconds=2, field="audio")
    assert caught.value.field == "audio"
    assert decode_audio(data, max_seconds=5).seconds == pytest.approx(4.0, abs=0.06)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "audio is empty"),
        (b"this is not audio at all, just some text " * 20, "could not be decoded as audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "could not be decoded as audio"),
    ],
)
def test_undecodable_input_is_a_400_naming_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        decode_audio(data, max_seconds=10, field="audio")
    assert caught.value.field == "audio"
    assert not isinstance(caught.value, UploadTooLargeError)


def test_a_file_without_samples_is_a_400() -> None:
    data = with_soundfile(np.zeros((0, 2), np.float32), 44100, "WAV")
    with pytest.raises(InvalidRequestError, match=r"no audio samples|could not be decoded"):
        decode_audio(data, max_seconds=10, field="source")


def test_silence_is_a_400() -> None:
    data = with_soundfile(np.zeros((44100, 2), np.float32), 44100, "WAV")
    with pytest.raises(InvalidRequestError, match="audio is silent") as caught:
        load_source(data, sample_rate=44100, channels=2, max_seconds=10, max_mb=1)
    assert caught.value.field == "audio"


def test_non_finite_samples_are_a_400() -> None:
    audio = chirp(0.2, 44100, 2)
    audio[100, 0] = np.nan
    data = with_soundfile(audio, 44100, "WAV", "FLOAT")
    with pytest.raises(InvalidRequestError, match="non-finite"):
        decode_audio(data, max_seconds=10)


def test_fit_window_refuses_or_trims() -> None:
    source = SourceAudio(np.ones((2, 44100 * 3), np.float32) * 0.1, 44100)
    with pytest.raises(InvalidRequestError, match=r"3\.00 s long; demo takes at most 2\.00 s"):
        fit_window(source, 2.0, trim=False, model="demo")
    trimmed = fit_window(source, 2.0, trim=True, model="demo")
    assert trimmed.audio.shape == (2, 88200)
    assert fit_window(source, 3.0, trim=False, model="demo") is source
