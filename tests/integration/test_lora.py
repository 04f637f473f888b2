"""LoRA adapters on both demo families: import checks, the math on our modules, isolation.

LoRA files are written here in the reference's format (``tests/lora_files.py``); the parity
run (``parity/lora_reference.py``) checks the same code against the reference's own loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stable_audio_bento.engine import EngineRequest
from stable_audio_bento.engine.lora.apply import EngineLoras
from stable_audio_bento.engine.lora.layout import engine_layer, engine_modules, to_ours
from stable_audio_bento.errors import ImportSourceError, InvalidRequestError
from stable_audio_bento.lora.store import LoraNotFoundError, import_lora, list_loras
from stable_audio_bento.pipeline.batching import BatchedAudio, Batcher
from stable_audio_bento.pipeline.generation import AudioGenerator
from stable_audio_bento.pipeline.registry import ModelRegistry
from stable_audio_bento.schemas import GenerationParams, GenerationsRequest
from stable_audio_bento.settings import Settings
from tests.lora_files import base_layers, write_lora

pytestmark = pytest.mark.integration

FAMILIES = {"sao": "demo", "sa3": "demo-sa3"}
REQUEST = EngineRequest("rain on a tin roof", seed=7, seconds_total=0.5)


@pytest.fixture(scope="module")
def registry(demo_tag: str, demo_sa3_tag: str) -> Iterator[ModelRegistry]:
    registry = ModelRegistry(Settings(device="cpu", max_batch_size=4))
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def loras(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Per family: a plain LoRA, a second one, a DoRA (rows) and a BoRA-XS, imported."""
    folder = tmp_path_factory.mktemp("loras")
    tags: dict[str, str] = {}
    for family, model in FAMILIES.items():
        entry = registry.resolve(model)
        layers = base_layers(entry)
        for label, kind, seed in (
            ("plain", "lora", 1),
            ("second", "lora", 2),
            ("dora", "dora-rows", 3),
            ("boraxs", "bora-xs", 4),
        ):
            path = write_lora(folder / f"{family}-{label}.safetensors", layers, kind, seed=seed)
            tags[f"{family}-{label}"] = import_lora(str(path), model)
    return tags


def weights_digest(engine: object) -> str:
    components, _, _ = engine_modules(engine)
    digest = hashlib.sha256()
    for root in components.values():
        for name, tensor in sorted(root.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def generate(
    registry: ModelRegistry,
    model: str,
    sets: list[tuple[tuple[str, float], ...]],
    request: EngineRequest = REQUEST,
    cfg_scale: float | None = None,
) -> list[BatchedAudio]:
    """``request`` once per LoRA set, queued at once through a coalescer."""
    with registry.use(model) as loaded:
        batcher = Batcher(loaded.engine, max_batch_size=8, max_wait=1.0)
        sampling = loaded.engine.info.sampling(steps=2, cfg_scale=cfg_scale)
        try:
            futures = [
                batcher.submit(dataclasses.replace(request, loras=s), sampling) for s in sets
            ]
            return [f.result(timeout=300) for f in futures]
        finally:
            batcher.close()


@contextmanager
def lora_mode(registry: ModelRegistry, model: str, mode: str, cache_mb: int = 512) -> Iterator[Any]:
    """The loaded ``model`` applies LoRAs in ``mode`` inside the block."""
    with registry.use(model) as loaded:
        engine = loaded.engine
        saved = engine.loras
        engine.loras = EngineLoras(engine, mode, cache_mb)
        try:
            yield engine
        finally:
            engine.loras = saved


def relative_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


@pytest.mark.parametrize("family", FAMILIES)
def test_import_refuses_bad_files_and_stores_nothing(
    family: str, registry: ModelRegistry, loras: dict[str, str], tmp_path: Path
) -> None:
    model = FAMILIES[family]
    other = FAMILIES["sa3" if family == "sao" else "sao"]
    layers = base_layers(registry.resolve(model))
    before = [e.tag for e in list_loras()]
    wrong_base = write_lora(tmp_path / "other.safetensors", base_layers(registry.resolve(other)))
    with pytest.raises(ImportSourceError, match="another base"):
        import_lora(str(wrong_base), model)
    unknown = write_lora(tmp_path / "odd.safetensors", layers, extra_config={"adapter_type": "x"})
    with pytest.raises(ImportSourceError, match="unknown adapter type 'x'"):
        import_lora(str(unknown), model)
    missing = write_lora(tmp_path / "nomag.safetensors", layers, "lora")
    relabelled = write_lora(
        tmp_path / "relabel.safetensors", layers, "lora", extra_config={"adapter_type": "bora"}
    )
    with pytest.raises(ImportSourceError, match="a bora layer has"):
        import_lora(str(relabelled), model)
    bad_rank = write_lora(tmp_path / "rank.safetensors", layers, extra_config={"rank": 3})
    with pytest.raises(ImportSourceError, match="rank 3 does not match"):
        import_lora(str(bad_rank), model)
    (tmp_path / "broken.safetensors").write_bytes(b"not a file")
    with pytest.raises(ImportSourceError, match="not a readable safetensors"):
        import_lora(str(tmp_path / "broken.safetensors"), model)
    with pytest.raises(ImportSourceError, match="not in the model store"):
        import_lora(str(missing), "no-such-model")
    assert [e.tag for e in list_loras()] == before


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_lora_adds_its_scaled_delta_in_our_layout(
    family: str, registry: ModelRegistry, loras: dict[str, str]
) -> None:
    """W' = W + alpha / rank * strength * B A, converted as the base weights are (the fused,
    reordered SA3 q/k/v rows included); the base weights are back afterwards."""
    from stable_audio_bento.engine.lora.stored import load_adapter

    adapter = load_adapter(loras[f"{family}-plain"])
    with registry.use(FAMILIES[family]) as loaded:
        engine = loaded.engine
        components, sa3, differential = engine_modules(engine)
        before = weights_digest(engine)
        name = "model.model.transformer.layers.0.self_attn.to_qkv.weight"
        module, transform = engine_layer(components, name, sa3, differential)
        base = module.weight.detach().clone()
        params = adapter.layers[name]
        delta = adapter.config.scaling * 0.6 * (params["lora_B"] @ params["lora_A"])
        with torch.inference_mode(), engine.loras.merged(((adapter.tag, 0.6),)):
            adapted = module.weight.detach().clone()
        assert transform == ("qkv_reorder" if family == "sa3" else "copy")
        torch.testing.assert_close(adapted - base, to_ours(delta, transform), rtol=0, atol=1e-5)
        assert weights_digest(engine) == before


# Batch sizes of SETS (and a repeat of SETS[1]) queued at once: by set when merged; the plain
# and XS-free lora sets (and no LoRA) in one batch when applied per item.
BATCHES = {
    "merged": [1, 2, 1, 1, 1, 1, 2],
    "per-item": [5, 5, 5, 1, 1, 5, 5],
    "auto": [5, 5, 5, 1, 1, 5, 5],
}


@pytest.mark.parametrize("mode", BATCHES)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_request_gets_its_own_loras_whatever_runs_with_it(
    family: str, mode: str, registry: ModelRegistry, loras: dict[str, str]
) -> None:
    """Requests queued at once with different LoRA sets and strengths each get the audio they
    get alone: in a batch of their own when merged (identical), or sharing one batch with other
    sets applied per item (float rounding of the batch only); strength 0 is the base model;
    the shared weights are untouched."""
    model = FAMILIES[family]
    plain, second, dora, boraxs = (
        loras[f"{family}-{k}"] for k in ("plain", "second", "dora", "boraxs")
    )
    sets = [
        (),
        ((plain, 1.0),),
        ((plain, 0.5),),
        ((plain, 1.0), (dora, 0.8), (boraxs, 0.7)),
        ((dora, 0.0),),
        ((second, 1.0),),
    ]
    with lora_mode(registry, model, mode) as engine:
        before = weights_digest(engine)
        together = generate(registry, model, [*sets, sets[1]])
        assert [t.batch_size for t in together] == BATCHES[mode]
        # Same seed, prompt and set in one batch: equal up to float rounding of the batch.
        assert relative_change(together[1].audio, together[-1].audio) < 5e-5
        together = together[:-1]
        alone = [generate(registry, model, [s])[0] for s in sets]
        assert weights_digest(engine) == before
    for i, (mixed, single) in enumerate(zip(together, alone, strict=True)):
        if mixed.batch_size == 1:  # its own batch whatever else was queued: identical
            np.testing.assert_array_equal(mixed.audio, single.audio, err_msg=str(i))
        else:
            assert relative_change(mixed.audio, single.audio) < 5e-5, i
    base = alone[0].audio
    np.testing.assert_array_equal(alone[4].audio, base)  # DoRA at strength 0: the base weights
    changed = [float(np.abs(a.audio - base).max()) for a in alone[1:4] + alone[5:]]
    assert min(changed) > 1e-3, changed
    assert float(np.abs(alone[1].audio - alone[2].audio).max()) > 1e-3  # strength matters


@pytest.mark.parametrize("family", FAMILIES)
def test_per_item_is_the_merged_math_with_guidance_and_negative_prompts(
    family: str, registry: ModelRegistry, loras: dict[str, str]
) -> None:
    """With classifier-free guidance (the DiT sees every item twice) and a negative prompt on
    some items, a batch mixing sets applied per item gives each item the audio of its set
    merged, alone; a request without LoRAs in that batch gets exactly the base model's."""
    model = FAMILIES[family]
    plain, second = loras[f"{family}-plain"], loras[f"{family}-second"]
    sets = [((plain, 0.7),), (), ((second, 1.0), (plain, 0.4)), ((second, 1.5),)]
    negative = dataclasses.replace(REQUEST, negative_prompt="hiss", prompt="thunder far away")
    requests = [REQUEST, negative, negative, REQUEST]
    with lora_mode(registry, model, "per-item") as engine:
        sampling = engine.info.sampling(steps=2, cfg_scale=5.0)
        batch = [dataclasses.replace(r, loras=s) for r, s in zip(requests, sets, strict=True)]
        with engine.loras.applied([r.loras for r in batch]) as how:
            assert how == "per-item"
        mixed = engine.generate(batch, sampling)
        base = engine.generate([requests[1]], sampling)[0]
    with lora_mode(registry, model, "merged") as engine:
        merged = [engine.generate([r], sampling)[0] for r in batch]
    # Guidance amplifies float rounding: on the SA3 demo at cfg 5 the same request merged in a
    # batch of two is 4e-5 from itself alone, per item 1e-4 to 1.5e-4; the LoRAs move the audio
    # by 0.6 to 0.8 (relative RMS).
    for i, (ours, alone) in enumerate(zip(mixed, merged, strict=True)):
        assert relative_change(ours, alone) < 1e-3, (i, relative_change(ours, alone))
    assert relative_change(mixed[1], base) < 5e-5
    assert min(relative_change(merged[i], base) for i in (0, 2, 3)) > 0.1


def test_auto_merges_what_is_cached_or_fits_and_never_thrashes(
    registry: ModelRegistry, loras: dict[str, str]
) -> None:
    """auto: a batch's one set is merged when cached or when it fits the cache as it is, else
    applied per item; DoRA / BoRA sets are always merged; a set with a text encoder layer is
    merged; ``merged`` mode never mixes sets."""
    from stable_audio_bento.engine.lora.merge import merged_bytes
    from stable_audio_bento.engine.lora.stored import Adapter, load_adapter

    plain, second, dora = (loras[f"sao-{k}"] for k in ("plain", "second", "dora"))
    with lora_mode(registry, "demo", "auto") as engine:
        size = merged_bytes(engine, ((plain, 1.0),), load_adapter)
        one_set_mb = -(-size // 2**20)
    with lora_mode(registry, "demo", "auto", cache_mb=one_set_mb) as engine:
        policy = engine.loras
        assert policy.batch_key(((plain, 1.0),)) == policy.batch_key(()) == "per-item"
        assert policy.batch_key(((dora, 1.0),)) == ((dora, 1.0),)
        assert policy.merges(((plain, 1.0),))  # fits the empty cache
        with policy.applied([((plain, 1.0),)]) as how:
            assert how == "merged"
        assert policy.nbytes() == size and engine.nbytes() > size
        assert policy.merges(((plain, 1.0),))  # cached
        assert not policy.merges(((second, 1.0),))  # would evict the cached set
        with policy.applied([((second, 1.0),)]) as how:
            assert how == "per-item"
        assert policy.counts == {"merged": 1, "built": 1, "per-item": 1}
        assert policy.merges(((dora, 1.0),))  # DoRA renormalises: merged whatever the cache
    with lora_mode(registry, "demo", "merged") as engine:
        assert engine.loras.batch_key(((plain, 1.0),)) == ((plain, 1.0),)
    with lora_mode(registry, "demo-sa3", "auto") as engine:
        text = "conditioner.conditioners.prompt.model.encoder.layers.0.self_attn.q_proj.weight"
        module = engine.parts.text_encoder.get_submodule("encoder.layers.0.self_attn.q_proj")
        rank = 2
        layers = {
            text: {
                "lora_A": torch.zeros(rank, module.in_features),
                "lora_B": torch.zeros(module.out_features, rank),
            }
        }
        config = load_adapter(loras["sa3-plain"]).config
        found = {"text-lora": Adapter("text-lora", config, layers)}
        policy = EngineLoras(engine, "auto", load=found.__getitem__)
        assert not policy.can_apply_per_item((("text-lora", 1.0),))
        assert policy.batch_key((("text-lora", 1.0),)) == (("text-lora", 1.0),)


def test_requests_name_loras_by_store_name_for_their_own_base(
    registry: ModelRegistry, loras: dict[str, str]
) -> None:
    generator = AudioGenerator(registry.settings, registry)
    plan = generator.plan(
        GenerationParams(prompt="rain", model="demo", loras=(("sao-plain", 0.8), ("sao-dora", 1)))
    )
    assert plan.requests[0].loras == ((loras["sao-plain"], 0.8), (loras["sao-dora"], 1))
    with pytest.raises(LoraNotFoundError, match="The LoRA `nope` does not exist"):
        generator.plan(GenerationParams(prompt="rain", model="demo", loras=(("nope", 1.0),)))
    with pytest.raises(InvalidRequestError, match="is for the model `stable-audio-3-demo`") as e:
        generator.plan(GenerationParams(prompt="rain", model="demo", loras=(("sa3-plain", 1.0),)))
    assert e.value.field == "loras"


def test_strength_and_count_are_bounded() -> None:
    from pydantic import ValidationError

    ok = GenerationsRequest.model_validate({"prompt": "x", "loras": [{"name": "a", "strength": 2}]})
    assert ok.to_params().loras == (("a", 2.0),)
    for bad in (
        [{"name": "a", "strength": 2.5}],
        [{"name": "a", "strength": -0.1}],
        [{"name": ""}],
        [{"name": "a", "weight": 1}],
        [{"name": "a"}] * 5,
    ):
        with pytest.raises(ValidationError):
            GenerationsRequest.model_validate({"prompt": "x", "loras": bad})
    params = GenerationsRequest.model_validate(
        {"prompt": "x", "loras": [{"name": "a", "strength": 0.5}]}
    ).to_params()
    assert GenerationParams.from_record(params.to_record()) == params


def test_a_lora_that_cannot_be_read_fails_only_its_own_requests(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    import bentoml

    from stable_audio_bento.engine.lora.stored import ADAPTER_FILE
    from stable_audio_bento.errors import ModelLoadError

    path = write_lora(tmp_path / "broken-later.safetensors", base_layers(registry.resolve("demo")))
    tag = import_lora(str(path), "demo")
    (Path(bentoml.models.get(tag).path) / ADAPTER_FILE).write_bytes(b"truncated")
    generator = AudioGenerator(registry.settings, registry)
    params = GenerationParams(prompt="rain", model="demo", seconds_total=0.5, steps=2, seed=3)
    with pytest.raises(ModelLoadError, match="broken-later"):
        generator.generate(dataclasses.replace(params, loras=(("broken-later", 1.0),)))
    assert generator.generate(params).encoded.data[:4] == b"RIFF"


def test_audio_in_forms_take_loras_as_a_json_list() -> None:
    from pydantic import ValidationError

    from stable_audio_bento.http.audio_to_audio import AudioInFields

    fields = AudioInFields.model_validate(
        {"prompt": "x", "loras": '[{"name": "a", "strength": 0.5}, {"name": "b"}]'}
    )
    assert fields.to_spec("audio-to-audio").params.loras == (("a", 0.5), ("b", 1.0))
    with pytest.raises(ValidationError, match="loras"):
        AudioInFields.model_validate({"prompt": "x", "loras": '[{"name": "a", "strength": 9}]'})


def test_import_lora_from_a_hub_repo(registry: ModelRegistry, tmp_path: Path) -> None:
    """``owner/repo`` (its one LoRA file) or ``owner/repo/file`` through the CLI, against a
    local stand-in for the hub; a repo with two LoRA files asks which."""
    import os
    import subprocess
    import sys

    from tests.fake_hub import FakeRepo, fake_hub
    from tests.servers import REPO_ROOT

    layers = base_layers(registry.resolve("demo"))
    one = write_lora(tmp_path / "one.safetensors", layers, seed=7).read_bytes()
    two = write_lora(tmp_path / "two.safetensors", layers, "dora-rows", seed=8).read_bytes()
    repos = {
        "someone/rain-style": FakeRepo({"rain.safetensors": one, "README.md": b"a LoRA"}),
        "someone/two-styles": FakeRepo({"a.safetensors": one, "b.safetensors": two}),
    }
    with fake_hub(repos) as (endpoint, _):
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "hf-cache"))

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "models", "import-lora", *args, "--base", "demo"],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )

        done = cli("someone/rain-style")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("rain:")
        ambiguous = cli("someone/two-styles")
        assert ambiguous.returncode == 2
        assert "has 2 LoRA files (a.safetensors, b.safetensors)" in ambiguous.stderr
        named = cli("someone/two-styles/b.safetensors", "--name", "hub-dora")
        assert named.returncode == 0, named.stderr
    entries = {e.name: e for e in list_loras()}
    assert entries["rain"].metadata["source"] == "someone/rain-style"
    assert entries["hub-dora"].metadata["adapter_type"] == "dora-rows"


def test_cached_lora_weights_count_in_the_memory_budget(
    registry: ModelRegistry, loras: dict[str, str]
) -> None:
    """Two copies of the demo fit the budget; once the first caches merged LoRA weights
    larger than the slack, loading the second evicts it."""
    import math

    from stable_audio_bento.store.catalog import ModelCatalog, ModelEntry

    demo = registry.resolve("demo")
    with registry.use("demo") as loaded:
        weights = loaded.engine.nbytes() - loaded.engine.loras.nbytes()
    budget_mb = math.ceil(2 * weights / 2**20)
    slack = budget_mb * 2**20 - 2 * weights
    catalog = ModelCatalog(
        [ModelEntry(n, "v1", demo.path, {**demo.metadata, "aliases": []}) for n in ("a", "b")]
    )
    settings = Settings(device="cpu", max_loaded_models=5, model_memory_budget_mb=budget_mb)
    both = ModelRegistry(settings, catalog)
    pair = ModelRegistry(settings, catalog)
    try:
        for name in ("a", "b"):
            with both.use(name):
                pass
        assert both.loaded_names() == ["a", "b"]  # the control: no LoRA weights, both fit
        with pair.use("a") as a:
            for strength in (1.0, 0.5):
                with a.engine.loras.merged(((loras["sao-plain"], strength),)):
                    pass
            assert a.engine.loras.nbytes() > slack
            assert a.engine.nbytes() == weights + a.engine.loras.nbytes()
        with pair.use("b"):
            pass
        assert pair.loaded_names() == ["b"]
    finally:
        both.close()
        pair.close()


def test_int8_layers_take_plain_loras_per_item_and_refuse_to_merge_clearly(
    registry: ModelRegistry, loras: dict[str, str]
) -> None:
    """The CPU fast path's int8 DiT holds no float weights: plain LoRAs are applied per item
    there whatever the mode (an int8 layer's output plus exactly the LoRA's delta), and a DoRA,
    which must be merged, fails its request with a message that says why."""
    from stable_audio_bento.engine.lora.per_item import per_item, quantized
    from stable_audio_bento.engine.lora.stored import load_adapter
    from stable_audio_bento.errors import GenerationError

    plain, dora = loras["sao-plain"], loras["sao-dora"]
    adapter = load_adapter(plain)
    with_lora = dataclasses.replace(REQUEST, loras=((plain, 0.8),))
    int8 = ModelRegistry(Settings(device="cpu", cpu_fast="int8", max_batch_size=4))
    try:
        with int8.use("demo") as loaded:
            engine = loaded.engine
            assert engine.precision == "int8"
            for mode in ("auto", "merged", "per-item"):
                policy = EngineLoras(engine, mode)
                assert policy.batch_key(((plain, 0.8),)) == "per-item"
                assert not policy.merges(((plain, 0.8),)) and not policy.can_merge(((plain, 0.8),))
            components, sa3, differential = engine_modules(engine)
            name = "model.model.transformer.layers.0.self_attn.to_qkv.weight"
            module, _ = engine_layer(components, name, sa3, differential)
            assert quantized(module)
            x = torch.randn(2, 5, module.in_features, generator=torch.Generator().manual_seed(0))
            params = adapter.layers[name]
            delta = adapter.config.scaling * 0.8 * (x @ params["lora_A"].T @ params["lora_B"].T)
            with torch.inference_mode():
                base = module(x)
                with per_item(engine, [((plain, 0.8),), ()], load_adapter, {}):
                    adapted = module(x)
            torch.testing.assert_close(adapted[0], base[0] + delta[0], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(adapted[1], base[1], rtol=0, atol=0)
            sampling = engine.info.sampling(steps=2)
            ours, alone = engine.generate([with_lora, REQUEST], sampling)
            assert relative_change(ours, alone) > 1e-2
            with pytest.raises(GenerationError, match=r"holds no float weight .* dora-rows LoRA"):
                engine.generate([dataclasses.replace(REQUEST, loras=((dora, 1.0),))], sampling)
    finally:
        int8.close()


def test_the_settings_reach_each_loaded_engine(demo_tag: str) -> None:
    settings = Settings(device="cpu", lora_apply="merged", lora_cache_mb=7)
    registry = ModelRegistry(settings)
    try:
        with registry.use("demo") as loaded:
            assert loaded.engine.loras.mode == "merged"
            assert loaded.engine.loras.cache.budget == 7 * 2**20
    finally:
        registry.close()
    with pytest.raises(ValueError, match="LoRA mode must be one of auto, merged, per-item"):
        EngineLoras(object(), "sometimes")
