"""Engines behind one contract (``contract.py``), one backend per model family.

``load_engine`` and ``model_info`` pick the backend from the store entry's ``backend``
metadata: ``stable-audio-tools`` (the Stable Audio Open family, the default for entries that
predate the key) or ``diffusers-sa3`` (Stable Audio 3 through diffusers).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import families
from .contract import (
    AUDIO_TO_AUDIO,
    CONTINUATION,
    INPAINTING,
    MODES,
    TEXT_TO_AUDIO,
    AudioEngine,
    EngineRequest,
    EngineStats,
    LoadOptions,
    ProgressCallback,
    SamplingParams,
    Scalar,
)
from .info import (
    RF_OBJECTIVES,
    RF_SAMPLERS,
    SAT_BACKEND,
    V_SAMPLERS,
    ModelInfo,
)
from .noise import ItemNoise, initial_noise
from .precision import CPU_MODES, DTYPES, CpuOptions, dtype_candidates, pick_device
from .sa3 import SA3_BACKEND
from .sao.config import SIGMA_MAX, SIGMA_MIN
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
    "LoadOptions",
    "ModelInfo",
    "ProgressCallback",
    "SamplingParams",
    "Scalar",
    "StableAudioEngine",
    "dtype_candidates",
    "initial_noise",
    "load_engine",
    "load_options",
    "model_info",
    "pick_device",
]


@functools.lru_cache(maxsize=64)
def _cached_info(path: Path, name: str, metadata_json: str) -> ModelInfo:
    metadata = json.loads(metadata_json)
    return families.by_backend(metadata).engine.read_info(path, name, metadata)


def model_info(entry: ModelEntry) -> ModelInfo:
    """What a store entry's model can do, read from its files (cached, no weights loaded)."""
    return _cached_info(entry.path, entry.name, json.dumps(entry.metadata, sort_keys=True))


def load_options(settings: Settings) -> LoadOptions:
    """The load options a server's settings name."""
    return LoadOptions(
        device=settings.device,
        half=settings.model_half,
        dtype=settings.dtype,
        compile=settings.compile,
        threads=settings.torch_threads,
        cpu=CpuOptions(settings.cpu_fast, settings.precision_min_snr_db),
        lora_apply=settings.lora_apply,
        lora_cache_mb=settings.lora_cache_mb,
    )


def load_engine(entry: ModelEntry, settings: Settings) -> AudioEngine:
    """Load a store entry with the family its metadata names."""
    return families.by_backend(entry.metadata).engine.load(
        entry.path, entry.name, entry.metadata, load_options(settings)
    )
