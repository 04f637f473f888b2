"""Where the weight a LoRA layer adapts lives in a base entry's files (checked at import).

A Stable Audio Open entry keeps the reference's model and its names; a Stable Audio 3 entry
is in diffusers' components, placed by its layout (``engine.sa3.layout.lora_place``). The
loaded engine's side is ``engine.lora.layout``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..engine.lora.layout import place, sa3_differential, to_reference
from ..engine.sa3 import SA3_BACKEND
from ..engine.sa3.layout import LORA_FILES
from ..store.catalog import ModelEntry


def is_sa3(entry: ModelEntry) -> bool:
    return entry.metadata.get("backend") == SA3_BACKEND


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
        return self.entry.path / LORA_FILES[component]

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
