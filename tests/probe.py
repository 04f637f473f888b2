"""Check audio with an independent decoder: Debian's ffprobe / ffmpeg, never our own code."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Raw = tuple[int, int]  # (sample rate, channels) of headerless s16le PCM


@dataclass(frozen=True)
class Probe:
    codec: str
    format_name: str
    sample_rate: int
    channels: int
    duration: float  # seconds the decoder really yields (after AAC priming / Opus pre-skip)
    samples: np.ndarray  # float32 (frames, channels), decoded by ffmpeg


def _input(path: Path, pcm: Raw | None) -> list[str]:
    raw = [] if pcm is None else ["-f", "s16le", "-ar", str(pcm[0]), "-ac", str(pcm[1])]
    return [*raw, "-i", str(path)]


def ffprobe(data: bytes, pcm: Raw | None = None) -> Probe:
    """Probe and fully decode ``data``; ``pcm=(rate, channels)`` reads it as raw s16le."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audio"
        path.write_bytes(data)
        show = ["-show_streams", "-show_format", "-of", "json"]
        probed = subprocess.run(
            ["ffprobe", "-v", "error", *show, *_input(path, pcm)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", *_input(path, pcm), "-f", "f32le", "-c:a", "pcm_f32le", "-"],
            capture_output=True,
            check=True,
            timeout=60,
        )
    info = json.loads(probed.stdout)
    (stream,) = info["streams"]
    rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    samples = np.frombuffer(decoded.stdout, dtype="<f4").reshape(-1, channels)
    return Probe(
        codec=stream["codec_name"],
        format_name=info["format"]["format_name"],
        sample_rate=rate,
        channels=channels,
        duration=len(samples) / rate,
        samples=samples,
    )
