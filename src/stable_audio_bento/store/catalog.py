"""The Stable Audio entries of the BentoML model store, and the names they answer to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError

FAMILY_LABEL = ("family", "stable-audio")


@dataclass(frozen=True)
class ModelEntry:
    """One store entry: ``name:version`` with its files and metadata."""

    name: str
    version: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0  # import time (POSIX seconds): the older entry keeps a shared alias

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("aliases", ()))

    def describe(self) -> dict[str, Any]:
        """The public description used by /health and the model list."""
        keys = ("sample_rate", "channels", "max_seconds", "objective", "steps", "cfg_scale")
        return {
            "name": self.name,
            "tag": self.tag,
            "aliases": list(self.aliases),
            "source": self.metadata.get("source"),
            **{k: self.metadata.get(k) for k in keys},
            "sampler": self.metadata.get("sampler"),
        }


def list_entries() -> list[ModelEntry]:
    """The newest version of every Stable Audio model in the store, by name."""
    import bentoml

    newest: dict[str, Any] = {}
    for model in bentoml.models.list():
        if model.info.labels.get(FAMILY_LABEL[0]) != FAMILY_LABEL[1]:
            continue
        name = model.tag.name
        if name not in newest or model.creation_time > newest[name].creation_time:
            newest[name] = model
    return [
        ModelEntry(
            name=m.tag.name,
            version=str(m.tag.version),
            path=Path(m.path),
            metadata=dict(m.info.metadata),
            created=m.creation_time.timestamp(),
        )
        for m in sorted(newest.values(), key=lambda m: m.tag.name)
    ]


class ModelCatalog:
    """Resolves a request's model string (store name, tag, alias, repo id) to an entry.

    Store names and tags come first; an alias two entries claim (a second copy of the demo
    imported under another name, say) stays with the entry imported first, so importing a model
    never moves a name that clients already use. ``extra_aliases`` (alias -> any name of an
    entry) adds server-configured names; a name an entry already answers to is never taken over.
    """

    def __init__(
        self, entries: list[ModelEntry], extra_aliases: Mapping[str, str] | None = None
    ) -> None:
        self.entries = entries
        self._names: dict[str, ModelEntry] = {}
        for entry in entries:
            for key in (entry.name, entry.tag):
                self._names.setdefault(key.lower(), entry)
        for entry in sorted(entries, key=lambda e: e.created):
            for key in entry.aliases:
                self._names.setdefault(key.lower(), entry)
        for alias, target in (extra_aliases or {}).items():
            found = self._names.get(target.strip().lower())
            if found is not None:
                self._names.setdefault(alias.strip().lower(), found)

    @classmethod
    def from_store(cls, extra_aliases: Mapping[str, str] | None = None) -> ModelCatalog:
        return cls(list_entries(), extra_aliases)

    def aliases_of(self, entry: ModelEntry) -> list[str]:
        """Every alias ``entry`` answers to, its own and the server's."""
        own = {entry.name.lower(), entry.tag.lower()}
        return [k for k, e in self._names.items() if e is entry and k not in own]

    def resolve(self, model: str) -> ModelEntry:
        """The entry ``model`` names: a name, ``name:version``, an alias, a repo id.

        ``NAME:latest`` is NAME (the store keeps the newest version of each model), and
        ``ALIAS:VERSION`` is the aliased entry when VERSION is its version, as BentoML tags go.
        """
        key = model.strip().lower()
        entry = self._names.get(key)
        if entry is None and ":" in key:
            name, _, version = key.rpartition(":")
            found = self._names.get(name)
            if found is not None and version in ("latest", found.version.lower()):
                entry = found
        if entry is None:
            raise ModelNotFoundError(model)
        return entry

    def names(self) -> list[str]:
        return [e.name for e in self.entries]
