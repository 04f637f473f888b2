"""LoRA files as the reference trains and saves them (``stable_audio_3/models/lora``).

A ``.safetensors`` file (or a ``.ckpt`` holding ``state_dict`` and ``lora_config``) whose
tensors are named ``<layer>.parametrizations.weight.0.<param>``, ``<layer>`` relative to the
DiT wrapper (``model.*``) or the conditioner (``conditioners.*``), with the JSON
``lora_config`` in the file's metadata: ``rank``, ``alpha`` (default: rank),
``adapter_type`` (default ``lora``; the legacy ``dora`` is resolved as the reference does),
``include`` / ``exclude`` (layer-name filters: substrings, ``layers[0-5]`` ranges).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from ...errors import ImportSourceError

# adapter type -> the tensors each of its layers holds
ADAPTER_PARAMS: dict[str, tuple[str, ...]] = {
    "lora": ("lora_A", "lora_B"),
    "dora-rows": ("lora_A", "lora_B", "magnitude"),
    "dora-cols": ("lora_A", "lora_B", "magnitude"),
    "bora": ("lora_A", "lora_B", "magnitude_r", "magnitude_c"),
    "lora-xs": ("M_xs",),
    "dora-rows-xs": ("M_xs", "magnitude"),
    "dora-cols-xs": ("M_xs", "magnitude"),
    "bora-xs": ("M_xs", "magnitude_r", "magnitude_c"),
}
ADAPTER_TYPES = tuple(ADAPTER_PARAMS)
_KEY = re.compile(
    r"(?P<layer>.+)\.parametrizations\.weight\.0\."
    r"(?P<param>lora_A|lora_B|M_xs|magnitude|magnitude_r|magnitude_c)"
)


@dataclass(frozen=True)
class LoraConfig:
    adapter_type: str
    rank: int
    alpha: float
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def xs(self) -> bool:
        return self.adapter_type.endswith("-xs")

    def to_json(self) -> dict[str, Any]:
        return {
            "adapter_type": self.adapter_type,
            "rank": self.rank,
            "alpha": self.alpha,
            "include": list(self.include) if self.include is not None else None,
            "exclude": list(self.exclude) if self.exclude is not None else None,
        }


@dataclass
class LoraFile:
    """A parsed LoRA: its config and, per layer, its tensors (float32)."""

    config: LoraConfig
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)


def hub_weight_name(layer: str) -> str:
    """The base checkpoint's name of the weight a LoRA layer adapts."""
    if layer.startswith("model."):
        return f"model.{layer}.weight"
    if layer.startswith("conditioners."):
        return f"conditioner.{layer}.weight"
    raise ImportSourceError(
        f"layer {layer!r} is neither in the DiT (model.*) nor in the conditioner (conditioners.*)"
    )


def _expand(pattern: str) -> list[str]:
    """``layers[0-2]`` -> ``layers0``, ``layers1``, ``layers2`` (the reference's filter syntax)."""
    parts = re.split(r"\[(\d+)-(\d+)\]", pattern)
    if len(parts) == 1:
        return [pattern]
    literals, starts, ends = parts[0::3], parts[1::3], parts[2::3]
    pools = []
    for a, b in zip(starts, ends, strict=True):
        step = 1 if int(b) >= int(a) else -1
        pools.append([str(n) for n in range(int(a), int(b) + step, step)])
    out = []
    for combo in product(*pools):
        pieces = []
        for i, literal in enumerate(literals):
            pieces.append(literal)
            if i < len(combo):
                pieces.append(combo[i])
        out.append("".join(pieces))
    return out


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(e in name for p in patterns for e in _expand(p.strip()))


def selected(config: LoraConfig, layer: str) -> bool:
    """Whether the reference's include / exclude filters give ``layer`` an adapter."""
    if config.include is not None and not _matches(layer, config.include):
        return False
    return not (config.exclude is not None and _matches(layer, config.exclude))


def _filters(value: Any, key: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImportSourceError(f"{where}: lora_config.{key} must be a list of strings")
    return tuple(value)


def _read_raw(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not path.is_file():
        raise ImportSourceError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
                metadata = f.metadata() or {}
        except Exception as e:  # safetensors has its own error types for a broken header
            raise ImportSourceError(f"{path}: not a readable safetensors file ({e})") from e
        try:
            config = json.loads(metadata["lora_config"]) if "lora_config" in metadata else {}
        except ValueError as e:
            raise ImportSourceError(f"{path}: lora_config metadata is not JSON ({e})") from e
    elif path.suffix == ".ckpt":
        import torch

        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
            tensors, config = dict(ckpt["state_dict"]), dict(ckpt.get("lora_config") or {})
        except Exception as e:  # torch.load raises many error types for a bad file
            raise ImportSourceError(f"{path}: not a LoRA checkpoint ({e})") from e
    else:
        raise ImportSourceError(f"{path}: a LoRA file is .safetensors or .ckpt")
    if not isinstance(config, dict):
        raise ImportSourceError(f"{path}: lora_config must be a JSON object")
    return tensors, config


def _dora_variant(tensors: dict[str, Any]) -> str:
    """The reference's reading of a legacy ``dora`` file: 2-D magnitudes say the axis."""
    for key, value in tensors.items():
        if key.endswith(".magnitude"):
            if value.dim() == 2 and value.shape[0] == 1:
                return "dora-cols"
            break
    return "dora-rows"


def read_lora(path: Path) -> LoraFile:
    """Parse and check a LoRA file on its own (the base is checked by ``validate``)."""
    tensors, raw = _read_raw(path)
    where = str(path)
    adapter_type = raw.get("adapter_type", "lora")
    if adapter_type == "dora":
        adapter_type = _dora_variant(tensors)
    if adapter_type not in ADAPTER_PARAMS:
        raise ImportSourceError(
            f"{where}: unknown adapter type {adapter_type!r} (known: {', '.join(ADAPTER_TYPES)})"
        )
    layers: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None:
            raise ImportSourceError(f"{where}: tensor {key!r} is not a LoRA parameter")
        value = tensor.float()
        if match["param"] == "magnitude" and value.dim() == 2:
            value = value.squeeze()
        layers.setdefault(match["layer"], {})[match["param"]] = value
    if not layers:
        raise ImportSourceError(f"{where}: the file holds no LoRA tensors")
    wanted = set(ADAPTER_PARAMS[adapter_type])
    for layer, params in layers.items():
        if set(params) != wanted:
            raise ImportSourceError(
                f"{where}: layer {layer} has {', '.join(sorted(params))}; a {adapter_type} "
                f"layer has {', '.join(sorted(wanted))}"
            )
    ranks = {
        (p["lora_A"].shape[0] if "lora_A" in p else p["M_xs"].shape[0]) for p in layers.values()
    }
    rank = raw.get("rank", min(ranks))
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1 or ranks != {rank}:
        raise ImportSourceError(
            f"{where}: rank {rank!r} does not match the tensors' ranks {sorted(ranks)}"
        )
    alpha = raw.get("alpha", rank)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise ImportSourceError(f"{where}: alpha must be a number, got {alpha!r}")
    config = LoraConfig(
        adapter_type=adapter_type,
        rank=rank,
        alpha=float(alpha),
        include=_filters(raw.get("include"), "include", where),
        exclude=_filters(raw.get("exclude"), "exclude", where),
    )
    # The reference gives adapters only to layers its filters select; others stay unchanged.
    kept = {k: v for k, v in layers.items() if selected(config, k)}
    for layer in kept:
        hub_weight_name(layer)
    return LoraFile(config=config, layers=kept)


def expected_shapes(
    config: LoraConfig, weight_shape: tuple[int, ...]
) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a layer of ``config``'s type has for a base weight of this shape."""
    fan_out = weight_shape[0]
    fan_in = 1
    for size in weight_shape[1:]:
        fan_in *= size
    r = config.rank
    shapes: dict[str, tuple[int, ...]] = {
        "lora_A": (r, fan_in),
        "lora_B": (fan_out, r),
        "M_xs": (r, r),
        "magnitude_r": (fan_out,),
        "magnitude_c": (fan_in,),
        "magnitude": (fan_in,) if "cols" in config.adapter_type else (fan_out,),
    }
    return {k: shapes[k] for k in ADAPTER_PARAMS[config.adapter_type]}
