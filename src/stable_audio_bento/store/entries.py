"""Writing store entries: one self-contained BentoML model per imported model.

Every family's importer ends here: the entry's files, the family label (``catalog``) and its
metadata; an import whose content is already the newest version of that name is a no-op.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from .catalog import FAMILY_LABEL, list_entries


def content_hash(directory: Path) -> str:
    """A digest of every file under ``directory`` (names and bytes), for idempotent imports."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def save_to_store(name: str, files: Path, metadata: dict[str, Any]) -> str:
    """Copy ``files`` into a new store version, unless the newest one has the same content."""
    import bentoml

    for entry in list_entries():
        if entry.name == name and entry.metadata.get("content_sha256") == metadata.get(
            "content_sha256"
        ):
            return entry.tag
    with bentoml.models.create(
        name, labels=dict([FAMILY_LABEL]), metadata=metadata, module="stable_audio_bento"
    ) as ref:
        for item in files.iterdir():
            target = Path(ref.path) / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
    return str(ref.tag)
