"""Stable Audio 3 import: our key mapping, the hub layout -> diffusers layout, clear refusals.

``tests/data/sa3_key_manifest.json`` was written by ``make parity`` from a tiny SA3 model built
with the reference (stable-audio-tools 0.0.20, Python 3.10), whose outputs our converted
components matched (``parity/results.json``). Here, without that environment, a hub-layout
checkpoint with the manifest's names and shapes (random values) goes through our converter and
``python -m models import``, and must land where the manifest says. Imports run the CLI in a
private ``BENTOML_HOME``, so the session's store only ever holds the demo.
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
import yaml
from safetensors.torch import load_file, save_file

from stable_audio_bento.engine.importer import KNOWN_REPOS, import_source
from stable_audio_bento.engine.sa3.convert import convert_hub_dir
from stable_audio_bento.engine.sa3.layout import (
    diffusers_configs,
    plan_keys,
    read_config,
    same_extras,
)
from stable_audio_bento.engine.sa3.same import build_vae
from stable_audio_bento.errors import ImportSourceError
from tests.fake_hub import FakeRepo, fake_hub
from tests.servers import REPO_ROOT

DATA = Path(__file__).resolve().parents[1] / "data"
MANIFEST: dict[str, Any] = json.loads((DATA / "sa3_key_manifest.json").read_text())
# The small models' shape: plain DiT attention, SAME-S (chunked attention, kernel-3 mapping).
SMALL: dict[str, Any] = json.loads((DATA / "sa3_small_key_manifest.json").read_text())
MANIFESTS = pytest.mark.parametrize("manifest", [MANIFEST, SMALL], ids=["medium", "small"])
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "duration_embedder", "scheduler")
SA3_REPO = "stabilityai/stable-audio-3-small-sfx"
T5GEMMA_REPO = "google/t5gemma-b-b-ul2"


def hub_state(seed: int = 0, manifest: dict[str, Any] = MANIFEST) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v["shape"], generator=gen) for k, v in manifest["keys"].items()}


def make_hub_dir(
    target: Path,
    config: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    manifest: dict[str, Any] = MANIFEST,
) -> Path:
    """A local directory in the hub's layout, as a user would download it."""
    target.mkdir(parents=True)
    (target / "model_config.json").write_text(json.dumps(config or manifest["model_config"]))
    state = state if state is not None else hub_state(manifest=manifest)
    save_file(state, str(target / "model.safetensors"))
    shutil.copytree(DATA / "sa3_text_encoder", target / "text_encoder")
    return target


def user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "STABLE_AUDIO_"))}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", HF_HUB_OFFLINE="1")
    return env


def entry_files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "model.yaml"
    }


# ------------------------------------------------------------------ the key mapping
@MANIFESTS
def test_every_hub_key_maps_as_the_parity_manifest_says(manifest: dict[str, Any]) -> None:
    sa3 = read_config(manifest["model_config"])
    plans = plan_keys(sa3, sorted(manifest["keys"]))
    assert set(plans) == set(manifest["keys"])
    for name, plan in plans.items():
        want = manifest["keys"][name]
        assert (plan.component, plan.key, plan.transform) == (
            want["component"],
            want["key"],
            want["transform"],
        ), name
    # Differential attention (SAME in both, the DiT in medium's shape) has its QKV reordered.
    reordered = [n for n, p in plans.items() if p.transform == "qkv_reorder"]
    assert any(n.startswith("model.model.") for n in reordered) == sa3.dit_differential
    assert any(n.startswith("pretransform.model.") for n in reordered)


def test_plain_attention_keeps_the_qkv_rows() -> None:
    """The small models' DiT is not differential: its fused q | k | v rows stay as they are."""
    attn = "model.diffusion.config.attn_kwargs"
    config = _config_with(attn, {"qk_norm": "rms", "differential": False})
    plans = plan_keys(read_config(config), sorted(MANIFEST["keys"]))
    dit_qkv = [p for n, p in plans.items() if n.endswith("self_attn.to_qkv.weight")]
    assert {p.transform for p in dit_qkv if p.component == "transformer"} == {"copy"}
    assert {p.transform for p in dit_qkv if p.component == "vae"} == {"qkv_reorder"}


def test_the_reference_sampling_settings_reach_the_entry(tmp_path: Path) -> None:
    shift = {"type": "logsnr", "anchor_length": 2000, "rate": 1.0}
    config = _config_with("model.diffusion.sampling_distribution_shift_options", shift)
    config["model"]["diffusion"]["use_effective_length_for_schedule"] = True
    facts = convert_hub_dir(make_hub_dir(tmp_path / "hub", config), tmp_path / "out")
    assert facts.sampling == {
        "sampling_distribution_shift": shift,
        "use_effective_length_for_schedule": True,
    }
    plain = read_config(MANIFEST["model_config"])
    assert (plain.sampling_shift, plain.use_effective_length_for_schedule) == (None, False)


@MANIFESTS
def test_mapped_shapes_fit_the_diffusers_modules(manifest: dict[str, Any]) -> None:
    from diffusers import StableAudio3DiTModel, StableAudio3DurationEmbedder

    sa3 = read_config(manifest["model_config"])
    shapes = {k: tuple(v["shape"]) for k, v in manifest["keys"].items()}
    configs = diffusers_configs(sa3, shapes)
    with torch.device("meta"):
        modules = {
            "transformer": StableAudio3DiTModel(**configs["transformer"]),
            "vae": build_vae(configs["vae"], same_extras(sa3), device="meta"),
            "duration_embedder": StableAudio3DurationEmbedder(**configs["duration_embedder"]),
        }
    expected = {
        c: {k: tuple(v.shape) for k, v in m.state_dict().items()} for c, m in modules.items()
    }
    mapped: dict[str, set[str]] = {c: set() for c in modules}
    for name, entry in manifest["keys"].items():
        component = entry["component"]
        if component in modules:
            assert expected[component][entry["key"]] == tuple(entry["shape"]), name
            mapped[component].add(entry["key"])
    # Only what the converter derives from the config is not in the checkpoint.
    assert set(expected["transformer"]) - mapped["transformer"] == set()
    assert set(expected["vae"]) - mapped["vae"] == set()
    assert set(expected["duration_embedder"]) - mapped["duration_embedder"] == {"freqs"}


# -------------------------------------------------- hub layout -> CLI -> store entry
def hub_repos(hub: Path) -> dict[str, FakeRepo]:
    """The SA3 repo (as on the hub: duration range up to 384 s) and its gated T5Gemma repo."""
    config = json.loads((hub / "model_config.json").read_text())
    for conditioner in config["model"]["conditioning"]["configs"]:
        if conditioner["id"] == "seconds_total":
            conditioner["config"]["max_val"] = 384
    files = {
        "model_config.json": json.dumps(config).encode(),
        "model.safetensors": (hub / "model.safetensors").read_bytes(),
        "README.md": b"gated",
    }
    return {
        SA3_REPO: FakeRepo(files),
        T5GEMMA_REPO: FakeRepo.from_dir(hub / "text_encoder", gated=True),
    }


def hub_env(home: Path, endpoint: str, token: str | None) -> dict[str, str]:
    env = user_env(home)
    del env["HF_HUB_OFFLINE"]
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(home.parent / "hf-cache"))
    if token:
        env["HF_TOKEN"] = token
    return env


@dataclass
class Imported:
    hub: Path
    home: Path
    tag: str
    diffusers_source: Path
    diffusers_tag: str
    hub_tag: str
    hub_requests: list[str]
    hub_sha: str

    def entry(self, tag: str) -> Path:
        name, version = tag.split(":")
        return self.home / "models" / name / version

    def metadata(self, tag: str) -> dict[str, Any]:
        info: dict[str, Any] = yaml.safe_load((self.entry(tag) / "model.yaml").read_text())
        return dict(info["metadata"])


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imported]:
    """Both local layouts and a (stand-in) hub repo through ``python -m models import``, side
    by side in one private store."""
    root = tmp_path_factory.mktemp("sa3")
    hub = make_hub_dir(root / "hub-layout")
    diffusers_source = root / "diffusers-layout"
    convert_hub_dir(hub, diffusers_source)
    home = root / "bentoml"
    repos = hub_repos(hub)
    with fake_hub(repos) as (endpoint, requests):
        commands = [
            (["import", str(hub), "--name", "sa3-tiny"], user_env(home)),
            (["import", str(diffusers_source), "--name", "sa3-tiny-diffusers"], user_env(home)),
            (["import", SA3_REPO], hub_env(home, endpoint, "hf_token_with_access")),
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "models", *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args, env in commands
        ]
        outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    tags = [out.strip() for out, _ in outputs]
    yield Imported(
        hub, home, tags[0], diffusers_source, tags[1], tags[2], requests, repos[SA3_REPO].sha
    )


def test_hub_layout_import_writes_one_diffusers_entry(imported: Imported) -> None:
    entry = imported.entry(imported.tag)
    index = json.loads((entry / "model_index.json").read_text())
    assert index["_class_name"] == "StableAudio3Pipeline"
    assert {c for c in index if not c.startswith("_")} == set(COMPONENTS)
    assert {p.name for p in entry.iterdir()} == {*COMPONENTS, "model_index.json", "model.yaml"}
    meta = imported.metadata(imported.tag)
    assert {k: meta[k] for k in meta if k != "content_sha256"} == {
        "backend": "diffusers-sa3",
        "sample_rate": 44100,
        "channels": 2,
        "max_seconds": 20.0,  # the duration conditioner's range (no family in the name)
        "objective": "rf_denoiser",
        "distilled": True,
        "latent_downsampling": 32,
        "prompt_max_length": 16,
        "dit_norm_eps": 1e-5,
        "steps": 8,
        "cfg_scale": 1.0,
        "sampler": "pingpong",
        "source": str(imported.hub.resolve()),
        "revision": "",
        "aliases": [],
    }


def test_entry_loads_with_the_hub_closed_and_holds_the_hub_weights(imported: Imported) -> None:
    from diffusers import StableAudio3Pipeline

    entry = imported.entry(imported.tag)
    pipe = StableAudio3Pipeline.from_pretrained(str(entry), local_files_only=True)
    hub = load_file(str(imported.hub / "model.safetensors"))
    dit = pipe.transformer.state_dict()
    block = "model.model.transformer.layers.0."
    # Differential self-attention: reference rows [q | k | v | q2 | k2] -> [q1 | q2 | k1 | k2 | v].
    q, k, v, q2, k2 = hub[block + "self_attn.to_qkv.weight"].chunk(5)
    assert torch.equal(
        dit["transformer_blocks.0.self_attn.to_qkv.weight"], torch.cat([q, q2, k, k2, v])
    )
    assert torch.equal(
        dit["transformer_blocks.0.ff.proj_in.weight"], hub[block + "ff.ff.0.proj.weight"]
    )
    assert torch.equal(
        dit["prompt_padding_embedding"], hub["conditioner.conditioners.prompt.padding_embedding"]
    )
    text = pipe.text_encoder.state_dict()
    prefix = "conditioner.conditioners.prompt.model."
    assert all(
        torch.equal(text[n[len(prefix) :]], t) for n, t in hub.items() if n.startswith(prefix)
    )
    with torch.no_grad():
        latents = torch.zeros(1, 16, 4)
        audio = pipe.vae.decode(latents).sample
        tokens = pipe.tokenizer(["rain"], padding="max_length", max_length=16, return_tensors="pt")
        hidden = pipe.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    assert audio.shape == (1, 2, 4 * 32)
    assert hidden.shape == (1, 16, 768)
    assert pipe.scheduler.config.stochastic_sampling  # distilled: ping-pong re-noise


def test_diffusers_layout_import_copies_the_files(imported: Imported) -> None:
    copied = entry_files(imported.entry(imported.diffusers_tag))
    assert copied == entry_files(imported.diffusers_source)
    assert copied == entry_files(imported.entry(imported.tag))  # the same conversion
    meta = imported.metadata(imported.diffusers_tag)
    assert meta["backend"] == "diffusers-sa3"
    assert meta["content_sha256"] == imported.metadata(imported.tag)["content_sha256"]
    assert (meta["max_seconds"], meta["steps"], meta["sampler"]) == (20.0, 8, "pingpong")


def test_hub_repo_import_downloads_the_encoder_config_and_tokenizer(imported: Imported) -> None:
    assert imported.hub_tag.startswith("stable-audio-3-small-sfx:")
    meta = imported.metadata(imported.hub_tag)
    assert meta["source"] == SA3_REPO
    assert meta["revision"] == imported.hub_sha
    assert meta["aliases"] == [SA3_REPO, "small-sfx", "stable-audio-3-small-sfx"]
    assert meta["max_seconds"] == 120.0  # the small models' limit (their range is 384 s)
    assert (meta["backend"], meta["steps"], meta["cfg_scale"]) == ("diffusers-sa3", 8, 1.0)
    downloads = {
        r.split("/resolve/", 1)[1]
        for r in imported.hub_requests
        if r.startswith("GET /") and "/resolve/" in r
    }
    # The T5Gemma weights are in the SA3 checkpoint: only its config and tokenizer are fetched.
    assert {d.split("/", 1)[1] for d in downloads} == {
        "model_config.json",
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    ours = entry_files(imported.entry(imported.hub_tag))
    local = entry_files(imported.entry(imported.tag))
    assert set(ours) == set(local)
    assert (
        ours["transformer/diffusion_pytorch_model.safetensors"]
        == local["transformer/diffusion_pytorch_model.safetensors"]
    )


def test_gated_text_encoder_without_token_is_one_clear_error(tmp_path: Path) -> None:
    hub = make_hub_dir(tmp_path / "hub")
    with fake_hub(hub_repos(hub)) as (endpoint, _):
        result = subprocess.run(
            [sys.executable, "-m", "models", "import", SA3_REPO],
            cwd=REPO_ROOT,
            env=hub_env(tmp_path / "bentoml", endpoint, None),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {T5GEMMA_REPO} (the T5Gemma text encoder of {SA3_REPO}) is gated: "
        "set HF_TOKEN and try again"
    ]
    assert not (tmp_path / "bentoml" / "models").exists()


def test_sa3_hub_import_without_network_is_one_clear_error(tmp_path: Path) -> None:
    repo = "stabilityai/stable-audio-3-small-sfx"
    env = user_env(tmp_path / "bentoml")
    del env["HF_HUB_OFFLINE"]
    result = subprocess.run(
        [sys.executable, "-m", "models", "import", repo],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: cannot reach the Hugging Face hub to download {repo}")
    assert "Check the network (gated repos also need HF_TOKEN)" in line
    assert not (tmp_path / "bentoml" / "models").exists()


def test_sa3_hub_repos_and_their_aliases_are_known() -> None:
    for variant in ("small-sfx", "small-music", "medium"):
        for base in ("", "-base"):
            repo = f"stabilityai/stable-audio-3-{variant}{base}"
            assert KNOWN_REPOS[repo] == [f"{variant}{base}", f"stable-audio-3-{variant}{base}"]


# ----------------------------------------------------------------------- refusals
def _config_with(path: str, value: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(MANIFEST["model_config"]))
    node = config
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return config


SAME_ENCODER = "model.pretransform.config.encoder.config"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"config": _config_with(f"{SAME_ENCODER}.sliding_window", [1, 2])},
            "the band must be symmetric",
        ),
        ({"config": _config_with(f"{SAME_ENCODER}.dyt", False)}, "dyt=False"),
        (
            {"config": _config_with("model.diffusion.diffusion_objective", "v")},
            "diffusion_objective='v' is not supported",
        ),
        (
            {"config": _config_with("model.diffusion.config.attn_kwargs", {"qk_norm": "ln"})},
            "attn_kwargs.qk_norm='ln'",
        ),
        ({"extra": {"model.model.some_new_layer.weight": torch.zeros(2)}}, "have no place"),
        ({"drop": "model.model.transformer.layers.0.ff.ff.2.bias"}, "do not fit"),
        ({"remove": "model_config.json"}, "model_config.json is missing"),
        ({"remove": "model.safetensors"}, "model.safetensors is missing"),
        ({"remove": "text_encoder/config.json"}, "no T5Gemma folder with a config.json"),
        ({"truncate": "model.safetensors"}, "not a readable safetensors file"),
    ],
    ids=[
        "asymmetric band",
        "no DyT",
        "v objective",
        "layer-norm qk",
        "unknown tensor",
        "missing tensor",
        "no config",
        "no weights",
        "no T5Gemma config",
        "broken weights",
    ],
)
def test_broken_hub_dirs_are_refused_clearly(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    state = hub_state()
    state.update(change.get("extra", {}))
    state.pop(change.get("drop", ""), None)
    hub = make_hub_dir(tmp_path / "hub", change.get("config"), state)
    if "remove" in change:
        (hub / change["remove"]).unlink()
    if "truncate" in change:
        data = (hub / change["truncate"]).read_bytes()
        (hub / change["truncate"]).write_bytes(data[: len(data) // 3])
    with pytest.raises(ImportSourceError, match=message.replace("(", r"\(")):
        import_source(str(hub))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop-vae", "missing components: vae"),
        ("class", "not StableAudio3Pipeline"),
        ("shape", "do not match AutoencoderSAME's config"),
    ],
)
def test_broken_diffusers_dirs_are_refused_clearly(
    imported: Imported, tmp_path: Path, damage: str, message: str
) -> None:
    source = tmp_path / "copy"
    shutil.copytree(imported.diffusers_source, source)
    if damage == "drop-vae":
        shutil.rmtree(source / "vae")
    elif damage == "class":
        index = json.loads((source / "model_index.json").read_text())
        (source / "model_index.json").write_text(json.dumps({**index, "_class_name": "Other"}))
    else:
        config = json.loads((source / "vae" / "config.json").read_text())
        config["latent_dim"] = 8
        (source / "vae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ImportSourceError, match=message):
        import_source(str(source))


# ------------------------------------------------------- full shapes, on the meta device
def test_full_small_and_medium_shapes_have_the_published_sizes() -> None:
    """Published: small 433 M, medium 1.4 B. Both are the DiT's text-to-audio parameters:
    everything in ``StableAudio3DiTModel`` but the per-block inpainting projection
    (``to_local_embed``); neither the SAME autoencoder nor the T5Gemma encoder is counted."""
    from diffusers import AutoencoderSAME, StableAudio3DiTModel

    def count(module: torch.nn.Module, without: str = "") -> int:
        return sum(
            p.numel() for n, p in module.named_parameters() if not without or without not in n
        )

    with torch.device("meta"):
        small = StableAudio3DiTModel(
            embed_dim=1024, depth=20, num_heads=16, ff_mult=4.0, use_differential_attention=False
        )
        medium = StableAudio3DiTModel(embed_dim=1536, depth=24, num_heads=24, ff_mult=4.0)
        same_s = AutoencoderSAME(encoder_channels=128, encoder_transformer_depths=(6,))
        same_l = AutoencoderSAME(encoder_channels=256, encoder_transformer_depths=(12,))
    assert round(count(small, "to_local_embed") / 1e6) == 433
    assert round(count(medium, "to_local_embed") / 1e8) / 10 == 1.4
    # With the inpainting projections: 459 M and 1.45 B; the autoencoders on their own.
    assert round(count(small) / 1e6) == 459
    assert round(count(medium) / 1e7) == 145
    assert round(count(same_s) / 1e6, 1) == 107.5
    assert round(count(same_l) / 1e6) == 852


# ------------------------------------------------------------------ SAME-S (small)
def test_same_s_converts_with_its_chunked_attention_recorded(tmp_path: Path) -> None:
    from diffusers import AutoencoderSAME

    from stable_audio_bento.engine.sa3 import same as sa3_same
    from stable_audio_bento.engine.sa3.convert import diffusers_facts

    hub = make_hub_dir(tmp_path / "hub", manifest=SMALL)
    out = tmp_path / "entry"
    convert_hub_dir(hub, out)
    extras = sa3_same.same_extras(out / "vae")
    assert extras == {
        "attention": "chunked",
        "chunk_size": 8,
        "chunk_midpoint_shift": True,
        "decoder_mapping_kernel": 3,
        "latent_align": 2,  # chunk_size 8 // stride 4: the reference's length alignment
    }
    vae = sa3_same.load_vae(out / "vae")
    assert sa3_same.uses_chunks(vae)
    source = load_file(str(hub / "model.safetensors"))
    mapping = "pretransform.model.decoder.layers.3.mapping.weight_v"
    assert torch.equal(vae.decoder.blocks[0].mapping.weight_v, source[mapping])
    with torch.no_grad():
        latents = sa3_same.encode(vae, torch.randn(2, 2, 384))
        audio = sa3_same.decode(vae, latents)
        alone = sa3_same.decode(vae, latents[1:])
    assert latents.shape == (2, 16, 12)
    assert audio.shape == (2, 2, 384)
    # Chunks never mix batch items (random weights: outputs in the thousands).
    assert (audio[1:] - alone).abs().max() <= 1e-5 * alone.abs().max()
    # Stock diffusers cannot run it: its kernel-1 mapping does not take the weights.
    with pytest.raises((RuntimeError, ValueError)):
        AutoencoderSAME.from_pretrained(str(out / "vae"), local_files_only=True)
    # A copy in diffusers' layout validates against the same SAME-S build.
    assert diffusers_facts(out).latent_downsampling == 32


def test_same_s_chunks_must_hold_whole_latents(tmp_path: Path) -> None:
    config = json.loads(json.dumps(SMALL["model_config"]))
    for half in ("encoder", "decoder"):
        config["model"]["pretransform"]["config"][half]["config"]["chunk_size"] = 6
    hub = make_hub_dir(tmp_path / "hub", config, manifest=SMALL)
    with pytest.raises(ImportSourceError, match="chunk_size=6 is not supported"):
        import_source(str(hub))


def test_a_same_s_entry_serves_through_the_engine(tmp_path: Path) -> None:
    """The small models' entries load and generate: SAME-S's chunked decode and encode, the
    entry's own prompt length, exact lengths, and a variation through the chunked encoder."""
    import numpy as np

    from stable_audio_bento.audio import set_level
    from stable_audio_bento.engine.contract import EngineRequest, LoadOptions
    from stable_audio_bento.engine.sa3 import same as sa3_same
    from stable_audio_bento.engine.sa3.engine import SA3Engine
    from stable_audio_bento.engine.sa3.importer import sa3_metadata

    hub = make_hub_dir(tmp_path / "hub", manifest=SMALL)
    entry = tmp_path / "entry"
    facts = convert_hub_dir(hub, entry)
    meta = sa3_metadata("small-tiny", entry, facts, source=str(hub), revision=None, aliases=[])
    engine = SA3Engine.load(
        entry, "small-tiny", meta, LoadOptions(device="cpu", half=False, check=False)
    )
    parts = engine.parts
    assert parts is not None and sa3_same.uses_chunks(parts.vae)
    assert engine.text_tokens == facts.prompt_max_length == meta["prompt_max_length"]
    sampling = engine.info.sampling(steps=2)
    rate = engine.info.sample_rate
    # 0.3 s: not a whole number of SAME-S chunks (8 frames x 32 samples), so both pad.
    request = EngineRequest(prompt="glass breaking", seed=3, seconds_total=0.3)
    (audio,) = engine.generate([request], sampling)
    assert audio.shape == (2, round(0.3 * rate)) and np.isfinite(audio).all()
    assert np.abs(audio).max() > 0
    # The engine's decode is sa3_same's, cropped: the same latent decodes to the same audio.
    latent = engine.sample([request], sampling)
    with torch.inference_mode():
        direct = sa3_same.decode(parts.vae, latent)[0, :, : audio.shape[-1]]
    # (The model's level, attenuated above full scale; no decoder noise in this config.)
    expected = set_level(direct.numpy(), "attenuate")
    assert np.abs(audio - expected).max() <= 1e-5
    source = np.ascontiguousarray(audio)
    variation = EngineRequest(
        prompt="glass breaking", seed=4, seconds_total=0.3, init_audio=source, init_noise_level=0.3
    )
    (varied,) = engine.generate([variation], sampling)
    assert varied.shape == audio.shape and np.isfinite(varied).all()
    # Half precision reaches SAME-S too (bfloat16 keeps float32's range: the check passes).
    half = SA3Engine.load(entry, "small-tiny", meta, LoadOptions(device="cpu", dtype="bfloat16"))
    assert half.dtype_name == "bfloat16" and half.parts is not None
    assert next(half.parts.vae.parameters()).dtype == torch.bfloat16
    (low,) = half.generate([request], sampling)
    assert low.shape == audio.shape and np.isfinite(low).all()
