"""The native BentoML APIs' side of a generation: the audio as a file in the request's
temporary directory (BentoML serves it and removes it), headers as on the compatible routes."""

from __future__ import annotations

from pathlib import Path

from ..pipeline.generation import GeneratedAudio


def write_output(result: GeneratedAudio, directory: str | Path) -> tuple[Path, dict[str, str]]:
    """Write the body into ``directory``; the headers to send with it (X-Seed & co, and the
    Content-Type: BentoML guesses one from the suffix and knows no .pcm or .opus)."""
    path = Path(directory) / f"audio-{result.seed}.{result.extension}"
    path.write_bytes(result.body())
    return path, {**result.headers(), "content-type": result.media_type}
