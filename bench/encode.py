"""Encode one full Stable Audio window (47.55 s, stereo, 44.1 kHz) in every registry format.

    python bench/encode.py [--repeats 5] [--json results.json]   (also a section of python -m bench)

The input is band-limited noise under a chord: noise is the worst case for every codec's
bit allocation and for FLAC's predictor, so these are upper bounds for real model output.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from stable_audio_bento.formats import FORMATS, encode_audio

RATE = 44100
SECONDS = 47.55


def noise_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Stereo pink-ish noise plus a chord, peak-normalised to 0.98 like model output."""
    samples = round(seconds * rate)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal((2, samples)), axis=1)
    frequencies = np.fft.rfftfreq(samples, 1 / rate)
    spectrum[:, 1:] /= np.sqrt(frequencies[1:])  # 1/f power, closer to music than white noise
    spectrum[:, 0] = 0
    audio = np.fft.irfft(spectrum, samples, axis=1)
    t = np.arange(samples) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    audio = audio / np.max(np.abs(audio)) + 0.2 * chord
    return (0.98 * audio / np.max(np.abs(audio))).astype(np.float32)


def run(repeats: int = 5, seconds: float = SECONDS) -> dict[str, Any]:
    """Median encode time of ``seconds`` of audio in every registry format."""
    audio = noise_like(seconds, RATE)
    results = []
    for name in FORMATS:
        encode_audio(audio[:, :RATE], RATE, name)  # warm up: codec tables, lazy imports
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            encoded = encode_audio(audio, RATE, name)
            timings.append(time.perf_counter() - start)
        median = statistics.median(timings)
        results.append(
            {
                "format": name,
                "median_ms": round(median * 1000, 1),
                "min_ms": round(min(timings) * 1000, 1),
                "output_kib": round(len(encoded.data) / 1024, 1),
                "realtime_factor": round(seconds / median, 1),
            }
        )
    return {
        "seconds": seconds,
        "sample_rate": RATE,
        "channels": 2,
        "repeats": repeats,
        "machine": platform.platform(),
        "processor": platform.processor(),
        "results": results,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"### Encoding: {report['seconds']} s stereo {RATE} Hz, median of {report['repeats']}",
        "",
        "| format | median ms | output KiB | x realtime |",
        "|---|---|---|---|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['format']} | {row['median_ms']:.1f} | {row['output_kib']:.1f} "
            f"| {row['realtime_factor']:.1f} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed encodes per format")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of the input")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    report = run(args.repeats, args.seconds)
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
