"""LoRA entries of the BentoML model store: imported against a base, listed, loaded.

An entry holds ``adapter.safetensors`` (the file's tensors, float32, per layer; for ``-xs``
types also the SVD bases ``U`` / ``V`` of the base's weights, computed at import as the
reference computes them when it is given no bases file) and metadata: the base's name and tag,
adapter type, rank, alpha, filters, layer count, size and source.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.lora.files import LoraConfig, expected_shapes, hub_weight_name, read_lora
from ..engine.lora.stored import ADAPTER_FILE, LORA_LABEL
from ..errors import ImportSourceError, InvalidRequestError, ModelNotFoundError
from ..store.catalog import ModelCatalog, ModelEntry, list_entries


class LoraNotFoundError(ModelNotFoundError):
    """A request names a LoRA that is not in the store."""

    field = "loras"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.args = (f"The LoRA `{name}` does not exist.",)


@dataclass(frozen=True)
class LoraEntry:
    name: str
    version: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def base(self) -> str:
        return str(self.metadata.get("base", ""))

    def describe(self) -> dict[str, Any]:
        keys = ("base", "adapter_type", "rank", "alpha", "include", "exclude", "layers")
        return {
            "name": self.name,
            "tag": self.tag,
            **{k: self.metadata.get(k) for k in keys},
            "size_bytes": self.metadata.get("size_bytes"),
            "source": self.metadata.get("source"),
        }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate(path: Path, base: ModelEntry) -> tuple[LoraConfig, dict[str, dict[str, Any]]]:
    """Read ``path`` and check every layer against ``base``; the tensors by reference weight
    name (with SVD bases for ``-xs`` types). Raises ImportSourceError with one clear line."""
    from ..engine.lora.adapt import svd_bases
    from .layout import EntryWeights

    lora = read_lora(path)
    weights = EntryWeights(base)
    layers: dict[str, dict[str, Any]] = {}
    for layer, params in sorted(lora.layers.items()):
        hub_name = hub_weight_name(layer)
        shape = weights.shape(hub_name)
        if shape is None:
            raise ImportSourceError(
                f"{path}: layer {layer} is not in {base.name} (is the LoRA for another base?)"
            )
        if len(shape) not in (2, 3):
            raise ImportSourceError(
                f"{path}: layer {layer} of {base.name} is not a Linear or Conv1d weight"
            )
        for param, want in expected_shapes(lora.config, shape).items():
            got = tuple(params[param].shape)
            if got != want:
                raise ImportSourceError(
                    f"{path}: {layer}.{param} has shape {list(got)}, {base.name}'s "
                    f"{list(shape)} weight needs {list(want)} (is the LoRA for another base?)"
                )
        tensors = dict(params)
        if lora.config.xs:
            if min(shape[0], _fan_in(shape)) < lora.config.rank:
                raise ImportSourceError(
                    f"{path}: rank {lora.config.rank} is larger than {layer}'s SVD basis"
                )
            tensors["U"], tensors["V"] = svd_bases(weights.weight(hub_name), lora.config.rank)
        layers[hub_name] = tensors
    return lora.config, layers


def _fan_in(shape: tuple[int, ...]) -> int:
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    return fan_in


def _save(layers: dict[str, dict[str, Any]], target: Path) -> None:
    from safetensors.torch import save_file

    flat = {
        f"{name}::{param}": t.contiguous() for name, ps in layers.items() for param, t in ps.items()
    }
    save_file(flat, str(target))


LORA_SUFFIXES = (".safetensors", ".ckpt")


def fetch(source: str) -> Path:
    """A local LoRA file, or one from the Hugging Face hub: ``owner/repo`` (its only
    ``.safetensors`` / ``.ckpt`` file) or ``owner/repo/path/in/repo.safetensors``."""
    import os

    path = Path(source)
    if path.exists() or source.count("/") < 1 or source.startswith((".", "/")):
        return path
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    parts = source.split("/")
    repo_id, wanted = "/".join(parts[:2]), "/".join(parts[2:])
    token = os.environ.get("HF_TOKEN")
    try:
        info = HfApi().model_info(repo_id, token=token)
        files = sorted(s.rfilename for s in info.siblings or [])
        if not wanted:
            found = [f for f in files if f.endswith(LORA_SUFFIXES)]
            if len(found) != 1:
                listed = ", ".join(found) or "none"
                raise ImportSourceError(
                    f"{repo_id} has {len(found)} LoRA files ({listed}): name one as "
                    f"{repo_id}/<file>"
                )
            wanted = found[0]
        elif wanted not in files:
            raise ImportSourceError(f"{repo_id} has no file {wanted}")
        return Path(hf_hub_download(repo_id, wanted, revision=info.sha, token=token))
    except GatedRepoError as e:
        raise ImportSourceError(f"{repo_id} is gated: set HF_TOKEN and try again") from e
    except RepositoryNotFoundError as e:
        raise ImportSourceError(f"{source}: no such local file, nor a hub repo") from e
    except (HfHubHTTPError, httpx2.TransportError, OSError) as e:
        raise ImportSourceError(f"cannot download {source} from the Hugging Face hub: {e}") from e


def import_lora(source: str, base_name: str, name: str | None = None) -> str:
    """Validate a LoRA file (local or on the hub) against the base model ``base_name``; store
    it; return its tag."""
    import bentoml

    path = fetch(source)
    try:
        base = ModelCatalog(list_entries()).resolve(base_name)
    except ModelNotFoundError as e:
        raise ImportSourceError(f"base model {base_name!r} is not in the model store") from e
    config, layers = validate(path, base)
    name = name or path.stem
    sha = _file_sha256(path)
    for entry in list_loras():
        if (
            entry.name == name
            and entry.metadata.get("content_sha256") == sha
            and (entry.metadata.get("base_tag") == base.tag)
        ):
            return entry.tag
    metadata = {
        "base": base.name,
        "base_tag": base.tag,
        **{k: v for k, v in config.to_json().items() if v is not None},
        "layers": len(layers),
        "size_bytes": path.stat().st_size,
        "source": source if not Path(source).exists() else str(path.resolve()),
        "content_sha256": sha,
    }
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / ADAPTER_FILE
        _save(layers, staged)
        with bentoml.models.create(
            name, labels=dict([LORA_LABEL]), metadata=metadata, module="stable_audio_bento"
        ) as ref:
            (Path(ref.path) / ADAPTER_FILE).write_bytes(staged.read_bytes())
    return str(ref.tag)


def list_loras() -> list[LoraEntry]:
    """The newest version of every LoRA in the store, by name."""
    import bentoml

    newest: dict[str, Any] = {}
    for model in bentoml.models.list():
        if model.info.labels.get(LORA_LABEL[0]) != LORA_LABEL[1]:
            continue
        if (
            model.tag.name not in newest
            or model.creation_time > newest[model.tag.name].creation_time
        ):
            newest[model.tag.name] = model
    return [
        LoraEntry(m.tag.name, str(m.tag.version), Path(m.path), dict(m.info.metadata))
        for m in sorted(newest.values(), key=lambda m: m.tag.name)
    ]


class LoraCatalog:
    """Names (``name`` or ``name:version``) -> LoRA entries, re-read when a name is unknown."""

    def __init__(self) -> None:
        self._entries: list[LoraEntry] | None = None

    @property
    def entries(self) -> list[LoraEntry]:
        if self._entries is None:
            self._entries = list_loras()
        return self._entries

    def _find(self, name: str) -> LoraEntry | None:
        key = name.strip().lower()
        for entry in self.entries:
            if key in (entry.name.lower(), entry.tag.lower(), f"{entry.name.lower()}:latest"):
                return entry
        return None

    def resolve(self, name: str, base: ModelEntry) -> LoraEntry:
        """The entry ``name`` names, for the model ``base`` (404 unknown, 400 other base)."""
        entry = self._find(name)
        if entry is None:
            self._entries = None  # imported after the server started
            entry = self._find(name)
        if entry is None:
            raise LoraNotFoundError(name)
        if entry.base != base.name:
            raise InvalidRequestError(
                f"The LoRA `{entry.name}` is for the model `{entry.base}`, not `{base.name}`.",
                field="loras",
            )
        return entry

    def by_base(self) -> dict[str, list[dict[str, Any]]]:
        self._entries = None
        grouped: dict[str, list[dict[str, Any]]] = {}
        for entry in self.entries:
            grouped.setdefault(entry.base, []).append(entry.describe())
        return grouped
