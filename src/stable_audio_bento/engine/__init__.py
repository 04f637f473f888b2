"""Engines behind one contract (``contract.py``), one backend per model family.

``load_engine`` and ``model_info`` pick the backend from the store entry's ``backend``
metadata: ``stable-audio-tools`` (the Stable Audio Open family, the default for entries that
predate the key) or ``diffusers-sa3`` (Stable Audio 3 through diffusers).
"""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import ModelLoadError
from .contract import (
    AUDIO_TO_AUDIO,
    CONTINUATION,
    INPAINTING,
    MODES,
    TEXT_TO_AUDIO,
    AudioEngine,
    EngineRequest,
    EngineStats,
    ProgressCallback,
    SamplingParams,
    Scalar,
)
from .info import (
    RF_OBJECTIVES,
    RF_SAMPLERS,
    SA3_BACKEND,
    SAT_BACKEND,
    SIGMA_MAX,
    SIGMA_MIN,
    V_SAMPLERS,
    ModelInfo,
)
from .noise import ItemNoise, initial_noise
from .precision import CPU_MODES, DTYPES, CpuOptions, dtype_candidates, pick_device
from .sao.engine import StableAudioEngine

if TYPE_CHECKING:
    from ..settings import Settings
    from ..store.catalog import ModelEntry

__all__ = [
    "AUDIO_TO_AUDIO",
    "CONTINUATION",
    "CPU_MODES",
    "DTYPES",
    "INPAINTING",
    "MODES",
    "RF_OBJECTIVES",
    "RF_SAMPLERS",
    "SA3_BACKEND",
    "SAT_BACKEND",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "TEXT_TO_AUDIO",
    "V_SAMPLERS",
    "AudioEngine",
    "CpuOptions",
    "EngineRequest",
    "EngineStats",
    "ItemNoise",
    "ModelInfo",
    "ProgressCallback",
    "SamplingParams",
    "Scalar",
    "StableAudioEngine",
    "dtype_candidates",
    "initial_noise",
    "load_engine",
    "model_info",
    "pick_device",
]


class Backend(Protocol):
    """What each backend module offers: read a model's description, load it."""

    def read_info(self, path: Path, name: str, metadata: dict[str, Any]) -> ModelInfo: ...

    def load(
        self,
        path: Path,
        name: str,
        metadata: dict[str, Any],
        *,
        device: str,
        half: bool,
        dtype: str,
        compile: bool,
        threads: int,
        cpu: CpuOptions | None = None,
    ) -> AudioEngine: ...


# Backend name -> module (imported on first use: each pulls in its own heavy libraries).
BACKENDS = {SAT_BACKEND: ".sao.engine", SA3_BACKEND: ".sa3.engine"}


def backend_of(metadata: dict[str, Any]) -> Backend:
    name = str(metadata.get("backend", SAT_BACKEND))
    module = BACKENDS.get(name)
    if module is None:
        raise ModelLoadError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return cast(Backend, importlib.import_module(module, __name__))


@functools.lru_cache(maxsize=64)
def _cached_info(path: Path, name: str, metadata_json: str) -> ModelInfo:
    metadata = json.loads(metadata_json)
    return backend_of(metadata).read_info(path, name, metadata)


def model_info(entry: ModelEntry) -> ModelInfo:
    """What a store entry's model can do, read from its files (cached, no weights loaded)."""
    return _cached_info(entry.path, entry.name, json.dumps(entry.metadata, sort_keys=True))


def load_engine(entry: ModelEntry, settings: Settings) -> AudioEngine:
    """Load a store entry with the backend its metadata names."""
    cpu = CpuOptions(settings.cpu_fast, settings.precision_min_snr_db)
    # Only a fast path is passed on: a backend without one loads as before.
    extra = {"cpu": cpu} if cpu.mode != "off" else {}
    return backend_of(entry.metadata).load(
        entry.path,
        entry.name,
        entry.metadata,
        device=settings.device,
        half=settings.model_half,
        dtype=settings.dtype,
        compile=settings.compile,
        threads=settings.torch_threads,
        **extra,
    )
