"""``python -m models import``: the demo recipe, local directories, .ckpt sources, hub errors.

Imports that add new names run the CLI in a private ``BENTOML_HOME``, so the session's store
(shared with the served model) only ever holds the demo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from models import DEMO_RECIPE
from stable_audio_bento.engine.importer import import_source
from stable_audio_bento.engine.sao.demo import build_demo
from stable_audio_bento.errors import ImportSourceError
from stable_audio_bento.store.catalog import ModelEntry, list_entries
from stable_audio_bento.store.entries import content_hash
from tests.servers import REPO_ROOT

DEMO = "stable-audio-demo"
BENTOML = Path(sys.executable).parent / "bentoml"
ENTRY_FILES = {
    "model_config.json",
    "model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/tokenizer.json",
    "text_encoder/tokenizer_config.json",
}


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no hub token, no offline cache of a test process, its own store."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "STABLE_AUDIO_", "HUGGING_FACE_"))
    }
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", **extra)
    return env


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def models_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "models", *args], env)


def entry_files(directory: Path) -> dict[str, bytes]:
    """Every file of an entry by relative path, without BentoML's own ``model.yaml``."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "model.yaml"
    }


def export(entry: ModelEntry, target: Path) -> Path:
    """The files of a store entry, as a user would copy them out."""
    shutil.copytree(entry.path, target, ignore=shutil.ignore_patterns("model.yaml"))
    return target


@pytest.fixture(scope="module")
def demo_entry(demo_tag: str) -> ModelEntry:
    (entry,) = [e for e in list_entries() if e.tag == demo_tag]
    return entry


# ------------------------------------------------------------------------ the demo
def test_demo_entry_holds_everything_it_needs(demo_entry: ModelEntry) -> None:
    files = entry_files(demo_entry.path)
    assert set(files) == ENTRY_FILES
    config = json.loads(files["model_config.json"])
    assert config["model_type"] == "diffusion_cond"
    with safe_open(str(demo_entry.path / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert any(n.startswith("model.") for n in names)  # the DiT
    assert any(n.startswith("pretransform.") for n in names)  # the autoencoder


def test_demo_metadata(demo_entry: ModelEntry, demo_tag: str, tmp_path: Path) -> None:
    import bentoml

    meta = demo_entry.metadata
    assert {k: meta[k] for k in meta if k not in ("content_sha256", "description")} == {
        "sample_rate": 44100,
        "channels": 2,
        "max_seconds": 47.554,
        "sample_size": 2097152,
        "objective": "v",
        "steps": 8,
        "cfg_scale": 7.0,
        "sampler": "dpmpp-3m-sde",
        "source": "demo",
        "revision": "",
        "aliases": ["demo"],
    }
    assert "seeded random weights" in meta["description"]
    # The recorded digest is the digest of the files in the store.
    assert meta["content_sha256"] == content_hash(export(demo_entry, tmp_path / "files"))
    assert bentoml.models.get(demo_tag).info.labels == {"family": "stable-audio"}


def test_demo_tokenizer_is_built_locally_and_knows_the_vocabulary(demo_entry: ModelEntry) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(demo_entry.path / "text_encoder"))
    ids = tokenizer("Rain and DISTANT thunder with zorblax")["input_ids"]
    unknown = tokenizer.convert_tokens_to_ids("<unk>")
    # Lower-cased, split on spaces; only the made-up word is not in the recipe's vocabulary.
    assert len(ids) == 7  # six words and the end-of-sequence token
    assert [i == unknown for i in ids] == [False] * 5 + [True, False]
    assert ids[-1] == tokenizer.eos_token_id


def test_two_demo_builds_are_byte_identical(demo_entry: ModelEntry, tmp_path: Path) -> None:
    torch.manual_seed(987654)  # the global RNG's state must not matter
    build_demo(DEMO_RECIPE, tmp_path / "build")
    # The session fixture's import was the first build.
    assert entry_files(tmp_path / "build") == entry_files(demo_entry.path)
    assert content_hash(tmp_path / "build") == demo_entry.metadata["content_sha256"]


def test_reimporting_the_demo_is_idempotent(demo_tag: str) -> None:
    import bentoml

    assert str(import_source("demo", None, recipe_dir=DEMO_RECIPE)) == demo_tag
    assert [str(m.tag) for m in bentoml.models.list(DEMO)] == [demo_tag]


# ---------------------------------------------------------------- local directories
@dataclass
class PrivateStore:
    home: Path
    exported: Path
    first: subprocess.CompletedProcess[str]
    again: subprocess.CompletedProcess[str]
    from_ckpt: subprocess.CompletedProcess[str]

    def entry_dir(self, tag: str) -> Path:
        name, version = tag.split(":")
        return self.home / "models" / name / version


@pytest.fixture(scope="module")
def private_store(
    demo_entry: ModelEntry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateStore]:
    """In a fresh store: import the demo's exported files twice, then a .ckpt copy of them."""
    root = tmp_path_factory.mktemp("import")
    home = root / "bentoml"
    env = user_env(home)
    exported = export(demo_entry, root / "exported")
    first = models_cli("import", str(exported), "--name", "local-demo", env=env)
    again = models_cli("import", str(exported), "--name", "local-demo", env=env)

    ckpt_dir = export(demo_entry, root / "checkpoint")
    state = load_file(str(ckpt_dir / "model.safetensors"))
    (ckpt_dir / "model.safetensors").unlink()
    torch.save({"state_dict": state}, ckpt_dir / "model.ckpt")
    from_ckpt = models_cli("import", str(ckpt_dir), "--name", "local-demo", env=env)
    yield PrivateStore(home, exported, first, again, from_ckpt)


def test_directory_import_prints_the_new_tag(private_store: PrivateStore) -> None:
    result = private_store.first
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("local-demo:")
    assert len(result.stdout.splitlines()) == 1


def test_directory_import_copies_the_files_and_writes_metadata(
    private_store: PrivateStore, demo_entry: ModelEntry
) -> None:
    tag = private_store.first.stdout.strip()
    assert entry_files(private_store.entry_dir(tag)) == entry_files(demo_entry.path)
    shown = run([str(BENTOML), "models", "get", tag, "-o", "json"], user_env(private_store.home))
    assert shown.returncode == 0, shown.stderr
    info: dict[str, Any] = json.loads(shown.stdout)
    assert info["labels"] == {"family": "stable-audio"}
    meta = info["metadata"]
    assert meta["source"] == str(private_store.exported.resolve())
    assert meta["content_sha256"] == demo_entry.metadata["content_sha256"]
    # Without a recipe the sampling defaults are the model card's for the objective.
    expected = {"sample_rate": 44100, "channels": 2, "max_seconds": 47.554, "objective": "v"}
    assert {k: meta[k] for k in expected} == expected
    assert (meta["steps"], meta["cfg_scale"], meta["sampler"]) == (100, 7.0, "dpmpp-3m-sde")
    assert meta["revision"] == ""
    assert meta["aliases"] == []


def test_reimporting_the_same_files_is_idempotent(private_store: PrivateStore) -> None:
    assert private_store.again.returncode == 0, private_store.again.stderr
    assert private_store.again.stdout == private_store.first.stdout


def test_ckpt_source_is_converted_to_safetensors(
    private_store: PrivateStore, demo_entry: ModelEntry
) -> None:
    result = private_store.from_ckpt
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip()
    # Different files (safetensors written by the converter): a new version of the same name.
    assert tag.startswith("local-demo:")
    assert tag != private_store.first.stdout.strip()
    entry = private_store.entry_dir(tag)
    assert not (entry / "model.ckpt").exists()
    assert set(entry_files(entry)) == ENTRY_FILES
    converted = load_file(str(entry / "model.safetensors"))
    original = load_file(str(demo_entry.path / "model.safetensors"))
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)


def test_bentoml_models_list_shows_the_entries(private_store: PrivateStore) -> None:
    result = run([str(BENTOML), "models", "list"], user_env(private_store.home))
    assert result.returncode == 0, result.stderr
    for imported in (private_store.first, private_store.from_ckpt):
        assert imported.stdout.strip() in result.stdout


def test_models_list_shows_the_newest_version(private_store: PrivateStore) -> None:
    result = models_cli("list", env=user_env(private_store.home))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{private_store.from_ckpt.stdout.strip()}\t47.554 s\t"]


# ------------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    ("extra_env", "reason"),
    [
        ({}, "Check the network (gated repos also need HF_TOKEN)"),
        ({"HF_HUB_OFFLINE": "1"}, "unset the `HF_HUB_OFFLINE` environment variable"),
    ],
    ids=["no network", "offline mode"],
)
def test_hub_import_without_token_or_network_is_one_clear_error(
    tmp_path: Path, extra_env: dict[str, str], reason: str
) -> None:
    repo = "stabilityai/stable-audio-open-1.0"
    result = models_cli("import", repo, env=user_env(tmp_path / "bentoml", **extra_env))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert repo in line
    assert reason in line
    assert not (tmp_path / "bentoml" / "models").exists()  # nothing half-imported


def test_cli_reports_a_bad_source_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-directory"
    result = models_cli("import", str(missing), env=user_env(tmp_path / "bentoml"))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: unknown source '{missing}': give a Hugging Face repo id, a directory or 'demo'\n"
    )


def test_cli_usage_errors(tmp_path: Path) -> None:
    result = models_cli(env=user_env(tmp_path / "bentoml"))
    assert result.returncode == 2
    assert "usage: python -m models" in result.stderr


@pytest.fixture
def exported(demo_entry: ModelEntry, tmp_path: Path) -> Path:
    return export(demo_entry, tmp_path / "exported")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("model_config.json", "model_config.json is missing"),
        ("model.safetensors", "neither model.safetensors nor model.ckpt found"),
        ("text_encoder", "text_encoder/ with the T5 weights and tokenizer is missing"),
    ],
)
def test_incomplete_directories_are_refused(exported: Path, remove: str, message: str) -> None:
    target = exported / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ImportSourceError, match=message):
        import_source(str(exported))


@pytest.mark.parametrize("source", ["not-a-model", "a/b/c", "./relative/missing"])
def test_unknown_sources_are_refused(source: str) -> None:
    with pytest.raises(ImportSourceError, match="unknown source"):
        import_source(source)


def test_demo_needs_its_recipe() -> None:
    with pytest.raises(ImportSourceError, match="recipe"):
        import_source("demo")
