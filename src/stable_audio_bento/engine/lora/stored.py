"""A LoRA entry's tensors as the engines apply them, read from the BentoML model store.

An entry holds ``adapter.safetensors`` (per reference weight name, the file's tensors, float32;
for ``-xs`` types also the SVD bases ``U`` / ``V``) and metadata with the adapter type, rank
and alpha; ``stable_audio_bento.lora.store`` writes and lists them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ModelLoadError
from .files import LoraConfig

LORA_LABEL = ("family", "stable-audio-lora")
ADAPTER_FILE = "adapter.safetensors"


@dataclass
class Adapter:
    """A LoRA loaded for application: config and, per reference weight name, its tensors."""

    tag: str
    config: LoraConfig
    layers: dict[str, dict[str, Any]]


def _load(path: Path) -> dict[str, dict[str, Any]]:
    from safetensors.torch import load_file

    layers: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(str(path)).items():
        name, _, param = key.rpartition("::")
        layers.setdefault(name, {})[param] = tensor
    return layers


@functools.lru_cache(maxsize=32)
def _load_adapter(tag: str, path: str) -> Adapter:
    import bentoml

    model = bentoml.models.get(tag)
    metadata: dict[str, Any] = dict(model.info.metadata)
    config = LoraConfig(
        adapter_type=str(metadata["adapter_type"]),
        rank=int(metadata["rank"]),
        alpha=float(metadata["alpha"]),
    )
    return Adapter(tag=tag, config=config, layers=_load(Path(path) / ADAPTER_FILE))


def load_adapter(tag: str) -> Adapter:
    """A stored LoRA's tensors (cached). Raises ModelLoadError when it cannot be read."""
    import bentoml

    try:
        path = bentoml.models.get(tag).path
        return _load_adapter(tag, path)
    except Exception as e:  # a missing, truncated or foreign entry: this LoRA's requests fail
        raise ModelLoadError(f"The LoRA `{tag}` could not be loaded: {e}") from e
