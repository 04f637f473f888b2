"""The audio format registry: one table drives the request schema, encoding and Content-Type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# Order matters: it is the order pydantic lists in its literal_error message, which the
# vLLM-Omni document quotes ("Input should be 'wav', 'pcm', 'flac', 'mp3', 'aac' or 'opus'").
FormatName = Literal["wav", "pcm", "flac", "mp3", "aac", "opus"]


@dataclass(frozen=True)
class AudioFormat:
    name: FormatName
    media_type: str
    extension: str
    description: str


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("wav", "audio/wav", "wav", "16-bit PCM WAV"),
        AudioFormat("pcm", "audio/pcm", "pcm", "raw 16-bit little-endian PCM, interleaved"),
        AudioFormat("flac", "audio/flac", "flac", "lossless FLAC, 16-bit"),
        AudioFormat("mp3", "audio/mpeg", "mp3", "MP3 (LAME), 192 kbit/s"),
        AudioFormat("aac", "audio/aac", "aac", "AAC-LC in an ADTS stream, 192 kbit/s"),
        AudioFormat("opus", "audio/opus", "opus", "Opus in Ogg at 48 kHz, 128 kbit/s"),
    )
}

assert tuple(FORMATS) == get_args(FormatName)


def get_format(name: str) -> AudioFormat:
    """The registry entry for ``name`` (KeyError if unknown; the schema rejects those first)."""
    return FORMATS[name]
