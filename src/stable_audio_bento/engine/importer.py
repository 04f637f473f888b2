"""Put a model into the BentoML model store as one self-contained entry, whatever its family.

Sources: a Hugging Face repo id, a local directory, or a family's demo name (``demo``,
``demo-sa3``: built offline from its recipe). The family registry (``families``) says which
family takes a source; each family's ``importer`` writes its entry (``store.entries``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ImportSourceError
from . import families

# Hub repo id -> the aliases its entry answers to, over every family.
KNOWN_REPOS = families.known_repos()


def import_directory(directory: Path, name: str | None = None) -> str:
    if not directory.is_dir():
        raise ImportSourceError(f"{directory} is not a directory")
    return families.of_directory(directory).importer.import_directory(directory, name)


def import_hub(repo_id: str, name: str | None = None, token: str | None = None) -> str:
    """Download a hub repo (``HF_TOKEN`` for gated ones) in its family's way, then store it."""
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    token = token or os.environ.get("HF_TOKEN")
    try:
        info = HfApi().model_info(repo_id, token=token)
        files = {s.rfilename for s in info.siblings or []}
        config_path = Path(
            hf_hub_download(repo_id, "model_config.json", revision=info.sha, token=token)
        )
        family = families.of_config(_read_config(config_path))
        return family.importer.import_hub(repo_id, info.sha, config_path, name, token, files)
    except GatedRepoError as e:
        hint = "set HF_TOKEN" if not token else "accept the model's terms on its hub page"
        raise ImportSourceError(f"{repo_id} is gated: {hint} and try again") from e
    except RepositoryNotFoundError as e:
        raise ImportSourceError(
            f"{repo_id} was not found on the Hugging Face hub, or HF_TOKEN has no access to it"
        ) from e
    except (LocalEntryNotFoundError, httpx2.TransportError) as e:
        # No network, DNS, timeouts: huggingface_hub lets its HTTP client's errors through.
        hint = "" if token else " (gated repos also need HF_TOKEN)"
        raise ImportSourceError(
            f"cannot reach the Hugging Face hub to download {repo_id}: {e}. Check the network"
            f"{hint}, or import a local directory with the same files."
        ) from e
    except HfHubHTTPError as e:
        raise ImportSourceError(f"downloading {repo_id} failed: {e}") from e
    except OSError as e:
        raise ImportSourceError(f"downloading {repo_id} failed: {e}") from e


def _read_config(config_path: Path) -> dict[str, object]:
    try:
        config: dict[str, object] = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise ImportSourceError(f"model_config.json of the hub repo is not readable: {e}") from e
    return config


def import_source(source: str, name: str | None = None, recipe_dir: Path | None = None) -> str:
    """Dispatch on the source kind; return the store tag. A demo is built from ``recipe_dir``."""
    family = families.by_demo(source)
    if family is not None:
        if recipe_dir is None:
            raise ImportSourceError(f"the {source} source needs its recipe directory")
        return family.demos.import_demo(recipe_dir, name)
    path = Path(source).expanduser()
    if path.exists():
        return import_directory(path, name)
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return import_hub(source, name)
    raise ImportSourceError(
        f"unknown source {source!r}: give a Hugging Face repo id, a directory or "
        f"{families.DEFAULT.demo!r}"
    )
