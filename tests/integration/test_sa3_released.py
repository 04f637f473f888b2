"""Stable Audio 3 as Stability AI publishes it, imported every way a user would.

The released repos hold ``model_config.json``, ``model.safetensors`` WITHOUT the T5Gemma
encoder, and ``t5gemma-b-b-ul2/`` with T5Gemma in transformers' layout: the whole
encoder-decoder (``model.encoder.*``, ``model.decoder.*``, ``lm_head.*``), its config,
``generation_config.json`` and tokenizer files; the prompt conditioner names that subfolder
(``repo_id`` + ``subfolder``). Here a tiny model of that structure (the parity manifest's
small model, with the released config's inpainting and decoder-noise settings) is served by a
stand-in hub with exactly that file list (the subfolder gated, as the released repos are),
downloaded into a local snapshot as ``huggingface-cli download`` lays it out, and pointed at
through ``model_path``; each goes through ``python -m models import``.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from stable_audio_bento.engine import EngineRequest, LoadOptions
from stable_audio_bento.engine.sa3.engine import SA3Engine
from tests.fake_hub import FakeRepo, fake_hub
from tests.integration.test_sa3_convert import DATA, SMALL, hub_env, hub_state, user_env
from tests.servers import REPO_ROOT

pytestmark = pytest.mark.integration

REPO = "stabilityai/stable-audio-3-small-sfx"
SUB = "t5gemma-b-b-ul2"
TEXT = "conditioner.conditioners.prompt.model."


def released_config() -> dict[str, Any]:
    """The small manifest's config with what the released configs add."""
    config = copy.deepcopy(SMALL["model_config"])
    config["model_type"] = "diffusion_cond_inpaint"
    config["model"]["diffusion"]["local_add_cond_ids"] = ["inpaint_mask", "inpaint_masked_input"]
    config["model"]["pretransform"]["config"]["decoder"]["config"]["mask_noise"] = 0.01
    for conditioner in config["model"]["conditioning"]["configs"]:
        if conditioner["id"] == "prompt":
            conditioner["config"].update(repo_id=REPO, subfolder=SUB)
        if conditioner["id"] == "seconds_total":
            conditioner["config"]["max_val"] = 384
    return config


def released_files() -> dict[str, bytes]:
    """Every file of the released repo (tiny), by its path in the repo."""
    from transformers import AutoConfig, T5GemmaForConditionalGeneration

    state = hub_state(seed=3, manifest=SMALL)
    encoder = {k[len(TEXT) :]: v for k, v in state.items() if k.startswith(TEXT)}
    rest = {k: v for k, v in state.items() if not k.startswith(TEXT)}
    torch.manual_seed(5)
    t5 = T5GemmaForConditionalGeneration(AutoConfig.from_pretrained(DATA / "sa3_text_encoder"))
    full = {k: v.detach().clone().contiguous() for k, v in t5.state_dict().items()}
    for key, value in encoder.items():
        assert "model." + key in full, key
        full["model." + key] = value.clone()
    folder = DATA / "sa3_text_encoder"
    files = {
        "model_config.json": json.dumps(released_config()).encode(),
        "README.md": b"gated",
        f"{SUB}/generation_config.json": b'{"decoder_start_token_id": 0}',
    }
    for path in sorted(folder.iterdir()):
        files[f"{SUB}/{path.name}"] = path.read_bytes()
    tmp = REPO_ROOT / "test-artifacts"
    tmp.mkdir(exist_ok=True)
    for name, tensors in (("model.safetensors", rest), (f"{SUB}/model.safetensors", full)):
        target = tmp / "released.safetensors"
        save_file(tensors, str(target))
        files[name] = target.read_bytes()
        target.unlink()
    return files


def write_snapshot(files: dict[str, bytes], target: Path) -> Path:
    """The repo as ``huggingface-cli download --local-dir`` leaves it (with its .cache/)."""
    for name, data in files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    (target / ".cache" / "huggingface").mkdir(parents=True)
    (target / ".cache" / "huggingface" / ".gitignore").write_text("*\n")
    return target


@dataclass
class Released:
    root: Path
    home: Path
    files: dict[str, bytes]
    sha: str
    tags: dict[str, str]
    requests: list[str]

    def entry(self, case: str) -> Path:
        name, version = self.tags[case].split(":")
        return self.home / "models" / name / version

    def metadata(self, case: str) -> dict[str, Any]:
        info: dict[str, Any] = yaml.safe_load((self.entry(case) / "model.yaml").read_text())
        return dict(info["metadata"])


def run_import(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "models", "import", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    root = tmp_path_factory.mktemp("released")
    files = released_files()
    snapshot = write_snapshot(files, root / "snapshot")
    # model_path: the T5Gemma folder somewhere else, named by an absolute path.
    elsewhere = root / "elsewhere"
    write_snapshot({k: v for k, v in files.items() if not k.startswith(SUB)}, elsewhere)
    shutil.copytree(snapshot / SUB, root / "t5gemma")
    config = released_config()
    for conditioner in config["model"]["conditioning"]["configs"]:
        if conditioner["id"] == "prompt":
            conditioner["config"] = {**conditioner["config"], "model_path": str(root / "t5gemma")}
            del conditioner["config"]["subfolder"]
    (elsewhere / "model_config.json").write_text(json.dumps(config))
    repo = FakeRepo(files, gated_folders=(SUB,))
    home = root / "bentoml"
    with fake_hub({REPO: repo}) as (endpoint, requests):
        cases = {
            "hub": ([REPO], hub_env(home, endpoint, "hf_token_with_access")),
            "snapshot": ([str(snapshot), "--name", "snapshot"], user_env(home)),
            "model_path": ([str(elsewhere), "--name", "model-path"], user_env(home)),
        }
        procs = {case: run_import(args, env) for case, (args, env) in cases.items()}
        outputs = {case: p.communicate(timeout=300) for case, p in procs.items()}
    for case, (_, err) in outputs.items():
        assert procs[case].returncode == 0, f"{case}: {err}"
    tags = {case: out.strip() for case, (out, _) in outputs.items()}
    yield Released(root, home, files, repo.sha, tags, list(requests))


def test_the_hub_import_reads_the_released_file_list_at_one_revision(released: Released) -> None:
    meta = released.metadata("hub")
    assert (meta["source"], meta["revision"]) == (REPO, released.sha)
    resolved = [r.split("/resolve/", 1)[1] for r in released.requests if "/resolve/" in r]
    # Every file at the commit the import started from; the encoder-decoder weights, config
    # and tokenizer from the subfolder (its generation config is not needed).
    assert all(r.startswith(released.sha + "/") for r in resolved)
    fetched = {r.split("/", 1)[1] for r in resolved if r.startswith("GET")} | {
        r.split("/", 1)[1] for r in resolved
    }
    assert fetched == {
        "model_config.json",
        "model.safetensors",
        f"{SUB}/config.json",
        f"{SUB}/model.safetensors",
        f"{SUB}/tokenizer.json",
        f"{SUB}/tokenizer_config.json",
    }
    assert any(f"/tree/{released.sha}/{SUB}" in r for r in released.requests)


@pytest.mark.parametrize("case", ["hub", "snapshot", "model_path"])
def test_the_entry_keeps_only_the_encoder_and_loads_offline(released: Released, case: str) -> None:
    entry = released.entry(case)
    text = load_file(str(entry / "text_encoder" / "model.safetensors"))
    full = {
        k: v
        for k, v in load_file_bytes(released.files[f"{SUB}/model.safetensors"]).items()
        if k.startswith("model.encoder.")
    }
    assert set(text) == {k.removeprefix("model.") for k in full}
    assert all(torch.equal(text[k.removeprefix("model.")], v) for k, v in full.items())
    vae = json.loads((entry / "vae" / "config.json").read_text())
    assert vae["sa3_bento"]["decoder_mask_noise"] == 0.01
    assert vae["sa3_bento"]["latent_align"] == 2  # chunk_size 8 / stride 4
    options = LoadOptions(device="cpu", check=False)
    engine = SA3Engine.load(entry, case, released.metadata(case), options)
    assert engine.mask_noise == 0.01
    assert engine.info.default_level == "attenuate"
    audio = engine.generate(
        [EngineRequest("rain", seed=1, seconds_total=0.5)], engine.info.sampling(steps=2)
    )[0]
    assert audio.shape == (2, round(0.5 * engine.info.sample_rate))


def load_file_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


def test_the_three_imports_make_the_same_entry(released: Released) -> None:
    def weights(case: str) -> dict[str, bytes]:
        entry = released.entry(case)
        return {
            p.relative_to(entry).as_posix(): p.read_bytes()
            for p in sorted(entry.rglob("*.safetensors"))
        }

    assert weights("hub") == weights("snapshot") == weights("model_path")


def test_a_gated_subfolder_without_a_token_is_one_clear_error(tmp_path: Path) -> None:
    repo = FakeRepo(released_files(), gated_folders=(SUB,))
    with fake_hub({REPO: repo}) as (endpoint, _):
        proc = run_import([REPO], hub_env(tmp_path / "bentoml", endpoint, None))
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert err.splitlines() == [
        f"error: {REPO}/{SUB} (the T5Gemma text encoder of {REPO}) is gated: "
        "set HF_TOKEN and try again"
    ]
    assert not (tmp_path / "bentoml" / "models").exists()
