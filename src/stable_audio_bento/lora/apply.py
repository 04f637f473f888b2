"""Run an engine batch with a set of LoRAs, leaving the shared weights as they were.

A batch's LoRA set (``SamplingParams.loras``: (tag, strength) pairs, in stacking order) is
part of the coalescer's key, so one batch has one set. Inside the engine's run lock the
adapted weights replace the base ``weight`` parameters of the layers the set touches and the
base parameters are put back afterwards, whatever happens; nothing else runs on the engine
meanwhile. The adapted weights of recently used sets are kept (least recently used first out)
within ``CACHE_BYTES``, so switching back to a hot set costs only the swap.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import GenerationError
from .adapt import adapt

LoraSet = tuple[tuple[str, float], ...]
CACHE_BYTES = 512 * 2**20


class _MergedCache:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[tuple[int, LoraSet], tuple[dict[Any, Any], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, LoraSet]) -> dict[Any, Any] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple[int, LoraSet], weights: dict[Any, Any]) -> None:
        size = sum(t.numel() * t.element_size() for t in weights.values())
        with self._lock:
            self._items[key] = (weights, size)
            while sum(s for _, s in self._items.values()) > self.budget and len(self._items) > 1:
                self._items.popitem(last=False)

    def drop(self, engine_id: int) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == engine_id]:
                del self._items[key]


cache = _MergedCache(CACHE_BYTES)


def merged_weights(engine: Any, loras: LoraSet) -> dict[Any, Any]:
    """Adapted weight per module for ``loras`` on ``engine`` (in the module's dtype)."""
    import torch

    from .layout import engine_layer, engine_modules, to_ours, to_reference
    from .store import load_adapter

    key = (id(engine), loras)
    found = cache.get(key)
    if found is not None:
        return found
    components, sa3, differential = engine_modules(engine)
    adapters = [(load_adapter(tag), strength) for tag, strength in loras]
    names = sorted({name for adapter, _ in adapters for name in adapter.layers})
    weights: dict[Any, Any] = {}
    with torch.no_grad():
        for name in names:
            module, transform = engine_layer(components, name, sa3, differential)
            base = module._parameters.get("weight")
            if base is None:
                raise GenerationError(f"{name}: the loaded model has no plain weight to adapt")
            w = to_reference(base.detach().float(), transform)
            for adapter, strength in adapters:
                params = adapter.layers.get(name)
                if params is not None:
                    w = adapt(w, adapter.config, params, strength)
            weights[module] = to_ours(w, transform).to(device=base.device, dtype=base.dtype)
    cache.put(key, weights)
    return weights


@contextmanager
def applied(engine: Any, loras: Sequence[tuple[str, float]]) -> Iterator[None]:
    """The engine's modules carry ``loras`` inside the block (call under its run lock)."""
    if not loras:
        yield
        return
    import torch

    weights = merged_weights(engine, tuple(loras))
    saved = []
    try:
        for module, weight in weights.items():
            saved.append((module, module._parameters["weight"]))
            module._parameters["weight"] = torch.nn.Parameter(weight, requires_grad=False)
        yield
    finally:
        for module, base in saved:
            module._parameters["weight"] = base
