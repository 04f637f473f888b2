"""The native BentoML APIs' side of a generation: the audio as a file in the request's
temporary directory (BentoML serves it and removes it), headers as on the compatible routes."""

from __future__ import annotations

from pathlib import Path

from ..errors import StableAudioError
from ..pipeline.generation import GeneratedAudio
from .errors import map_error


def write_output(result: GeneratedAudio, directory: str | Path) -> tuple[Path, dict[str, str]]:
    """Write the body into ``directory``; the headers to send with it (X-Seed & co, and the
    Content-Type: BentoML guesses one from the suffix and knows no .pcm or .opus)."""
    path = Path(directory) / f"audio-{result.seed}.{result.extension}"
    path.write_bytes(result.body())
    return path, {**result.headers(), "content-type": result.media_type}


def write_error(error: StableAudioError, directory: str | Path) -> tuple[Path, int]:
    """The error envelope as a JSON file, and its status (a task's result)."""
    response = map_error(error)
    path = Path(directory) / "error.json"
    path.write_bytes(bytes(response.body))
    return path, response.status_code
