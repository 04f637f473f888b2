"""Put a Stable Audio model into the BentoML model store as one self-contained entry.

A Stable Audio Open entry holds ``model_config.json``, ``model.safetensors`` and
``text_encoder/`` (the T5 weights and tokenizer), with metadata describing what the model can
do. A Stable Audio 3 entry is in diffusers' layout (``sa3_import``). Sources: a Hugging Face
repo id, a local directory (either family; SA3 in the hub's or in diffusers' layout), or
``demo`` (built offline from a recipe).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ImportSourceError
from ..store.catalog import FAMILY_LABEL, list_entries
from . import ModelInfo

KNOWN_REPOS = {
    "stabilityai/stable-audio-open-1.0": ["open-1.0", "stable-audio-open"],
    "stabilityai/stable-audio-open-small": ["open-small", "small"],
    # Stable Audio 3: "small-sfx", "stable-audio-3-small-sfx" (and the repo id), ...
    **{
        f"stabilityai/stable-audio-3-{variant}{base}": [
            f"{variant}{base}",
            f"stable-audio-3-{variant}{base}",
        ]
        for variant in ("small-sfx", "small-music", "medium")
        for base in ("", "-base")
    },
}
TEXT_ENCODER_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
]
# The hub repo of the T5 encoders that stable-audio-tools asks for by short name.
T5_REPOS = {"t5-small": "google-t5/t5-small", "t5-base": "google-t5/t5-base"}


def content_hash(directory: Path) -> str:
    """A digest of every file under ``directory`` (names and bytes), for idempotent imports."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def build_metadata(
    name: str, files: Path, source: str, revision: str | None, aliases: list[str]
) -> dict[str, Any]:
    config = json.loads((files / "model_config.json").read_text())
    info = ModelInfo.from_config(name, config)
    return {
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "max_seconds": round(info.window_seconds, 3),
        "sample_size": info.sample_size,
        "objective": info.objective,
        "steps": info.default_steps,
        "cfg_scale": info.default_cfg_scale,
        "sampler": info.default_sampler,
        "source": source,
        "revision": revision or "",
        "aliases": aliases,
        "content_sha256": content_hash(files),
    }


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


def check_layout(files: Path) -> None:
    """Require the entry layout; convert a ``model.ckpt`` to safetensors in place."""
    if not (files / "model_config.json").is_file():
        raise ImportSourceError(f"{files}: model_config.json is missing")
    if not (files / "model.safetensors").is_file():
        ckpt = files / "model.ckpt"
        if not ckpt.is_file():
            raise ImportSourceError(f"{files}: neither model.safetensors nor model.ckpt found")
        _convert_ckpt(ckpt, files / "model.safetensors")
        ckpt.unlink()
    encoder = files / "text_encoder"
    if not (encoder / "config.json").is_file():
        raise ImportSourceError(
            f"{files}: text_encoder/ with the T5 weights and tokenizer is missing"
        )


def _convert_ckpt(ckpt: Path, target: Path) -> None:
    from safetensors.torch import save_file
    from stable_audio_tools.models.utils import load_ckpt_state_dict

    state = load_ckpt_state_dict(str(ckpt))
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))


def import_demo(recipe_dir: Path, name: str | None = None) -> str:
    from .sao.demo import build_demo

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        recipe = build_demo(recipe_dir, files)
        name = name or recipe["name"]
        metadata = build_metadata(name, files, "demo", None, list(recipe["aliases"]))
        metadata.update(recipe["sampling"])
        metadata["description"] = recipe["description"]
        return save_to_store(name, files, metadata)


def is_sa3_directory(directory: Path) -> bool:
    """Stable Audio 3 in diffusers' layout, or in the hub's (its model_config.json says so)."""
    from .sa3.layout import is_sa3_config

    if (directory / "model_index.json").is_file():
        return True
    try:
        return is_sa3_config(json.loads((directory / "model_config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return False  # check_layout names what is wrong


def import_directory(directory: Path, name: str | None = None) -> str:
    if not directory.is_dir():
        raise ImportSourceError(f"{directory} is not a directory")
    if is_sa3_directory(directory):
        from .sa3.importer import import_sa3_directory

        return import_sa3_directory(directory, name)
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "entry"
        shutil.copytree(directory, files, symlinks=False)
        check_layout(files)
        name = name or directory.resolve().name
        metadata = build_metadata(name, files, str(directory.resolve()), None, [])
        return save_to_store(name, files, metadata)


def import_hub(repo_id: str, name: str | None = None, token: str | None = None) -> str:
    """Download a hub repo (``HF_TOKEN`` for gated ones) with its T5 encoder, then store it."""
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
        weights = "model.safetensors" if "model.safetensors" in files else "model.ckpt"
        config_path = Path(
            hf_hub_download(repo_id, "model_config.json", revision=info.sha, token=token)
        )
        if _is_sa3_file(config_path):
            from .sa3.importer import import_sa3_hub

            return import_sa3_hub(repo_id, info.sha, config_path, name, token)
        with tempfile.TemporaryDirectory() as tmp:
            entry = Path(tmp) / "entry"
            entry.mkdir()
            shutil.copy(config_path, entry / "model_config.json")
            shutil.copy(
                hf_hub_download(repo_id, weights, revision=info.sha, token=token), entry / weights
            )
            config = json.loads((entry / "model_config.json").read_text())
            _download_text_encoders(config, entry / "text_encoder", token)
            check_layout(entry)
            name = name or repo_id.split("/")[-1]
            aliases = [repo_id, *KNOWN_REPOS.get(repo_id, [])]
            metadata = build_metadata(name, entry, repo_id, info.sha, aliases)
            return save_to_store(name, entry, metadata)
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


def _is_sa3_file(config_path: Path) -> bool:
    from .sa3.layout import is_sa3_config

    try:
        return is_sa3_config(json.loads(config_path.read_text()))
    except (OSError, ValueError) as e:
        raise ImportSourceError(f"model_config.json of the hub repo is not readable: {e}") from e


def _download_text_encoders(config: dict[str, Any], target: Path, token: str | None) -> None:
    from huggingface_hub import snapshot_download

    names = [
        c["config"].get("t5_model_name", "t5-base")
        for c in config["model"]["conditioning"]["configs"]
        if c["type"] == "t5"
    ]
    if not names:
        target.mkdir()
        return
    repo = T5_REPOS.get(names[0], names[0])
    path = snapshot_download(repo, allow_patterns=TEXT_ENCODER_FILES, token=token)
    shutil.copytree(path, target)


def import_source(source: str, name: str | None = None, recipe_dir: Path | None = None) -> str:
    """Dispatch on the source kind; return the store tag."""
    if source == "demo":
        if recipe_dir is None:
            raise ImportSourceError("the demo source needs its recipe directory")
        return import_demo(recipe_dir, name)
    path = Path(source).expanduser()
    if path.exists():
        return import_directory(path, name)
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return import_hub(source, name)
    raise ImportSourceError(
        f"unknown source {source!r}: give a Hugging Face repo id, a directory or 'demo'"
    )
