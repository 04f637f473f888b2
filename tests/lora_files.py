"""LoRA files in the reference's format (as ``save_lora_safetensors`` writes them), for tests.

Tensors ``<layer>.parametrizations.weight.0.<param>`` in float16 and the JSON ``lora_config``
in the safetensors metadata; layers named as in the reference's model (relative to the DiT
wrapper, ``model.*``, or the conditioner, ``conditioners.*``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from stable_audio_bento.engine.lora.files import ADAPTER_PARAMS
from stable_audio_bento.lora.layout import EntryWeights
from stable_audio_bento.store.catalog import ModelEntry

# Linear and Conv1d layers of both families' DiT and conditioner, as the reference names them.
CANDIDATES = (
    "model.transformer.layers.{i}.self_attn.to_qkv",
    "model.transformer.layers.{i}.self_attn.to_out",
    "model.transformer.layers.{i}.cross_attn.to_q",
    "model.transformer.layers.{i}.cross_attn.to_kv",
    "model.transformer.layers.{i}.ff.ff.0.proj",
    "model.transformer.layers.{i}.ff.ff.2",
    "model.transformer.project_in",
    "model.preprocess_conv",
    "conditioners.seconds_total.embedder.embedding.1",
    "conditioners.prompt.proj_out",
)


def base_layers(entry: ModelEntry, depth: int = 2) -> dict[str, tuple[int, ...]]:
    """Reference layer name -> base weight shape, for the candidates the base has."""
    weights = EntryWeights(entry)
    found: dict[str, tuple[int, ...]] = {}
    for pattern in CANDIDATES:
        for i in range(depth):
            layer = pattern.format(i=i)
            prefix = "model." if layer.startswith("model.") else "conditioner."
            shape = weights.shape(f"{prefix}{layer}.weight")
            if shape is not None and len(shape) in (2, 3):
                found[layer] = shape
    return found


def write_lora(
    path: Path,
    layers: dict[str, tuple[int, ...]],
    adapter_type: str = "lora",
    rank: int = 2,
    alpha: float = 4.0,
    seed: int = 0,
    scale: float = 0.3,
    extra_config: dict[str, object] | None = None,
) -> Path:
    """A random LoRA of ``adapter_type`` for ``layers`` (name -> base weight shape)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    tensors: dict[str, torch.Tensor] = {}
    for layer, shape in layers.items():
        fan_out = shape[0]
        fan_in = 1
        for size in shape[1:]:
            fan_in *= size
        values = {
            "lora_A": rand(rank, fan_in),
            "lora_B": rand(fan_out, rank),
            "M_xs": rand(rank, rank),
            "magnitude": rand(fan_in if "cols" in adapter_type else fan_out).abs() + 1.0,
            "magnitude_r": rand(fan_out).abs() + 1.0,
            "magnitude_c": rand(fan_in).abs() + 1.0,
        }
        for param in ADAPTER_PARAMS[adapter_type]:
            tensors[f"{layer}.parametrizations.weight.0.{param}"] = values[param].half()
    config = {"rank": rank, "alpha": alpha, "adapter_type": adapter_type, **(extra_config or {})}
    save_file(tensors, str(path), metadata={"lora_config": json.dumps(config)})
    return path
