"""Where the weight a LoRA layer adapts lives: in a base entry's files, in a loaded engine.

LoRA layers are named as in the reference's model (stable-audio-tools). A Stable Audio Open
entry keeps that model and its names. A Stable Audio 3 entry is converted to diffusers'
components: ``sa3_layout`` says which component and key each reference weight became and how
(``qkv_reorder``: the fused differential q/k/v rows are reordered), so the adapter is applied
in the reference's layout and the result is converted the same way as the base weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from ..engine.info import SA3_BACKEND
from ..errors import GenerationError
from ..modelstore import ModelEntry
from ..sa3_layout import SA3Config, _plan_one

SA3_FILES = {
    "transformer": "transformer/diffusion_pytorch_model.safetensors",
    "duration_embedder": "duration_embedder/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
}


@dataclass(frozen=True)
class Place:
    """A reference weight's home: component (``""``: the stable-audio-tools model), key, and
    the transform from the reference's layout to ours."""

    component: str
    key: str
    transform: str = "copy"


def to_ours(weight: Any, transform: str) -> Any:
    if transform == "qkv_reorder":
        import torch

        q, k, v, q2, k2 = weight.chunk(5, dim=0)
        return torch.cat([q, q2, k, k2, v], dim=0)
    return weight


def to_reference(weight: Any, transform: str) -> Any:
    if transform == "qkv_reorder":
        import torch

        q, q2, k, k2, v = weight.chunk(5, dim=0)
        return torch.cat([q, k, v, q2, k2], dim=0)
    return weight


def is_sa3(entry: ModelEntry) -> bool:
    return entry.metadata.get("backend") == SA3_BACKEND


def sa3_differential(transformer_config: dict[str, Any]) -> bool:
    return bool(transformer_config.get("use_differential_attention", False))


def place(hub_name: str, sa3: bool, differential: bool = False) -> Place | None:
    """Where the base weight ``hub_name`` is in our model (None: it is not)."""
    if not sa3:
        return Place("", hub_name)
    # Only the DiT's differential flag matters to the DiT / conditioner weights' plans.
    stand_in = cast(SA3Config, SimpleNamespace(dit_differential=differential))
    plan = _plan_one(stand_in, hub_name)
    if plan is None or plan.component not in SA3_FILES:
        return None
    return Place(plan.component, plan.key, plan.transform)


class EntryWeights:
    """Reads base weights of a store entry by their reference names, in the reference layout."""

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self.sa3 = is_sa3(entry)
        self.differential = False
        if self.sa3:
            config = json.loads((entry.path / "transformer" / "config.json").read_text())
            self.differential = sa3_differential(config)
        self._handles: dict[str, Any] = {}

    def _file(self, component: str) -> Path:
        if not self.sa3:
            return self.entry.path / "model.safetensors"
        return self.entry.path / SA3_FILES[component]

    def _open(self, component: str) -> Any:
        if component not in self._handles:
            from safetensors import safe_open

            self._handles[component] = safe_open(str(self._file(component)), "pt")
        return self._handles[component]

    def shape(self, hub_name: str) -> tuple[int, ...] | None:
        where = place(hub_name, self.sa3, self.differential)
        if where is None:
            return None
        handle = self._open(where.component)
        if where.key not in set(handle.keys()):
            return None
        return tuple(handle.get_slice(where.key).get_shape())

    def weight(self, hub_name: str) -> Any:
        where = place(hub_name, self.sa3, self.differential)
        if where is None:
            raise KeyError(hub_name)
        tensor = self._open(where.component).get_tensor(where.key).float()
        return to_reference(tensor, where.transform)


def engine_modules(engine: Any) -> tuple[dict[str, Any], bool, bool]:
    """The modules a loaded engine runs, by component; whether it is SA3 (and differential)."""
    parts = getattr(engine, "parts", None)
    if parts is not None:
        components = {
            "transformer": parts.transformer,
            "duration_embedder": parts.duration_embedder,
            "text_encoder": parts.text_encoder,
        }
        differential = sa3_differential(dict(parts.transformer.config))
        return components, True, differential
    model = getattr(engine, "model", None)
    if model is None:
        raise GenerationError(f"{type(engine).__name__} has no loaded modules to adapt")
    return {"": model}, False, False


def engine_layer(
    components: dict[str, Any], hub_name: str, sa3: bool, differential: bool
) -> tuple[Any, str]:
    """The module whose ``weight`` parameter holds ``hub_name`` in a loaded engine, and the
    transform to our layout."""
    where = place(hub_name, sa3, differential)
    if where is None:
        raise KeyError(hub_name)
    root = components[where.component]
    module = root.get_submodule(where.key.removesuffix(".weight"))
    return module, where.transform
