"""Every Stable Audio model in the store, loaded on first use and evicted least-recently-used.

Concurrent first requests for a model load it once. A model in use is never evicted. Each
loaded model gets its own request coalescer (``Batcher``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from ..engine import AudioEngine, load_engine
from ..errors import ModelNotFoundError
from ..settings import Settings
from ..store.catalog import ModelCatalog, ModelEntry
from .batching import Batcher

log = logging.getLogger(__name__)

EngineLoader = Callable[[ModelEntry, Settings], AudioEngine]


@dataclass
class LoadedModel:
    entry: ModelEntry
    engine: AudioEngine
    batcher: Batcher
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)


class ModelRegistry:
    """Names -> loaded engines, within ``max_loaded_models``."""

    def __init__(
        self,
        settings: Settings,
        catalog: ModelCatalog | None = None,
        loader: EngineLoader = load_engine,
    ) -> None:
        self.settings = settings
        self._catalog = catalog
        self._loader = loader
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.preloaded: list[str] = []

    # ----------------------------------------------------------------- catalog
    @property
    def catalog(self) -> ModelCatalog:
        if self._catalog is None:
            self._catalog = ModelCatalog.from_store(self.settings.model_aliases)
        return self._catalog

    def resolve(self, model: str | None) -> ModelEntry:
        """The store entry for a request's model string (None: the default model)."""
        name = model or self.settings.default_model
        try:
            return self.catalog.resolve(name)
        except ModelNotFoundError:
            # A model imported after the server started is found on the next look.
            self._catalog = ModelCatalog.from_store(self.settings.model_aliases)
            return self._catalog.resolve(name)

    # ----------------------------------------------------------------- loading
    def preload(self) -> None:
        for name in self.settings.preload:
            entry = self.resolve(name)
            with self.use(entry.name):
                pass
            self.preloaded.append(entry.name)

    @contextmanager
    def use(self, model: str | None) -> Iterator[LoadedModel]:
        """Borrow a loaded model (loading it if needed); it is not evicted while borrowed."""
        loaded = self._acquire(self.resolve(model))
        try:
            yield loaded
        finally:
            with self._lock:
                loaded.in_use -= 1
                loaded.last_used = time.monotonic()

    def _acquire(self, entry: ModelEntry) -> LoadedModel:
        with self._lock:
            loaded = self._loaded.get(entry.name)
            if loaded is not None:
                loaded.in_use += 1
                self._loaded.move_to_end(entry.name)
                return loaded
            gate = self._loading.setdefault(entry.name, threading.Lock())
        with gate:
            with self._lock:
                loaded = self._loaded.get(entry.name)
                if loaded is not None:
                    loaded.in_use += 1
                    return loaded
            engine = self._loader(entry, self.settings)
            batcher = Batcher(
                engine,
                max_batch_size=self.settings.max_batch_size,
                max_wait=self.settings.batch_wait_ms / 1000,
                budget_seconds=self.settings.batch_budget_seconds,
            )
            loaded = LoadedModel(entry, engine, batcher, in_use=1)
            with self._lock:
                self._loaded[entry.name] = loaded
                victims = self._evictable()
            for victim in victims:
                log.info("unloading %s (least recently used)", victim.entry.name)
                victim.batcher.close()
                victim.engine.unload()
            return loaded

    def _evictable(self) -> list[LoadedModel]:
        """Pop least-recently-used idle models beyond the count or memory bound (lock held)."""
        budget = self.settings.model_memory_budget_mb * 2**20 or float("inf")

        def over() -> bool:
            # Live: a model's cached LoRA weights count as they grow.
            total = sum(m.engine.nbytes() for m in self._loaded.values())
            return len(self._loaded) > self.settings.max_loaded_models or total > budget

        victims = []
        for name, loaded in list(self._loaded.items()):
            if not over():
                break
            if loaded.in_use == 0:
                victims.append(self._loaded.pop(name))
        return victims

    def close(self) -> None:
        with self._lock:
            loaded = list(self._loaded.values())
            self._loaded.clear()
        for item in loaded:
            item.batcher.close()
            item.engine.unload()

    # ----------------------------------------------------------------- status
    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def describe(self) -> dict[str, Any]:
        """Model section of /health."""
        default = None
        with suppress(ModelNotFoundError):
            default = self.resolve(None).name
        return {
            "default_model": default,
            "available_models": [
                {**e.describe(), "aliases": self.catalog.aliases_of(e)}
                for e in self.catalog.entries
            ],
            "preloaded_models": list(self.preloaded),
            "loaded_models": self.loaded_names(),
        }
