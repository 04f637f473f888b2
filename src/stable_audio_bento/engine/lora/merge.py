"""LoRAs merged into a copy of the weights they adapt: what any adapter type can do.

``merged_weights`` runs the reference's math (``adapt``) on each adapted layer's base weight,
in the reference's layout, and converts the result back to ours; ``MergedCache`` keeps the
results of recently used sets (least recently used out past its byte budget).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import GenerationError
from .adapt import adapt
from .layout import engine_layer, engine_modules, to_ours, to_reference

if TYPE_CHECKING:
    from .stored import Adapter

LoraSet = tuple[tuple[str, float], ...]
Loader = Callable[[str], "Adapter"]


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class MergedCache:
    """Adapted weights by LoRA set for one engine, least recently used out past ``budget``
    bytes (0: nothing is kept)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[LoraSet, tuple[dict[Any, Any], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, loras: LoraSet) -> dict[Any, Any] | None:
        with self._lock:
            found = self._items.get(loras)
            if found is None:
                return None
            self._items.move_to_end(loras)
            return found[0]

    def __contains__(self, loras: LoraSet) -> bool:
        with self._lock:
            return loras in self._items

    def put(self, loras: LoraSet, weights: dict[Any, Any]) -> None:
        size = tensor_bytes(weights.values())
        with self._lock:
            self._items[loras] = (weights, size)
            while self._items and sum(s for _, s in self._items.values()) > self.budget:
                self._items.popitem(last=False)

    def nbytes(self) -> int:
        with self._lock:
            return sum(s for _, s in self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def adapted_modules(engine: Any, names: set[str]) -> list[tuple[str, Any, str]]:
    """(reference name, module, transform to our layout) of each layer named, sorted."""
    components, sa3, differential = engine_modules(engine)
    found = []
    for name in sorted(names):
        module, transform = engine_layer(components, name, sa3, differential)
        found.append((name, module, transform))
    return found


def merged_weights(engine: Any, loras: LoraSet, load: Loader) -> dict[Any, Any]:
    """Adapted weight per module for ``loras`` on ``engine`` (in the module's dtype)."""
    import torch

    adapters = [(load(tag), strength) for tag, strength in loras]
    names = {name for adapter, _ in adapters for name in adapter.layers}
    weights: dict[Any, Any] = {}
    with torch.no_grad():
        for name, module, transform in adapted_modules(engine, names):
            base = module._parameters.get("weight")
            if base is None:
                kinds = sorted({a.config.adapter_type for a, _ in adapters})
                raise GenerationError(
                    f"{name}: this model's layer holds no float weight (int8 layers, "
                    f"STABLE_AUDIO_CPU_FAST=int8) to merge a {' / '.join(kinds)} LoRA into; "
                    "plain lora and lora-xs LoRAs are applied to it per item"
                )
            w = to_reference(base.detach().float(), transform)
            for adapter, strength in adapters:
                params = adapter.layers.get(name)
                if params is not None:
                    on_device = {k: v.to(w.device) for k, v in params.items()}
                    w = adapt(w, adapter.config, on_device, strength)
            weights[module] = to_ours(w, transform).to(device=base.device, dtype=base.dtype)
    return weights


def merged_bytes(engine: Any, loras: LoraSet, load: Loader) -> int:
    """What ``merged_weights`` of ``loras`` would hold, without building it."""
    names = {name for tag, _ in loras for name in load(tag).layers}
    return tensor_bytes(module.weight for _, module, _ in adapted_modules(engine, names))
