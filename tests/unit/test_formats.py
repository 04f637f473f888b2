"""Every registry format, encoded in memory and checked with FFmpeg's ffprobe/ffmpeg CLIs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stable_audio_bento.formats import FORMATS, EncodedAudio, encode_audio

pytestmark = pytest.mark.skipif(
    shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None,
    reason="needs the ffmpeg and ffprobe CLIs as an independent decoder (apt-get install ffmpeg)",
)

RATE = 44100
SECONDS = 1.5
SAMPLES = round(RATE * SECONDS)
TONE_HZ = 440.0
# 16-bit quantisation: rounding to the nearest step is off by at most half of 1/32768.
INT16_TOLERANCE = 0.5 / 32768 + 1e-7


@dataclass(frozen=True)
class Expected:
    codec: str
    sample_rate: int
    # Samples per codec frame; 0 for lossless formats, whose decoded length must be exact.
    frame: int = 0
    # Samples the decoder adds in front because the container cannot signal encoder delay.
    priming: int = 0
    # ADTS has no length field: ffprobe guesses the duration from the first frames' bitrate.
    duration_is_estimated: bool = False


EXPECTED = {
    "wav": Expected("pcm_s16le", RATE),
    "pcm": Expected("pcm_s16le", RATE),
    "flac": Expected("flac", RATE),
    "mp3": Expected("mp3", RATE, frame=1152),
    "aac": Expected("aac", RATE, frame=1024, priming=1024, duration_is_estimated=True),
    "opus": Expected("opus", 48000, frame=960),
}
LOSSLESS = [name for name, e in EXPECTED.items() if e.frame == 0]
LOSSY = [name for name, e in EXPECTED.items() if e.frame > 0]
RAW_INPUT = ["-f", "s16le", "-ar", str(RATE)]


def tone(channels: int, frequency: float = TONE_HZ, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(SAMPLES) / RATE
    wave = amplitude * np.sin(2 * np.pi * frequency * t)
    # A different phase per channel, so a channel swap or a mono downmix would show.
    channel = [wave, amplitude * np.cos(2 * np.pi * frequency * t)][:channels]
    return np.stack(channel).astype(np.float32)


def input_args(encoded: EncodedAudio) -> list[str]:
    return [*RAW_INPUT, "-ac", str(encoded.channels)] if encoded.format.name == "pcm" else []


def write(encoded: EncodedAudio, tmp_path: Path) -> Path:
    # A file, not a pipe: on a pipe ffmpeg cannot seek to the MP3 LAME tag's end padding.
    path = tmp_path / f"audio.{encoded.format.extension}"
    path.write_bytes(encoded.data)
    return path


def ffprobe(encoded: EncodedAudio, tmp_path: Path) -> dict[str, Any]:
    path = write(encoded, tmp_path)
    raw: list[str] = []
    if encoded.format.name == "pcm":  # ffprobe takes the raw demuxer's own option names
        layout = "mono" if encoded.channels == 1 else "stereo"
        raw = ["-f", "s16le", "-sample_rate", str(RATE), "-ch_layout", layout]
    show = ["-show_streams", "-show_format", "-of", "json"]
    result = subprocess.run(
        ["ffprobe", "-v", "error", *raw, *show, str(path)],
        capture_output=True,
        check=True,
    )
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def decode(encoded: EncodedAudio, tmp_path: Path) -> np.ndarray:
    """The decoded samples, shaped (channels, samples), as ffmpeg's float32 output."""
    path = write(encoded, tmp_path)
    result = subprocess.run(
        ["ffmpeg", "-v", "error", *input_args(encoded), "-i", str(path), "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(result.stdout, dtype="<f4").reshape(-1, encoded.channels).T


def dominant_frequency(channel: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(channel * np.hanning(channel.size)))
    return float(np.argmax(spectrum) * sample_rate / channel.size)


def test_every_format_has_expectations() -> None:
    assert set(EXPECTED) == set(FORMATS)


@pytest.mark.parametrize("channels", [2, 1], ids=["stereo", "mono"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_independent_decoder_reads_the_declared_stream(
    name: str, channels: int, tmp_path: Path
) -> None:
    expected = EXPECTED[name]
    encoded = encode_audio(tone(channels), RATE, name)

    assert encoded.format is FORMATS[name]
    assert encoded.media_type == FORMATS[name].media_type
    assert (encoded.sample_rate, encoded.channels) == (expected.sample_rate, channels)
    assert encoded.duration == pytest.approx(SECONDS, abs=1 / expected.sample_rate)

    info = ffprobe(encoded, tmp_path)
    (stream,) = info["streams"]
    assert stream["codec_name"] == expected.codec
    assert int(stream["sample_rate"]) == expected.sample_rate
    assert stream["channels"] == channels
    # Lossless: exact to a sample. MP3 and Opus: ffprobe counts the stream before gapless
    # trimming (encoder delay plus end padding), which stays within two codec frames. ADTS: a
    # bitrate-based estimate, so only within 5%.
    slack = (2 * expected.frame + 1) / expected.sample_rate
    if expected.duration_is_estimated:
        slack = 0.05 * SECONDS
    assert float(info["format"]["duration"]) == pytest.approx(SECONDS, abs=slack)


@pytest.mark.parametrize("channels", [2, 1], ids=["stereo", "mono"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_decoded_length_is_the_input_length(name: str, channels: int, tmp_path: Path) -> None:
    expected = EXPECTED[name]
    encoded = encode_audio(tone(channels), RATE, name)
    decoded = decode(encoded, tmp_path)

    assert decoded.shape[0] == channels
    want = round(SECONDS * expected.sample_rate) + expected.priming
    if expected.frame == 0:
        assert decoded.shape[1] == want
    else:
        # MP3 (LAME tag) and Ogg Opus (pre-skip, end granule) carry delay and padding, so the
        # decoder trims them; AAC in ADTS cannot, so only the tail padding is bounded.
        assert want <= decoded.shape[1] < want + expected.frame


HEADERS: dict[str, Callable[[bytes], bool]] = {
    "wav": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WAVE",
    "flac": lambda d: d[:4] == b"fLaC",
    # An ID3v2 tag, or else a bare MPEG audio frame sync (11 set bits).
    "mp3": lambda d: d[:3] == b"ID3" or (d[0] == 0xFF and d[1] & 0xE0 == 0xE0),
    # ADTS sync word 0xFFF and layer 0, then the profile bits: 1 is AAC-LC.
    "aac": lambda d: d[0] == 0xFF and d[1] & 0xF6 == 0xF0 and d[2] >> 6 == 1,
    # The first Ogg page (27-byte header, 1 segment) carries the OpusHead packet.
    "opus": lambda d: d[:4] == b"OggS" and d[28:36] == b"OpusHead",
}


@pytest.mark.parametrize("name", [name for name in FORMATS if name != "pcm"])
def test_header_bytes(name: str) -> None:
    assert HEADERS[name](encode_audio(tone(2), RATE, name).data)


def test_pcm_is_headerless_interleaved_int16(tmp_path: Path) -> None:
    audio = tone(2)
    encoded = encode_audio(audio, RATE, "pcm")

    assert len(encoded.data) == SAMPLES * 2 * 2
    first = np.frombuffer(encoded.data[:8], dtype="<i2")
    left, right = np.rint(audio[:, :2] * 32768).astype(int)
    assert first.tolist() == [left[0], right[0], left[1], right[1]]

    result = subprocess.run(
        ["ffmpeg", "-v", "error", *RAW_INPUT, "-ac", "2", "-i", "-", "-f", "f32le", "-"],
        input=encoded.data,
        capture_output=True,
        check=True,
    )
    assert len(result.stdout) == SAMPLES * 2 * 4


@pytest.mark.parametrize("channels", [2, 1], ids=["stereo", "mono"])
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_formats_round_trip(name: str, channels: int, tmp_path: Path) -> None:
    audio = tone(channels, amplitude=0.98)
    decoded = decode(encode_audio(audio, RATE, name), tmp_path)
    np.testing.assert_allclose(decoded, audio, rtol=0, atol=INT16_TOLERANCE)


@pytest.mark.parametrize("channels", [2, 1], ids=["stereo", "mono"])
@pytest.mark.parametrize("name", LOSSY)
def test_lossy_formats_keep_the_tone(name: str, channels: int, tmp_path: Path) -> None:
    encoded = encode_audio(tone(channels), RATE, name)
    decoded = decode(encoded, tmp_path)
    # 1.5 s gives FFT bins 0.67 Hz apart (0.69 at 48 kHz); 2 Hz allows the window's spread.
    for channel in decoded:
        assert dominant_frequency(channel, encoded.sample_rate) == pytest.approx(TONE_HZ, abs=2)
        # Level, not peak: codecs ring at the onset (FFmpeg's AAC overshoots to ~0.76 in its
        # first stereo frame of this tone). The 0.5-amplitude sine has an RMS of 0.354.
        rms = float(np.sqrt(np.mean(np.square(channel))))
        assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_float_to_int16_clips_and_rounds() -> None:
    step = 1 / 32768
    audio = np.array(
        [[1.5, -1.5, 1.0, -1.0, 0.4 * step, 0.6 * step, -0.6 * step, 100.0]], dtype=np.float32
    )
    pcm = np.frombuffer(encode_audio(audio, RATE, "pcm").data, dtype="<i2")
    assert pcm.tolist() == [32767, -32768, 32767, -32768, 0, 1, -1, 32767]


def test_opus_resamples_any_rate_to_48k(tmp_path: Path) -> None:
    rate = 32000
    t = np.arange(rate) / rate
    audio = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None]
    encoded = encode_audio(audio, rate, "opus")

    assert (encoded.sample_rate, encoded.duration) == (48000, 1.0)
    decoded = decode(encoded, tmp_path)
    assert decoded.shape == (1, 48000)
    assert dominant_frequency(decoded[0], 48000) == pytest.approx(TONE_HZ, abs=2)


def test_other_formats_keep_the_input_rate(tmp_path: Path) -> None:
    encoded = encode_audio(np.zeros((1, 32000), dtype=np.float32), 32000, "wav")
    assert encoded.sample_rate == 32000
    assert ffprobe(encoded, tmp_path)["streams"][0]["sample_rate"] == "32000"


@pytest.mark.parametrize("name", LOSSY)
def test_encoding_is_thread_safe(name: str) -> None:
    # Each thread encodes a different tone, so crossed state would show as wrong bytes.
    inputs = [tone(2, frequency=220.0 * (i + 1)) for i in range(4)]
    alone = [encode_audio(audio, RATE, name).data for audio in inputs]
    start = threading.Barrier(len(inputs))

    def encode(audio: np.ndarray) -> list[bytes]:
        start.wait()
        return [encode_audio(audio, RATE, name).data for _ in range(3)]

    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        together = list(pool.map(encode, inputs))
    for single, concurrent in zip(alone, together, strict=True):
        assert concurrent == [single] * 3


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(100, dtype=np.float32), r"\(channels, samples\)"),
        (np.zeros((3, 100), dtype=np.float32), "1 or 2 channels"),
        (np.zeros((2, 0), dtype=np.float32), r"got \(2, 0\)"),
        (np.full((1, 100), np.nan, dtype=np.float32), "NaN or infinite"),
    ],
)
def test_rejects_audio_it_cannot_encode(audio: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_audio(audio, RATE, "wav")


def test_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="Unknown audio format 'ogg'"):
        encode_audio(tone(1), RATE, "ogg")


def test_import_is_fast_and_light() -> None:
    # The schema imports the registry; it must not drag in numpy, codecs or torch.
    code = (
        "import sys, stable_audio_bento.formats; "
        "print(sorted({'numpy', 'av', 'soundfile', 'soxr', 'torch'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stdout.strip() == b"[]"


@pytest.mark.parametrize("name", ["mp3", "aac", "opus"])
def test_lossy_formats_keep_headroom_so_decoders_do_not_clip(name: str, tmp_path: Path) -> None:
    # Noise with a gentle low-pass, like the demo model's output: Opus decodes it at 1.015
    # when it is encoded at the 0.98 peak that normalisation leaves.
    noise = np.random.default_rng(0).normal(size=(2, 44101))
    smooth = ((noise[:, 1:] + noise[:, :-1]) / 2).astype(np.float32)
    loud = 0.98 * smooth / np.abs(smooth).max()
    decoded = decode(encode_audio(loud, 44100, name), tmp_path)
    assert 0.5 < np.abs(decoded).max() < 1.0
