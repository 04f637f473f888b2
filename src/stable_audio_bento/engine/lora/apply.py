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
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...errors import GenerationError
from .adapt import adapt

if TYPE_CHECKING:
    from .stored import Adapter

LoraSet = tuple[tuple[str, float], ...]
CACHE_BYTES = 512 * 2**20


class _MergedCache:
    """Adapted weights by (model, LoRA set), least recently used out past ``budget`` bytes
    per model. Keyed weakly by the model's root module: an unloaded model's entries go with it
    (and a new model can never be served an old one's weights)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._by_model: weakref.WeakKeyDictionary[Any, OrderedDict[LoraSet, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self, root: Any, loras: LoraSet) -> dict[Any, Any] | None:
        with self._lock:
            items = self._by_model.get(root)
            if items is None or loras not in items:
                return None
            items.move_to_end(loras)
            weights: dict[Any, Any] = items[loras][0]
            return weights

    def put(self, root: Any, loras: LoraSet, weights: dict[Any, Any]) -> None:
        size = sum(t.numel() * t.element_size() for t in weights.values())
        with self._lock:
            items = self._by_model.setdefault(root, OrderedDict())
            items[loras] = (weights, size)
            while sum(s for _, s in items.values()) > self.budget and len(items) > 1:
                items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._by_model.clear()


cache = _MergedCache(CACHE_BYTES)


def merged_weights(
    engine: Any, loras: LoraSet, load: Callable[[str], Adapter] | None = None
) -> dict[Any, Any]:
    """Adapted weight per module for ``loras`` on ``engine`` (in the module's dtype).

    ``load`` reads a LoRA by tag (default: from the model store)."""
    import torch

    from .layout import engine_layer, engine_modules, to_ours, to_reference
    from .stored import load_adapter

    components, sa3, differential = engine_modules(engine)
    root = next(iter(components.values()))
    found = cache.get(root, loras)
    if found is not None:
        return found
    adapters = [((load or load_adapter)(tag), strength) for tag, strength in loras]
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
                    on_device = {k: v.to(w.device) for k, v in params.items()}
                    w = adapt(w, adapter.config, on_device, strength)
            weights[module] = to_ours(w, transform).to(device=base.device, dtype=base.dtype)
    cache.put(root, loras, weights)
    return weights


@contextmanager
def applied(
    engine: Any,
    loras: Sequence[tuple[str, float]],
    load: Callable[[str], Adapter] | None = None,
) -> Iterator[None]:
    """The engine's modules carry ``loras`` inside the block (call under its run lock)."""
    if not loras:
        yield
        return
    import torch

    weights = merged_weights(engine, tuple(loras), load)
    saved = []
    try:
        for module, weight in weights.items():
            saved.append((module, module._parameters["weight"]))
            module._parameters["weight"] = torch.nn.Parameter(weight, requires_grad=False)
        yield
    finally:
        for module, base in saved:
            module._parameters["weight"] = base
