"""What a model family is: a backend name in the store and one package under ``engine/``.

A family package (``engine/sao/``, ``engine/sa3/``) holds three modules with fixed names, which
``families.py`` imports on first use (each pulls in its own heavy libraries):

- ``engine``: ``read_info(path, name, metadata)`` and ``load(path, name, metadata, options)``;
- ``importer``: ``REPOS`` (hub repo id -> aliases), ``detects_directory(directory)``,
  ``detects_config(model_config)``, ``import_directory(directory, name)`` and
  ``import_hub(repo_id, revision, config_path, name, token, files)``;
- ``demo``: ``import_demo(recipe_dir, name)``, the family's demo built offline from a recipe.

Its ``__init__.py`` says ``FAMILY = Family(...)``; ``families.py`` lists it.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from .contract import AudioEngine, LoadOptions
from .info import ModelInfo


class EngineModule(Protocol):
    def read_info(self, path: Path, name: str, metadata: dict[str, Any]) -> ModelInfo: ...

    def load(
        self, path: Path, name: str, metadata: dict[str, Any], options: LoadOptions
    ) -> AudioEngine: ...


class ImporterModule(Protocol):
    REPOS: Mapping[str, list[str]]

    def detects_directory(self, directory: Path) -> bool: ...

    def detects_config(self, config: Mapping[str, Any]) -> bool: ...

    def import_directory(self, directory: Path, name: str | None) -> str: ...

    def import_hub(
        self,
        repo_id: str,
        revision: str | None,
        config_path: Path,
        name: str | None,
        token: str | None,
        files: Collection[str],
    ) -> str: ...


class DemoModule(Protocol):
    def import_demo(self, recipe_dir: Path, name: str | None = None) -> str: ...


@dataclass(frozen=True)
class Family:
    """One model family. ``backend``: the store metadata's ``backend`` (a stored format: never
    renamed); ``package``: its package under ``engine/``; ``demo``: its demo source's name."""

    name: str
    backend: str
    package: str
    demo: str

    @property
    def engine(self) -> EngineModule:
        return cast(EngineModule, importlib.import_module(f"{self.package}.engine"))

    @property
    def importer(self) -> ImporterModule:
        return cast(ImporterModule, importlib.import_module(f"{self.package}.importer"))

    @property
    def demos(self) -> DemoModule:
        return cast(DemoModule, importlib.import_module(f"{self.package}.demo"))
