"""The registry of model families: adding a family is its package plus one line in FAMILIES.

Import detection, loading (by the store entry's ``backend``) and the demo names all read it;
nothing else branches on the family.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from . import sa3, sao
from .family import Family

# In detection order: the first family whose importer recognises a source takes it. Stable
# Audio Open is last: it takes every other stable-audio-tools checkpoint (and names what is
# missing when a directory is none).
FAMILIES: tuple[Family, ...] = (sa3.FAMILY, sao.FAMILY)
# Store entries that predate the ``backend`` key are Stable Audio Open entries.
DEFAULT = sao.FAMILY


def by_backend(metadata: Mapping[str, Any]) -> Family:
    """The family a store entry's metadata names."""
    name = str(metadata.get("backend", DEFAULT.backend))
    for family in FAMILIES:
        if family.backend == name:
            return family
    known = ", ".join(f.backend for f in FAMILIES)
    raise ModelLoadError(f"unknown backend {name!r}; expected one of {known}")


def of_directory(directory: Path) -> Family:
    """The family a local model directory is in."""
    return next(f for f in FAMILIES if f.importer.detects_directory(directory))


def of_config(config: Mapping[str, Any]) -> Family:
    """The family a hub repo's ``model_config.json`` describes."""
    return next(f for f in FAMILIES if f.importer.detects_config(config))


def by_demo(source: str) -> Family | None:
    """The family whose demo is named ``source`` ("demo", "demo-sa3"), if any."""
    return next((f for f in FAMILIES if f.demo == source), None)


def demo_names() -> list[str]:
    return [f.demo for f in FAMILIES]


def known_repos() -> dict[str, list[str]]:
    """Hub repo id -> the aliases its entry gets, over every family."""
    return {repo: list(a) for f in FAMILIES for repo, a in f.importer.REPOS.items()}
