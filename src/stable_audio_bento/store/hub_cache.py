"""Serve the T5 text encoder from the model store, never from the Hugging Face hub.

stable-audio-tools' ``T5Conditioner`` loads its encoder by hub name (``t5-base``) and accepts
only names from its own list. Rather than patching the library, each process gets a private,
offline Hugging Face cache whose ``models--<name>`` snapshot links to the encoder files of the
store entry being loaded. huggingface_hub reads ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` once, at
import, so ``prepare_offline_hub`` must run before anything imports it.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import ModelLoadError

_MARKER = "STABLE_AUDIO_BENTO_HF_CACHE"
_lock = threading.Lock()


def prepare_offline_hub() -> Path:
    """Point huggingface_hub at a private offline cache; return that cache's directory."""
    with _lock:
        cache = os.environ.get(_MARKER)
        if cache is None:
            if "huggingface_hub" in sys.modules:
                raise ModelLoadError(
                    "huggingface_hub was imported before the offline model cache was set up; "
                    "call stable_audio_bento.store.hub_cache.prepare_offline_hub() first"
                )
            cache = tempfile.mkdtemp(prefix="stable-audio-bento-hf-")
            # Only links live there; child processes inherit it and end before their parent.
            atexit.register(shutil.rmtree, cache, ignore_errors=True)
            os.environ[_MARKER] = cache
            os.environ["HF_HUB_CACHE"] = cache
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE or Path(constants.HF_HUB_CACHE) != Path(cache):
        raise ModelLoadError(
            "huggingface_hub was imported with other settings before the offline model cache "
            f"was set up (HF_HUB_CACHE={constants.HF_HUB_CACHE}, "
            f"HF_HUB_OFFLINE={constants.HF_HUB_OFFLINE})"
        )
    return Path(cache)


def link_text_encoder(cache: Path, hub_name: str, files_dir: Path) -> None:
    """Make ``hub_name`` resolve to the files in ``files_dir`` for the next ``from_pretrained``.

    Call under the model-load lock: the ``refs/main`` pointer is shared by every entry that uses
    the same hub name.
    """
    if not files_dir.is_dir():
        raise ModelLoadError(f"text encoder files missing: {files_dir}")
    repo = cache / ("models--" + hub_name.replace("/", "--"))
    revision = hashlib.sha1(str(files_dir.resolve()).encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for source in files_dir.iterdir():
        target = snapshot / source.name
        if not target.exists():
            target.symlink_to(source.resolve())
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
