"""The private offline Hugging Face cache that serves text encoders from the model store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from stable_audio_bento.errors import ModelLoadError
from stable_audio_bento.store.hub_cache import link_text_encoder, prepare_offline_hub
from tests.servers import REPO_ROOT


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def clean_env() -> dict[str, str]:
    """This process's environment without the offline cache set up."""
    env = dict(os.environ)
    for name in ("STABLE_AUDIO_BENTO_HF_CACHE", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        env.pop(name, None)
    return env


def encoder_files(directory: Path, marker: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(f'{{"marker": "{marker}"}}')
    (directory / "tokenizer.json").write_text("{}")
    return directory


def unique_hub_name() -> str:
    return f"test-org/encoder-{uuid.uuid4().hex[:8]}"


def test_prepare_sets_up_one_offline_cache_per_process() -> None:
    from huggingface_hub import constants

    cache = prepare_offline_hub()
    assert cache.is_dir()
    assert prepare_offline_hub() == cache
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert Path(os.environ["HF_HUB_CACHE"]) == cache
    assert constants.HF_HUB_OFFLINE
    assert Path(constants.HF_HUB_CACHE) == cache


def test_link_makes_the_hub_name_resolve_to_the_store_files(tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    cache = prepare_offline_hub()
    files = encoder_files(tmp_path / "entry" / "text_encoder", "first")
    name = unique_hub_name()
    link_text_encoder(cache, name, files)

    config = try_to_load_from_cache(name, "config.json")
    assert isinstance(config, str)
    assert Path(config).read_text() == '{"marker": "first"}'
    assert Path(config).resolve() == (files / "config.json").resolve()
    # What transformers does for a hub name: an offline snapshot lookup, no network.
    snapshot = Path(snapshot_download(name))
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "tokenizer.json"]


def test_relinking_points_the_name_at_the_newest_entry(tmp_path: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    cache = prepare_offline_hub()
    name = unique_hub_name()
    first = encoder_files(tmp_path / "a" / "text_encoder", "first")
    second = encoder_files(tmp_path / "b" / "text_encoder", "second")
    link_text_encoder(cache, name, first)
    link_text_encoder(cache, name, second)
    config = try_to_load_from_cache(name, "config.json")
    assert isinstance(config, str)
    assert Path(config).read_text() == '{"marker": "second"}'
    # Linking the same entry again is harmless.
    link_text_encoder(cache, name, second)
    link_text_encoder(cache, name, first)
    config = try_to_load_from_cache(name, "config.json")
    assert isinstance(config, str)
    assert Path(config).read_text() == '{"marker": "first"}'


def test_link_without_encoder_files_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="text encoder files missing"):
        link_text_encoder(prepare_offline_hub(), unique_hub_name(), tmp_path / "missing")


def test_a_fresh_process_gets_a_private_cache() -> None:
    result = run_python(
        """
        from stable_audio_bento.store.hub_cache import prepare_offline_hub
        cache = prepare_offline_hub()
        from huggingface_hub import constants
        print(cache, constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE == str(cache), cache.is_dir())
        """,
        clean_env(),
    )
    assert result.returncode == 0, result.stderr
    cache, offline, same, existed = result.stdout.split()
    assert (offline, same, existed) == ("True", "True", "True")
    assert Path(cache) != prepare_offline_hub()
    # The process that made the cache removes it when it exits.
    assert not Path(cache).exists()


def test_child_processes_share_the_parents_cache() -> None:
    # bentoml serve's workers inherit the environment: they must use the same cache.
    result = run_python(
        """
        from stable_audio_bento.store.hub_cache import prepare_offline_hub
        print(prepare_offline_hub())
        """,
        dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == prepare_offline_hub()
    assert prepare_offline_hub().is_dir()  # a child's exit leaves the parent's cache alone


def test_importing_the_hub_client_first_is_refused() -> None:
    result = run_python(
        """
        import huggingface_hub
        from stable_audio_bento.store.hub_cache import prepare_offline_hub
        prepare_offline_hub()
        """,
        clean_env(),
    )
    assert result.returncode != 0
    assert "ModelLoadError" in result.stderr
    assert "huggingface_hub was imported before the offline model cache was set up" in (
        result.stderr
    )


def test_hub_client_with_other_settings_is_refused(tmp_path: Path) -> None:
    env = clean_env()
    env["STABLE_AUDIO_BENTO_HF_CACHE"] = str(tmp_path / "ours")
    env["HF_HUB_CACHE"] = str(tmp_path / "someone-elses")
    result = run_python(
        """
        from stable_audio_bento.store.hub_cache import prepare_offline_hub
        prepare_offline_hub()
        """,
        env,
    )
    assert result.returncode != 0
    assert "huggingface_hub was imported with other settings" in result.stderr


def test_the_service_sets_up_the_cache_before_anything_imports_the_hub_client() -> None:
    """service.py's import order: prepare_offline_hub first (its module pulls in no hub client),
    then BentoML and the package; importing the service in a fresh process proves it (the
    cache refuses to be set up after huggingface_hub was imported)."""
    result = run_python(
        """
        import sys
        import stable_audio_bento.store.hub_cache
        print("hub before:", "huggingface_hub" in sys.modules)
        import service
        import huggingface_hub.constants as constants
        print("offline:", constants.HF_HUB_OFFLINE)
        """,
        {**clean_env(), "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])},
    )
    assert result.returncode == 0, result.stderr
    assert "hub before: False" in result.stdout
    assert "offline: True" in result.stdout
