"""Stable Audio Open store entries: from the hub, or from a local directory.

An entry holds ``model_config.json``, ``model.safetensors`` and ``text_encoder/`` (the T5
weights and tokenizer), with metadata describing what the model can do (``build_metadata``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ...errors import ImportSourceError
from ...store.entries import content_hash, save_to_store
from .config import info_from_config

# Hub repo id -> the aliases its entry answers to (besides the repo id).
REPOS = {
    "stabilityai/stable-audio-open-1.0": ["open-1.0", "stable-audio-open"],
    "stabilityai/stable-audio-open-small": ["open-small", "small"],
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


def build_metadata(
    name: str, files: Path, source: str, revision: str | None, aliases: list[str]
) -> dict[str, Any]:
    config = json.loads((files / "model_config.json").read_text())
    info = info_from_config(name, config)
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


def detects_directory(directory: Path) -> bool:
    """Every directory no other family takes (``check_layout`` names what is missing)."""
    return True


def detects_config(config: Mapping[str, Any]) -> bool:
    """Every stable-audio-tools ``model_config.json`` no other family takes."""
    return True


def import_directory(directory: Path, name: str | None = None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "entry"
        shutil.copytree(directory, files, symlinks=False)
        check_layout(files)
        name = name or directory.resolve().name
        metadata = build_metadata(name, files, str(directory.resolve()), None, [])
        return save_to_store(name, files, metadata)


def import_hub(
    repo_id: str,
    revision: str | None,
    config_path: Path,
    name: str | None,
    token: str | None,
    files: Collection[str],
) -> str:
    """The weights and the T5 encoder of a hub repo whose ``model_config.json`` is downloaded.

    Call inside ``engine.importer.import_hub``'s error mapping: hub errors become one line.
    """
    from huggingface_hub import hf_hub_download

    weights = "model.safetensors" if "model.safetensors" in files else "model.ckpt"
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "entry"
        entry.mkdir()
        shutil.copy(config_path, entry / "model_config.json")
        shutil.copy(
            hf_hub_download(repo_id, weights, revision=revision, token=token), entry / weights
        )
        config = json.loads((entry / "model_config.json").read_text())
        _download_text_encoders(config, entry / "text_encoder", token)
        check_layout(entry)
        name = name or repo_id.split("/")[-1]
        aliases = [repo_id, *REPOS.get(repo_id, [])]
        metadata = build_metadata(name, entry, repo_id, revision, aliases)
        return save_to_store(name, entry, metadata)


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
