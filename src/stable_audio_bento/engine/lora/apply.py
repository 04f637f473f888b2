"""Run an engine batch whose items ask for LoRAs, leaving the shared weights as they were.

Each request names its LoRAs (``EngineRequest.loras``: (tag, strength) pairs in stacking
order). Two ways to apply them, chosen per batch inside the engine's run lock:

- **merged** (``merge``): the adapted weights replace the base ``weight`` parameters of the
  layers the set touches for the batch, and the base ones are put back afterwards, whatever
  happens. Every adapter type; one set per batch. The adapted weights of recently used sets
  are cached within a byte budget, so switching back to a hot set costs only the swap.
- **per item** (``per_item``): plain ``lora`` / ``lora-xs`` layers add each item's delta to
  the shared layer's output, so requests with different sets (or none) share one batch and
  nothing is built or cached; each step costs two low-rank products per adapted layer.

``EngineLoras.mode`` (``STABLE_AUDIO_LORA_APPLY``): ``merged`` keys batches on the set and
always merges; ``per-item`` applies every set that can be applied per item that way (the
rest merged, batched by set); ``auto`` (the default) batches every per-item set together and
merges a batch's one set when its adapted weights are cached or fit in the cache without
evicting another set, else applies it per item (a set that would thrash the cache is never
rebuilt batch after batch).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import GenerationError
from .layout import engine_modules, place
from .merge import Loader, LoraSet, MergedCache, adapted_modules, merged_bytes, merged_weights
from .per_item import ITEM_COMPONENTS, LINEAR_TYPES, per_item, supports

MODES = ("auto", "merged", "per-item")
CACHE_MB = 512
PER_ITEM = "per-item"  # the coalescer key of every set applied per item
FACTOR_TAGS = 32  # LoRAs whose per-item factors are kept (they are rank-sized: small)


def _store_loader(tag: str) -> Any:
    from .stored import load_adapter

    return load_adapter(tag)


class EngineLoras:
    """One loaded engine's LoRA application: the policy, the merged-weight cache and the
    per-item factors. ``applied`` runs under the engine's run lock."""

    def __init__(
        self,
        engine: Any,
        mode: str = "auto",
        cache_mb: int = CACHE_MB,
        compiled: bool = False,
        load: Loader | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"LoRA mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.engine = engine
        # A compiled transformer is traced without hooks: every set is merged there.
        self.mode = "merged" if compiled else mode
        self.cache = MergedCache(cache_mb * 2**20)
        self.load: Loader = load or _store_loader
        self._factors: OrderedDict[str, Any] = OrderedDict()
        # Per LoRA tag: whether it can be applied per item, and merged, on this engine.
        self._tags: dict[str, tuple[bool, bool]] = {}
        self._lock = threading.Lock()
        self.counts = {"merged": 0, "built": 0, PER_ITEM: 0}

    # ------------------------------------------------------------------ policy
    def can_apply_per_item(self, loras: LoraSet) -> bool:
        """Whether every LoRA of the set can be applied item by item on this engine."""
        return all(self._tag(tag)[0] for tag, _ in loras)

    def can_merge(self, loras: LoraSet) -> bool:
        """Whether every layer the set adapts holds a float weight to merge into (the CPU
        fast path's int8 layers do not)."""
        return all(self._tag(tag)[1] for tag, _ in loras)

    def _tag(self, tag: str) -> tuple[bool, bool]:
        with self._lock:
            known = self._tags.get(tag)
        if known is not None:
            return known
        import torch

        adapter = self.load(tag)
        per_item_ok = adapter.config.adapter_type in LINEAR_TYPES
        merge_ok = True
        _, sa3, differential = engine_modules(self.engine)
        for name, module, _ in adapted_modules(self.engine, set(adapter.layers)):
            where = place(name, sa3, differential)
            on_items = where is not None and where.component in ITEM_COMPONENTS
            per_item_ok = per_item_ok and on_items and supports(module)
            merge_ok = merge_ok and isinstance(module._parameters.get("weight"), torch.Tensor)
        with self._lock:
            self._tags[tag] = (per_item_ok, merge_ok)
        return per_item_ok, merge_ok

    def batch_key(self, loras: LoraSet) -> Hashable:
        """What of a request's LoRA set its batch must share (part of the coalescer's key)."""
        if not self.can_apply_per_item(loras):
            return loras
        if self.mode == "merged" and self.can_merge(loras):
            return loras
        return PER_ITEM

    def merges(self, loras: LoraSet) -> bool:
        """Whether a batch whose items all ask for ``loras`` gets it merged."""
        if not self.can_apply_per_item(loras):
            return True  # the only way (``merged_weights`` says why when it cannot)
        if not self.can_merge(loras) or self.mode == PER_ITEM:
            return False
        if self.mode == "merged" or loras in self.cache:
            return True
        return self.cache.nbytes() + merged_bytes(self.engine, loras, self.load) <= (
            self.cache.budget
        )

    # ------------------------------------------------------------- application
    @contextmanager
    def applied(self, sets: Sequence[LoraSet]) -> Iterator[str]:
        """The engine's modules carry each item's LoRAs inside the block; yields how
        (``none``, ``merged`` or ``per-item``)."""
        distinct = set(sets)
        if distinct == {()}:
            yield "none"
            return
        if len(distinct) == 1 and self.merges(sets[0]):
            with self.merged(sets[0]):
                self.counts["merged"] += 1
                yield "merged"
            return
        if not all(self.can_apply_per_item(s) for s in distinct):
            raise GenerationError("a batch mixes LoRA sets that must be merged")
        with per_item(self.engine, sets, self.load, self._factor_cache(distinct)):
            self.counts[PER_ITEM] += 1
            yield PER_ITEM

    def _factor_cache(self, sets: set[LoraSet]) -> dict[str, Any]:
        """The per-item factors by tag, the batch's tags most recent; past FACTOR_TAGS the
        least recently used are dropped."""
        for tag in (t for loras in sets for t, _ in loras):
            if tag in self._factors:
                self._factors.move_to_end(tag)
        while len(self._factors) > FACTOR_TAGS:
            self._factors.popitem(last=False)
        return self._factors

    @contextmanager
    def merged(self, loras: LoraSet) -> Iterator[None]:
        """The adapted weights of ``loras`` replace the base ones inside the block."""
        import torch

        weights = self.cache.get(loras)
        if weights is None:
            weights = merged_weights(self.engine, loras, self.load)
            self.counts["built"] += 1
            self.cache.put(loras, weights)
        saved = []
        try:
            for module, weight in weights.items():
                saved.append((module, module._parameters["weight"]))
                module._parameters["weight"] = torch.nn.Parameter(weight, requires_grad=False)
            yield
        finally:
            for module, base in saved:
                module._parameters["weight"] = base

    def nbytes(self) -> int:
        """Bytes the cached merged weights hold."""
        return self.cache.nbytes()

    def clear(self) -> None:
        self.cache.clear()
        self._factors.clear()
        with self._lock:
            self._tags.clear()
