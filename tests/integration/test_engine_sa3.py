"""The Stable Audio 3 engine on the SA3 demo, loaded the way the service loads it.

The demo has the real SA3 architecture (DiT with memory tokens, SAME with differential
attention at 44.1 kHz and 4096x downsampling, T5Gemma, duration embedder), so short requests
are cheap: every test here runs its own generations.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stable_audio_bento.audio import FloatAudio
from stable_audio_bento.engine import AudioEngine, EngineRequest, LoadOptions, model_info
from stable_audio_bento.engine.sa3.decode import decode as linear_decode
from stable_audio_bento.engine.sa3.engine import SA3Engine, read_info
from stable_audio_bento.errors import GenerationError, InvalidRequestError, ModelLoadError
from stable_audio_bento.pipeline.registry import ModelRegistry
from stable_audio_bento.settings import Settings
from stable_audio_bento.store.catalog import ModelEntry

SAMPLE_RATE = 44100
RATIO = 4096
# Relative RMS difference: a batch position moves a sample by ~1e-7 (float rounding); a change
# of seed, prompt, length or negative prompt moves the demo's output by far more than 1e-3.
SAME = 1e-5
CHANGED = 1e-3
BASE = EngineRequest(prompt="dog barking in the rain", seed=11, seconds_total=1.5)


def relative_change(a: FloatAudio, b: FloatAudio) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a**2)))


@pytest.fixture(scope="module")
def registry(demo_sa3_tag: str) -> Iterator[ModelRegistry]:
    # device "auto" and half precision on, as a default server: no GPU here, so CPU float32.
    registry = ModelRegistry(Settings(device="auto", model_half=True, max_batch_size=4))
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def entry(registry: ModelRegistry) -> ModelEntry:
    return registry.resolve("demo-sa3")


@pytest.fixture(scope="module")
def engine(registry: ModelRegistry) -> Iterator[SA3Engine]:
    with registry.use("demo-sa3") as loaded:
        assert isinstance(loaded.engine, SA3Engine)
        yield loaded.engine


def run(engine: SA3Engine, requests: list[EngineRequest], **sampling: object) -> list[FloatAudio]:
    return engine.generate(requests, engine.info.sampling(**sampling))  # type: ignore[arg-type]


def test_loads_as_an_sa3_engine_on_the_cpu_in_float32(engine: SA3Engine) -> None:
    assert isinstance(engine, AudioEngine)
    assert (engine.device, engine.dtype_name) == ("cpu", "float32")
    assert engine.nbytes() > 1_000_000
    info = engine.info
    assert (info.backend, info.sample_rate, info.channels) == ("diffusers-sa3", 44100, 2)
    assert (info.latent_downsampling, info.max_seconds, info.fixed_window) == (4096, 120.0, False)
    # Distilled: the card's 8 ping-pong steps at cfg 1, no negative prompt.
    assert (info.default_steps, info.default_cfg_scale, info.default_sampler) == (
        8,
        1.0,
        "pingpong",
    )
    assert info.default_negative_prompt is None
    assert info.options == {"negative_prompt", "duration_padding", "apg_scale"}
    assert info.describe()["max_seconds"] == 120.0


def test_store_metadata_and_model_info_agree(entry: ModelEntry, engine: SA3Engine) -> None:
    assert entry.metadata["backend"] == "diffusers-sa3"
    assert "demo-sa3" in entry.aliases
    assert model_info(entry) == engine.info


def test_base_models_default_to_real_cfg(entry: ModelEntry, tmp_path: Path) -> None:
    """A scheduler without stochastic sampling is a base model: Euler, CFG, its negative."""
    copy = tmp_path / "base"
    shutil.copytree(entry.path, copy)
    scheduler = copy / "scheduler" / "scheduler_config.json"
    config = json.loads(scheduler.read_text())
    scheduler.write_text(json.dumps({**config, "stochastic_sampling": False}))
    info = read_info(copy, "base", {"max_seconds": 380, "negative_prompt": "low quality"})
    assert (info.objective, info.default_sampler, info.default_cfg_scale) == (
        "rectified_flow",
        "euler",
        7.0,
    )
    assert (info.max_seconds, info.default_negative_prompt) == (380.0, "low quality")


@pytest.mark.parametrize("seconds", [1.0, 0.37, 2.5, 12345 / SAMPLE_RATE, 1 / SAMPLE_RATE])
def test_exact_length_and_never_clipping(engine: SA3Engine, seconds: float) -> None:
    request = EngineRequest(prompt="a bell", seed=3, seconds_total=seconds)
    (audio,) = run(engine, [request], steps=2)
    assert audio.dtype == np.float32
    assert audio.shape == (2, round(seconds * SAMPLE_RATE))
    assert float(np.abs(audio).max()) <= 1.0
    (loud,) = run(engine, [replace(request, normalize="peak")], steps=2)
    if audio.shape[-1] > 100:
        assert float(np.abs(loud).max()) == pytest.approx(0.98, abs=1e-6)


def test_the_output_level_is_the_models_own_unless_asked(engine: SA3Engine) -> None:
    """SA3's reference never boosts: a request's audio keeps the model's level (divided by its
    peak only above full scale); ``normalize`` asks for the peak normalisation or the clamp."""
    (kept,) = run(engine, [BASE], steps=2)
    (peak,) = run(engine, [replace(BASE, normalize="peak")], steps=2)
    (clamped,) = run(engine, [replace(BASE, normalize="clamp")], steps=2)
    level = float(np.abs(kept).max())
    assert level <= 1.0
    assert float(np.abs(peak).max()) == pytest.approx(0.98, abs=1e-6)
    # The same audio at another gain.
    np.testing.assert_allclose(peak * (level / 0.98), kept, atol=1e-6)
    if level < 1.0:  # nothing above full scale: the clamp and the attenuation agree
        np.testing.assert_array_equal(clamped, kept)


def test_the_latent_is_as_long_as_the_request(engine: SA3Engine) -> None:
    info = engine.info
    # The reference's rounding: whole samples, up to the 4096x ratio, then to an even count.
    assert info.latent_frames(EngineRequest("x", 0, 10.0)) == 108  # ceil(10 * 44100 / 4096)
    assert info.latent_frames(EngineRequest("x", 0, 10.0, padding_seconds=1.0)) == 120  # 119
    assert info.latent_frames(EngineRequest("x", 0, 3.0, padding_seconds=6.0)) == 98  # 97
    assert info.batch_key(EngineRequest("x", 0, 1.0)) != info.batch_key(EngineRequest("x", 0, 2))


def test_a_request_gives_the_same_audio_alone_or_in_a_batch(engine: SA3Engine) -> None:
    # Ping-pong re-noises at every step: each item's draws come from its own seed. The three
    # lengths share a latent length (one batch), each is cut to its own length.
    others = [
        EngineRequest(prompt="thunder", seed=5, seconds_total=1.55),
        EngineRequest(prompt="a cat purring", seed=99, seconds_total=1.5, negative_prompt=""),
    ]
    batch = run(engine, [others[0], BASE, others[1]])
    (alone,) = run(engine, [BASE])
    assert relative_change(batch[1], alone) < SAME
    assert batch[0].shape == (2, round(1.55 * SAMPLE_RATE))
    assert relative_change(batch[0][:, : batch[2].shape[-1]], batch[2]) > CHANGED
    # The same request twice in one batch: two identical items.
    twice = run(engine, [BASE, BASE])
    assert relative_change(twice[0], twice[1]) < SAME


def test_requests_of_different_latent_lengths_never_share_a_batch(engine: SA3Engine) -> None:
    with pytest.raises(GenerationError, match="latent length"):
        run(engine, [BASE, EngineRequest("x", 1, 5.0)])


def test_generation_leaves_the_global_rng_alone(engine: SA3Engine) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    run(engine, [BASE], steps=2)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 12},
        {"prompt": "piano melody"},
        {"seconds_total": 1.49},  # the same latent length, another duration conditioning
        {"padding_seconds": 1.0},
    ],
)
def test_seed_prompt_length_and_padding_change_the_output(
    engine: SA3Engine, change: dict[str, object]
) -> None:
    (base,) = run(engine, [BASE])
    (changed,) = run(engine, [EngineRequest(**{**BASE.__dict__, **change})])  # type: ignore[arg-type]
    n = min(base.shape[-1], changed.shape[-1])
    assert relative_change(base[:, :n], changed[:, :n]) > CHANGED


def test_cfg_and_negative_prompt_change_the_output(engine: SA3Engine) -> None:
    (plain,) = run(engine, [BASE], cfg_scale=1.0)
    (guided,) = run(engine, [BASE], cfg_scale=4.0)
    negative = EngineRequest(**{**BASE.__dict__, "negative_prompt": "wind"})
    (steered,) = run(engine, [negative], cfg_scale=4.0)
    assert relative_change(plain, guided) > CHANGED
    assert relative_change(guided, steered) > CHANGED
    # And per request in one batch: each row keeps its own negative prompt.
    batch = run(engine, [BASE, negative], cfg_scale=4.0)
    assert relative_change(batch[0], guided) < SAME
    assert relative_change(batch[1], steered) < SAME


def test_progress_is_reported_once_per_step(engine: SA3Engine) -> None:
    calls: list[tuple[int, int]] = []
    engine.generate([BASE], engine.info.sampling(steps=5), lambda i, n: calls.append((i, n)))
    assert calls == [(i, 5) for i in range(1, 6)]


@pytest.mark.parametrize("sampler", ["pingpong", "euler", "dpmpp"])
def test_every_sampler_gives_finite_seeded_audio(engine: SA3Engine, sampler: str) -> None:
    first, second = (run(engine, [BASE], steps=4, sampler=sampler)[0] for _ in range(2))
    assert np.array_equal(first, second)
    assert np.isfinite(first).all()


@pytest.mark.parametrize("frames", [1, 2, 9, 40])
def test_linear_decode_equals_diffusers_decode(engine: SA3Engine, frames: int) -> None:
    vae = engine.parts.vae  # type: ignore[union-attr]
    latents = torch.randn(
        2, vae.config.latent_dim, frames, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        theirs = vae.decode(latents).sample
        ours = linear_decode(vae, latents)
        small_chunks = linear_decode(vae, latents, chunk=23)
        # Only the first 3 frames' samples kept: later frames are skipped, the samples agree.
        kept = linear_decode(vae, latents, samples=3 * RATIO - 5)
    assert ours.shape == theirs.shape == (2, 2, frames * RATIO)
    scale = float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) < 1e-5 * scale
    assert float((small_chunks - theirs).abs().max()) < 1e-5 * scale
    assert kept.shape[-1] == min(3 * RATIO - 5, frames * RATIO)
    assert float((kept - theirs[..., : kept.shape[-1]]).abs().max()) < 1e-5 * scale


def test_start_is_refused_naming_the_field(engine: SA3Engine) -> None:
    request = EngineRequest("x", 1, 2.0, seconds_start=1.0)
    with pytest.raises(InvalidRequestError, match="audio_start") as caught:
        engine.info.check_request(request, {"seconds_start": "audio_start"})
    assert caught.value.field == "audio_start"
    with pytest.raises(InvalidRequestError, match="120"):
        engine.info.check_request(EngineRequest("x", 1, 121.0))


def _overflowing_copy(entry: ModelEntry, target: Path) -> Path:
    """The demo with a latent scale far past float16's range (65504), finite in bfloat16."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(entry.path, target)
    weights = target / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["bottleneck.running_std"] = state["bottleneck.running_std"] * 1e6
    save_file(state, str(weights), metadata={"format": "pt"})
    return target


def test_half_precision_that_overflows_falls_back(
    entry: ModelEntry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _overflowing_copy(entry, tmp_path / "overflow")
    with caplog.at_level(logging.WARNING):
        engine = SA3Engine.load(
            path, "overflow", dict(entry.metadata), LoadOptions(device="cpu", dtype="float16")
        )
    assert engine.dtype_name == "bfloat16"
    assert "non-finite audio in float16" in caplog.text
    assert engine.stats.batches == 0  # the check is not counted as a request
    (audio,) = run(engine, [BASE], steps=2)
    assert np.isfinite(audio).all() and audio.shape == (2, round(1.5 * SAMPLE_RATE))


def test_a_model_without_weights_is_a_load_error(entry: ModelEntry, tmp_path: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(entry.path, copy)
    (copy / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="broken"):
        SA3Engine.load(copy, "broken", dict(entry.metadata), LoadOptions(device="cpu"))


def test_unload_frees_the_weights(entry: ModelEntry) -> None:
    engine = SA3Engine.load(entry.path, entry.name, dict(entry.metadata), LoadOptions(device="cpu"))
    run(engine, [BASE], steps=1)
    engine.unload()
    assert engine.nbytes() == 0
    with pytest.raises(GenerationError, match="unloaded"):
        run(engine, [BASE], steps=1)


SHIFT = {"type": "logsnr", "anchor_length": 2000, "rate": 1.0}


def test_reference_schedule_settings_from_the_metadata(entry: ModelEntry) -> None:
    """The reference's length-adaptive log-SNR schedule and DiT norm eps, when the entry has
    them: the noisy end drops by ``rate`` per doubling of the request's own latent length."""
    import math

    metadata = {
        **entry.metadata,
        "sampling_distribution_shift": SHIFT,
        "use_effective_length_for_schedule": True,
        "dit_norm_eps": 1e-5,
    }
    engine = SA3Engine.load(entry.path, entry.name, metadata, LoadOptions(device="cpu"))
    block = engine.parts.transformer.transformer_blocks[0]  # type: ignore[union-attr]
    assert (block.pre_norm.eps, block.cross_attend_norm.eps, block.ff_norm.eps) == (1e-5,) * 3
    assert block.self_attn.q_norm.eps == 1e-6  # the q/k norms already agree

    request = EngineRequest("x", 1, 10.0)
    frames = math.ceil(441000 / RATIO)  # 108: the request's own length
    start = -6.2 - math.log2(frames / 2000)
    sigmas = engine.schedule(request, frames + 20, 4)
    expected = [1.0] + [1 / (1 + math.exp(2 - t * (2 - start))) for t in (0.75, 0.5, 0.25)]
    assert sigmas[:4] == pytest.approx(expected, rel=1e-6) and sigmas[4] == 0.0
    plain = SA3Engine.load(entry.path, entry.name, dict(entry.metadata), LoadOptions(device="cpu"))
    assert plain.schedule(request, frames, 4) != sigmas

    # Two lengths in one latent length (1 s padded by 0.5 s, 1.5 s): two schedules, each item
    # still as alone.
    short = EngineRequest("thunder", 5, 1.0, padding_seconds=0.5)
    assert engine.info.batch_key(short) == engine.info.batch_key(BASE)
    assert engine.schedule(short, 17, 8) != engine.schedule(BASE, 17, 8)
    calls: list[int] = []
    batch = engine.generate([BASE, short], engine.info.sampling(), lambda i, n: calls.append(i))
    assert relative_change(batch[0], run(engine, [BASE])[0]) < SAME
    assert relative_change(batch[1], run(engine, [short])[0]) < SAME
    assert calls == sorted(calls) and calls[-1] == 8


def test_an_unknown_schedule_shift_is_a_load_error(entry: ModelEntry) -> None:
    metadata = {**entry.metadata, "sampling_distribution_shift": {"type": "flux"}}
    with pytest.raises(ModelLoadError, match="flux"):
        SA3Engine.load(entry.path, entry.name, metadata, LoadOptions(device="cpu"))


def test_adaptive_projected_guidance(engine: SA3Engine) -> None:
    """apg_scale 0 is plain CFG; 1 (the reference's default, so also no apg_scale) keeps only
    the guidance orthogonal to the conditioned clean estimate, which changes the output."""
    (default,) = run(engine, [BASE], cfg_scale=4.0)
    (apg0,) = run(engine, [BASE], cfg_scale=4.0, apg_scale=0.0)
    (apg1,) = run(engine, [BASE], cfg_scale=4.0, apg_scale=1.0)
    assert relative_change(default, apg1) < SAME
    assert relative_change(default, apg0) > CHANGED

    frames = engine.info.latent_frames(BASE)
    x = torch.randn(2, 32, frames, generator=torch.Generator().manual_seed(3))
    requests = [BASE, EngineRequest("thunder", 2, 1.5, negative_prompt="rain")]
    with torch.inference_mode():
        cond = engine.conditioning(requests, cfg=True)
        sigma = 0.6
        guided = engine.velocity(x, sigma, cond, 4.0, apg_scale=1.0)
        plain_v = engine.velocity(x, sigma, cond, 1.0 + 1e-9, apg_scale=0.0)
    # cfg ~1 is the conditioned velocity: the APG estimate minus the conditioned estimate is
    # orthogonal to the conditioned estimate, item by item.
    conditioned = x - sigma * plain_v
    guidance = (x - sigma * guided) - conditioned
    dots = (guidance * conditioned).sum(dim=(1, 2)) / (
        guidance.norm(dim=(1, 2)) * conditioned.norm(dim=(1, 2))
    )
    assert float(dots.abs().max()) < 1e-4
    assert float(guidance.abs().max()) > 1e-3


def test_apg_is_refused_on_a_model_without_it(engine: SA3Engine) -> None:
    info = replace(engine.info, options=frozenset({"negative_prompt"}))
    with pytest.raises(InvalidRequestError, match="apg_scale"):
        info.sampling(apg_scale=1.0)


def test_two_demo_builds_are_byte_identical(tmp_path: Path) -> None:
    from models import DEMO_SA3_RECIPE
    from stable_audio_bento.engine.sa3.demo import build_demo_sa3
    from stable_audio_bento.store.entries import content_hash

    first, second = tmp_path / "a", tmp_path / "b"
    build_demo_sa3(DEMO_SA3_RECIPE, first)
    build_demo_sa3(DEMO_SA3_RECIPE, second)
    assert content_hash(first) == content_hash(second)
    assert (first / "model_index.json").is_file()
    index = json.loads((first / "model_index.json").read_text())
    assert index["_class_name"] == "StableAudio3Pipeline"
    assert {"transformer", "vae", "text_encoder", "tokenizer", "duration_embedder"} <= set(index)
