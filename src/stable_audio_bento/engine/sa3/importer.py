"""Stable Audio 3 store entries: from the hub, or from a local directory in either layout.

An SA3 entry is ONE directory in diffusers' ``StableAudio3Pipeline.save_pretrained`` layout
(``convert``), with store metadata ``backend: diffusers-sa3`` and the model card's
defaults: distilled models 8 steps, cfg 1, ping-pong and no negative prompt; ``-base``
models real CFG and a negative prompt. Limits: 120 s for the small models, 380 s for medium.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ...errors import ImportSourceError
from ...store.entries import content_hash, save_to_store
from . import SA3_BACKEND
from .convert import (
    TOKENIZER_FILES,
    SA3Facts,
    checkpoint_has_text_encoder,
    convert_hub_dir,
    copy_diffusers_dir,
)
from .layout import is_sa3_config, read_config

SA3_VARIANTS = ("small-sfx", "small-music", "medium")
# repo id -> aliases (besides the repo id itself): "small-sfx", "stable-audio-3-small-sfx", ...
SA3_REPOS = {
    f"stabilityai/stable-audio-3-{variant}{base}": [
        f"{variant}{base}",
        f"stable-audio-3-{variant}{base}",
    ]
    for variant in SA3_VARIANTS
    for base in ("", "-base")
}
# The longest request each family is made for (the reference's limits).
FAMILY_LIMITS = {"small": 120.0, "medium": 380.0}
# (BentoML metadata holds no None: a distilled model's entry has no negative_prompt key.)
CARD_DEFAULTS: dict[bool, dict[str, Any]] = {
    True: {"steps": 8, "cfg_scale": 1.0, "sampler": "pingpong"},
    False: {"steps": 50, "cfg_scale": 7.0, "sampler": "euler", "negative_prompt": "poor quality"},
}
TEXT_ENCODER_CONFIG = "config.json"
TEXT_ENCODER_WEIGHTS = "model.safetensors"


def is_diffusers_layout(directory: Path) -> bool:
    return (directory / "model_index.json").is_file()


def family_limit(*names: str) -> float | None:
    for name in names:
        match = re.search(r"\b(small|medium)\b", name.lower().replace("-", " "))
        if match:
            return FAMILY_LIMITS[match.group(1)]
    return None


def sa3_metadata(
    name: str,
    files: Path,
    facts: SA3Facts,
    *,
    source: str,
    revision: str | None,
    aliases: list[str],
) -> dict[str, Any]:
    limit = family_limit(source.rsplit("/", 1)[-1], name) or facts.seconds_max
    return {
        "backend": SA3_BACKEND,
        "sample_rate": facts.sample_rate,
        "channels": facts.channels,
        "max_seconds": round(min(limit, facts.seconds_max), 3),
        "objective": facts.objective,
        "distilled": facts.distilled,
        "latent_downsampling": facts.latent_downsampling,
        "prompt_max_length": facts.prompt_max_length,
        # diffusers' DiT builds its block RMS norms with eps 1e-6; the reference's is this.
        "dit_norm_eps": facts.dit_norm_eps,
        # The reference's schedule settings, when its config has them (engine: same schedule).
        **facts.sampling,
        **CARD_DEFAULTS[facts.distilled],
        "source": source,
        "revision": revision or "",
        "aliases": aliases,
        "content_sha256": content_hash(files),
    }


def import_sa3_directory(directory: Path, name: str | None = None) -> str:
    """A local directory in the hub's layout (converted) or in diffusers' (copied)."""
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "entry"
        if is_diffusers_layout(directory):
            facts = copy_diffusers_dir(directory, entry)
        else:
            facts = convert_hub_dir(directory, entry)
        name = name or directory.resolve().name
        metadata = sa3_metadata(
            name, entry, facts, source=str(directory.resolve()), revision=None, aliases=[]
        )
        return save_to_store(name, entry, metadata)


def import_sa3_hub(
    repo_id: str,
    revision: str | None,
    config_path: Path,
    name: str | None,
    token: str | None,
) -> str:
    """Download the rest of an SA3 hub repo (weights, T5Gemma), convert, store.

    Everything comes from one commit (``revision``, resolved by the caller). T5Gemma comes from
    where the prompt conditioner says: the released repos name a subfolder of themselves
    (``t5gemma-b-b-ul2/``: config, tokenizer, and the encoder-decoder weights, read only when
    the checkpoint lacks the encoder); older configs another repo (``google/t5gemma-b-b-ul2``,
    its config and tokenizer, pinned to its current commit). Call inside
    ``engine.importer.import_hub``'s error mapping: hub errors become one clear line.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    sa3 = read_config(json.loads(config_path.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "hub"
        source.mkdir()
        shutil.copy(config_path, source / "model_config.json")
        # hf_hub_download shows a progress bar per file.
        weights = hf_hub_download(repo_id, "model.safetensors", revision=revision, token=token)
        (source / "model.safetensors").symlink_to(Path(weights).resolve())
        need_weights = not checkpoint_has_text_encoder(source / "model.safetensors")
        sub = sa3.text_encoder_subfolder
        where = f"{repo_id}/{sub}" if sub else sa3.text_encoder_repo
        try:
            if sub and not _download_subfolder(
                repo_id, revision, sub, source / sub, token, need_weights
            ):
                # A config copied from another repo: its subfolder, at that repo's commit.
                where = f"{sa3.text_encoder_repo}/{sub}"
                if not _download_subfolder(
                    sa3.text_encoder_repo, None, sub, source / sub, token, need_weights
                ):
                    raise ImportSourceError(
                        f"{repo_id}: the T5Gemma subfolder {sub}/ is not in {repo_id} nor in "
                        f"{sa3.text_encoder_repo}"
                    )
            elif not sub:
                _download_text_encoder(
                    sa3.text_encoder_repo, source / "text_encoder", token, need_weights
                )
        except GatedRepoError as e:
            hint = "set HF_TOKEN" if not token else "accept its terms on its hub page"
            raise ImportSourceError(
                f"{where} (the T5Gemma text encoder of {repo_id}) is gated: {hint} and try again"
            ) from e
        entry = Path(tmp) / "entry"
        facts = convert_hub_dir(source, entry)
        name = name or repo_id.split("/")[-1]
        aliases = [repo_id, *SA3_REPOS.get(repo_id, [])]
        metadata = sa3_metadata(
            name, entry, facts, source=repo_id, revision=revision, aliases=aliases
        )
        return save_to_store(name, entry, metadata)


def _download_subfolder(
    repo: str, revision: str | None, sub: str, target: Path, token: str | None, weights: bool
) -> bool:
    """T5Gemma's config, tokenizer files (and weights when ``weights``) from ``repo``'s
    subfolder ``sub`` into ``target``; False when the repo has no such subfolder."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    api = HfApi()
    revision = revision or api.model_info(repo, token=token).sha
    try:
        tree = api.list_repo_tree(repo, path_in_repo=sub, revision=revision, token=token)
        files = {getattr(item, "path", "").removeprefix(sub + "/") for item in tree}
    except (EntryNotFoundError, RevisionNotFoundError):
        return False
    if not files:
        return False
    wanted = [TEXT_ENCODER_CONFIG, *[f for f in TOKENIZER_FILES if f in files]]
    if weights:
        wanted.append(TEXT_ENCODER_WEIGHTS)
    missing = [f for f in wanted if f not in files]
    if missing or len(wanted) == 1 + weights:
        raise ImportSourceError(
            f"{repo}/{sub}: the T5Gemma {', '.join(missing) or 'tokenizer files'} missing"
        )
    target.mkdir(parents=True, exist_ok=True)
    for filename in wanted:
        path = hf_hub_download(repo, filename, subfolder=sub, revision=revision, token=token)
        (target / filename).symlink_to(Path(path).resolve())
    return True


def _download_text_encoder(repo: str, target: Path, token: str | None, weights: bool) -> None:
    """The T5Gemma config and the Gemma tokenizer files (and weights) of another repo, at its
    current commit."""
    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi().model_info(repo, token=token)
    files = {s.rfilename for s in info.siblings or []}
    wanted = [TEXT_ENCODER_CONFIG, *[f for f in TOKENIZER_FILES if f in files]]
    if TEXT_ENCODER_CONFIG not in files or len(wanted) == 1:
        raise ImportSourceError(f"{repo}: the T5Gemma config or the tokenizer files are missing")
    if weights:
        wanted.append(TEXT_ENCODER_WEIGHTS)
    target.mkdir(parents=True, exist_ok=True)
    for filename in wanted:
        path = hf_hub_download(repo, filename, revision=info.sha, token=token)
        (target / filename).symlink_to(Path(path).resolve())


# The family's importer, as the registry (``engine.families``) calls it.
REPOS = SA3_REPOS


def detects_directory(directory: Path) -> bool:
    """Stable Audio 3 in diffusers' layout, or in the hub's (its model_config.json says so)."""
    if is_diffusers_layout(directory):
        return True
    try:
        return is_sa3_config(json.loads((directory / "model_config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return False  # another family's importer names what is wrong


def detects_config(config: Mapping[str, Any]) -> bool:
    return is_sa3_config(config)


def import_directory(directory: Path, name: str | None = None) -> str:
    return import_sa3_directory(directory, name)


def import_hub(
    repo_id: str,
    revision: str | None,
    config_path: Path,
    name: str | None,
    token: str | None,
    files: Collection[str],
) -> str:
    return import_sa3_hub(repo_id, revision, config_path, name, token)
