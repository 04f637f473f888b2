"""CORS for browser clients on other origins (``STABLE_AUDIO_CORS_ORIGINS``, off by default)."""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from .fields import IGNORED_HEADER

# What a browser script may read of a response: the headers that describe the audio.
EXPOSED_HEADERS = [
    "X-Seed",
    "X-Seeds",
    "X-Model",
    "X-Sample-Rate",
    "X-Channels",
    "X-Audio-Duration",
    "X-Output-Count",
    "X-Batch-Size",
    IGNORED_HEADER,
    "Content-Disposition",
    "Location",
    "Retry-After",
]


def cors_options(settings: Settings) -> dict[str, Any] | None:
    """Keyword arguments of starlette's ``CORSMiddleware``; None when CORS is off."""
    if not settings.cors_origins:
        return None
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "Content-Type", "Idempotency-Key"],
        "expose_headers": EXPOSED_HEADERS,
        "max_age": 600,
    }
