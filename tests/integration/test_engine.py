"""The real stable-audio-tools engine on the demo model, loaded the way the service loads it.

Every generation here denoises the demo's whole 47.55 s window, so the tests share a few
batches (module fixtures) at 2 steps and check many properties on each.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models import DEMO_RECIPE
from stable_audio_bento.audio import FloatAudio
from stable_audio_bento.engine import (
    EngineRequest,
    ProgressCallback,
    SamplingParams,
    StableAudioEngine,
)
from stable_audio_bento.engine.sao.config import info_from_config
from stable_audio_bento.engine.sao.importer import build_metadata
from stable_audio_bento.errors import InvalidRequestError
from stable_audio_bento.pipeline.generation import AudioGenerator
from stable_audio_bento.pipeline.registry import ModelRegistry
from stable_audio_bento.schemas import AudioGenerateRequest, GenerationsRequest
from stable_audio_bento.settings import Settings
from stable_audio_bento.store.catalog import ModelCatalog, ModelEntry

STEPS = 2
SAMPLE_RATE = 44100
WINDOW = 2097152 / SAMPLE_RATE
BASE = EngineRequest(prompt="rain on a tin roof", seed=7, seconds_total=0.5)
# Relative RMS difference: a batch position moves a sample by ~3e-7 (float rounding); a change
# of seed, prompt, negative prompt or cfg moves the demo's output by 5e-3 to 6e-2.
SAME = 1e-5
CHANGED = 1e-3


def relative_change(a: FloatAudio, b: FloatAudio) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a**2)))


def generate(
    engine: StableAudioEngine,
    requests: list[EngineRequest],
    cfg_scale: float | None = None,
    progress: ProgressCallback | None = None,
) -> list[FloatAudio]:
    return engine.generate(requests, engine.sampling(steps=STEPS, cfg_scale=cfg_scale), progress)


@pytest.fixture(scope="module")
def settings() -> Settings:
    # device "auto" and half precision on, as a default server: this machine has no GPU, so
    # the engine must pick the CPU and float32.
    return Settings(device="auto", model_half=True, max_batch_size=1)


@pytest.fixture(scope="module")
def registry(demo_tag: str, settings: Settings) -> Iterator[ModelRegistry]:
    registry = ModelRegistry(settings)
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def engine(registry: ModelRegistry) -> Iterator[StableAudioEngine]:
    """The demo, loaded by the service's registry (store entry -> engine)."""
    with registry.use("demo") as loaded:
        yield loaded.engine


@pytest.fixture(scope="module")
def second_engine(demo_tag: str, settings: Settings) -> Iterator[StableAudioEngine]:
    """A second, independent load of the same entry (a new registry, as a new process would)."""
    registry = ModelRegistry(settings)
    with registry.use(demo_tag) as loaded:
        assert loaded.engine is not None
        yield loaded.engine
    registry.close()


# --------------------------------------------------------------------- shared runs
@pytest.fixture(scope="module")
def variants(engine: StableAudioEngine) -> dict[str, object]:
    """One batch: the base request, and one variant each of seed, prompt, negative prompt."""
    requests = {
        "base": BASE,
        "seed": dataclasses.replace(BASE, seed=8),
        "prompt": dataclasses.replace(BASE, prompt="a dog barking in the distance"),
        "negative": dataclasses.replace(BASE, negative_prompt="low quality noise"),
    }
    calls: list[tuple[int, int]] = []
    outputs = generate(engine, list(requests.values()), progress=lambda s, t: calls.append((s, t)))
    return {"audio": dict(zip(requests, outputs, strict=True)), "progress": calls}


@pytest.fixture(scope="module")
def alone(engine: StableAudioEngine) -> FloatAudio:
    """The base request in a batch of its own, the model's default cfg."""
    return generate(engine, [BASE])[0]


@pytest.fixture(scope="module")
def alone_cfg1(engine: StableAudioEngine) -> tuple[FloatAudio, bool]:
    """The base request with cfg 1, and whether the global torch RNG was left untouched."""
    torch.manual_seed(1)
    state = torch.get_rng_state()
    audio = generate(engine, [BASE], cfg_scale=1.0)[0]
    return audio, torch.equal(state, torch.get_rng_state())


@pytest.fixture(scope="module")
def spans(engine: StableAudioEngine) -> list[tuple[EngineRequest, FloatAudio]]:
    """Requests of different lengths and starts in one batch (cfg 1 keeps it cheap)."""
    requests = [
        EngineRequest("wind", seed=1, seconds_total=1.0),
        EngineRequest("wind", seed=2, seconds_total=0.123456, seconds_start=0.5),
        EngineRequest("wind", seed=3, seconds_total=0.7, seconds_start=3.3),
        EngineRequest("wind", seed=4, seconds_total=10 / SAMPLE_RATE, seconds_start=WINDOW - 0.5),
    ]
    outputs = generate(engine, requests, cfg_scale=1.0)
    return list(zip(requests, outputs, strict=True))


# ------------------------------------------------------------------------- loading
def test_loads_on_the_cpu_in_float32(engine: StableAudioEngine) -> None:
    assert engine.device == "cpu"
    assert engine.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in engine.model.parameters())
    assert all(p.device.type == "cpu" for p in engine.model.parameters())


def test_model_info_comes_from_the_entry(engine: StableAudioEngine) -> None:
    info = engine.info
    assert info.name == "stable-audio-demo"
    assert (info.sample_rate, info.channels, info.sample_size) == (SAMPLE_RATE, 2, 2097152)
    assert info.window_seconds == pytest.approx(47.55, abs=0.01)
    assert info.objective == "v"
    # The demo recipe's sampling defaults, from the store metadata.
    assert engine.sampling() == SamplingParams(steps=8, cfg_scale=7.0, sampler="dpmpp-3m-sde")


def test_loading_never_touches_the_hub() -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE


# ---------------------------------------------------------------------- the output
def test_output_shape_rate_and_exact_length(
    engine: StableAudioEngine, spans: list[tuple[EngineRequest, FloatAudio]]
) -> None:
    for request, audio in spans:
        assert audio.dtype == np.float32
        assert audio.shape == (2, round(request.seconds_total * SAMPLE_RATE)), request
        assert np.isfinite(audio).all()


def test_output_never_clips(spans: list[tuple[EngineRequest, FloatAudio]]) -> None:
    for request, audio in spans:
        peak = float(np.max(np.abs(audio)))
        assert 0.5 < peak <= 1.0, request


def test_the_full_window_is_the_default_length(
    engine: StableAudioEngine, settings: Settings, registry: ModelRegistry
) -> None:
    # Planning only (a full-window decode costs more than all other tests here together).
    plan = AudioGenerator(settings, registry).plan(AudioGenerateRequest(input="rain").to_params())
    assert plan.request.seconds_total == pytest.approx(WINDOW)
    engine.check_request(plan.request)


# ---------------------------------------------------------------------- determinism
def test_same_request_same_audio_across_two_loads(
    alone: FloatAudio, second_engine: StableAudioEngine
) -> None:
    again = generate(second_engine, [BASE])[0]
    assert np.array_equal(alone, again)


def test_a_request_gives_the_same_audio_alone_or_in_a_batch(
    alone: FloatAudio, variants: dict[str, object]
) -> None:
    audio = variants["audio"]
    assert isinstance(audio, dict)
    assert relative_change(alone, audio["base"]) < SAME


def test_generation_leaves_the_global_rng_alone(alone_cfg1: tuple[FloatAudio, bool]) -> None:
    assert alone_cfg1[1]


@pytest.mark.parametrize("variant", ["seed", "prompt", "negative"])
def test_seed_prompt_and_negative_prompt_change_the_output(
    variants: dict[str, object], variant: str
) -> None:
    audio = variants["audio"]
    assert isinstance(audio, dict)
    assert relative_change(audio["base"], audio[variant]) > CHANGED


def test_each_request_in_a_batch_has_its_own_seed(
    engine: StableAudioEngine, variants: dict[str, object]
) -> None:
    audio = variants["audio"]
    assert isinstance(audio, dict)
    # Seed 8 beside seed 7 is seed 8's audio (as alone), not a neighbour of seed 7's.
    assert relative_change(audio["base"], audio["seed"]) > 10 * CHANGED
    alone_seed8 = generate(engine, [dataclasses.replace(BASE, seed=8)])[0]
    assert relative_change(alone_seed8, audio["seed"]) < SAME


def test_cfg_changes_the_output(alone: FloatAudio, alone_cfg1: tuple[FloatAudio, bool]) -> None:
    assert relative_change(alone, alone_cfg1[0]) > CHANGED


def test_progress_is_reported_once_per_step(variants: dict[str, object]) -> None:
    assert variants["progress"] == [(step, STEPS) for step in range(1, STEPS + 1)]


def test_concurrent_threads_give_the_sequential_results(
    engine: StableAudioEngine,
    second_engine: StableAudioEngine,
    alone: FloatAudio,
    alone_cfg1: tuple[FloatAudio, bool],
) -> None:
    jobs = {
        "first engine, cfg 7": (engine, None, alone),
        "first engine, cfg 1": (engine, 1.0, alone_cfg1[0]),
        "second engine, cfg 7": (second_engine, None, alone),
    }
    results: dict[str, FloatAudio] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def work(name: str, target: StableAudioEngine, cfg: float | None) -> None:
        try:
            start.wait()
            results[name] = generate(target, [BASE], cfg_scale=cfg)[0]
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(name, target, cfg))
        for name, (target, cfg, _) in jobs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for name, (_, _, expected) in jobs.items():
        assert np.array_equal(results[name], expected), name


@pytest.mark.parametrize("sampler", ["dpmpp-3m-sde", "dpmpp-2m-sde"])
def test_a_single_step_works_with_every_sde_sampler(
    engine: StableAudioEngine, sampler: str
) -> None:
    request = dataclasses.replace(BASE, seconds_total=0.1)
    sampling = engine.sampling(steps=1, cfg_scale=1.0, sampler=sampler)
    (audio,) = engine.generate([request], sampling)
    assert audio.shape == (2, round(0.1 * SAMPLE_RATE))
    # A single step to sigma 0 is the model's denoised estimate, whatever the sampler.
    plain = engine.sampling(steps=1, cfg_scale=1.0, sampler="dpmpp-2m")
    (reference,) = engine.generate([request], plain)
    np.testing.assert_allclose(audio, reference, atol=1e-5)


# --------------------------------------------------------------- impossible requests
@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        (dataclasses.replace(BASE, seconds_total=48.0), "seconds_total", "at most 47.55 seconds"),
        (
            dataclasses.replace(BASE, seconds_total=1.0, seconds_start=47.0),
            "seconds_total",
            "at most 0.55 seconds",
        ),
        (dataclasses.replace(BASE, seconds_start=-1.0), "seconds_start", "between 0 and 47.51"),
        (dataclasses.replace(BASE, seconds_start=WINDOW), "seconds_start", "between 0 and 47.51"),
        # A start that leaves less than one latent frame blames the start, not the length.
        (dataclasses.replace(BASE, seconds_start=47.55), "seconds_start", "between 0 and 47.51"),
        (dataclasses.replace(BASE, seconds_total=0.0), "seconds_total", "greater than 0"),
        (dataclasses.replace(BASE, seconds_total=-1.0), "seconds_total", "greater than 0"),
    ],
)
def test_requests_beyond_the_window_are_refused(
    engine: StableAudioEngine, request_: EngineRequest, field: str, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message) as raised:
        engine.generate([request_], engine.sampling(steps=STEPS))
    assert raised.value.field == field
    with pytest.raises(InvalidRequestError):
        engine.check_request(request_)


def test_one_impossible_request_fails_its_batch_before_any_work(engine: StableAudioEngine) -> None:
    calls: list[tuple[int, int]] = []
    batch = [BASE, dataclasses.replace(BASE, seconds_total=60.0)]
    with pytest.raises(InvalidRequestError):
        engine.generate(batch, engine.sampling(steps=STEPS), lambda s, t: calls.append((s, t)))
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"steps": 0}, "steps", "between 1 and 1000"),
        ({"steps": 1001}, "steps", "between 1 and 1000"),
        ({"cfg_scale": -1.0}, "cfg_scale", "between 0 and 100"),
        ({"cfg_scale": 101.0}, "cfg_scale", "between 0 and 100"),
        ({"sampler": "pingpong"}, "sampler", "dpmpp-3m-sde"),
        ({"sampler": "nonsense"}, "sampler", "must be one of"),
    ],
)
def test_sampling_out_of_range_is_refused(
    engine: StableAudioEngine, kwargs: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message) as raised:
        engine.sampling(**kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_errors_name_the_clients_fields(registry: ModelRegistry) -> None:
    generator = AudioGenerator(Settings(max_steps=50), registry)
    cases: list[tuple[AudioGenerateRequest | GenerationsRequest, str]] = [
        (AudioGenerateRequest(input="x", audio_length=50), "audio_length"),
        (AudioGenerateRequest(input="x", audio_start=40, audio_length=10), "audio_length"),
        (AudioGenerateRequest(input="x", audio_start=48), "audio_start"),
        (AudioGenerateRequest(input="x", num_inference_steps=51), "num_inference_steps"),
        (GenerationsRequest(prompt="x", duration=50), "duration"),
        (GenerationsRequest(prompt="x", steps=51), "steps"),
    ]
    for body, field in cases:
        with pytest.raises(InvalidRequestError) as raised:
            generator.plan(body.to_params())
        assert raised.value.field == field, body
        assert field in raised.value.message


# -------------------------------------------------------- sampler by model objective
@pytest.fixture(scope="module")
def rf_engine(
    demo_tag: str,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StableAudioEngine]:
    """A rectified-flow (``rf_denoiser``, like stable-audio-open-small) variant of the demo.

    The entry lives in a temporary directory, not in the store, so other tests' view of the
    store is unchanged; the registry loads it through the same path as any store entry.
    """
    import bentoml

    source = Path(bentoml.models.get(demo_tag).path)
    files = tmp_path_factory.mktemp("rf") / "entry"
    shutil.copytree(source, files, ignore=shutil.ignore_patterns("model.yaml"))
    config = json.loads((files / "model_config.json").read_text())
    config["model"]["diffusion"]["diffusion_objective"] = "rf_denoiser"
    (files / "model_config.json").write_text(json.dumps(config))
    entry = ModelEntry(
        name="demo-rf",
        version="test",
        path=files,
        metadata=build_metadata("demo-rf", files, "test", None, ["demo-small"]),
    )
    registry = ModelRegistry(settings, catalog=ModelCatalog([entry]))
    with registry.use("demo-small") as loaded:
        yield loaded.engine
    registry.close()


def test_v_objective_defaults_to_dpmpp_3m_sde() -> None:
    config = json.loads((DEMO_RECIPE / "model_config.json").read_text())
    info = info_from_config("any-v-model", config)
    assert info.sampling() == SamplingParams(steps=100, cfg_scale=7.0, sampler="dpmpp-3m-sde")


def test_rf_denoiser_defaults_to_pingpong(rf_engine: StableAudioEngine) -> None:
    assert rf_engine.info.objective == "rf_denoiser"
    assert rf_engine.sampling() == SamplingParams(steps=8, cfg_scale=1.0, sampler="pingpong")
    with pytest.raises(InvalidRequestError, match="pingpong") as raised:
        rf_engine.sampling(sampler="dpmpp-3m-sde")
    assert raised.value.field == "sampler"


def test_rf_denoiser_generates_with_per_request_seeds(rf_engine: StableAudioEngine) -> None:
    calls: list[tuple[int, int]] = []
    requests = [BASE, dataclasses.replace(BASE, seed=8)]
    sampling = rf_engine.sampling(steps=STEPS)
    assert sampling.sampler == "pingpong"
    batch = rf_engine.generate(requests, sampling, lambda s, t: calls.append((s, t)))
    alone = rf_engine.generate([BASE], sampling)[0]
    assert calls == [(step, STEPS) for step in range(1, STEPS + 1)]
    for audio in batch:
        assert audio.shape == (2, round(BASE.seconds_total * SAMPLE_RATE))
        assert audio.dtype == np.float32
        assert np.max(np.abs(audio)) <= 1.0
    assert relative_change(batch[0], alone) < SAME
    assert relative_change(batch[0], batch[1]) > 10 * CHANGED


@pytest.mark.parametrize("sampler", ["dpmpp-3m-sde", "dpmpp-2m-sde"])
def test_brownian_noise_is_the_references_take_for_the_seed(
    engine: StableAudioEngine, sampler: str
) -> None:
    """With ``brownian_noise`` the SDE samplers' step noise is stable-audio-tools' own Brownian
    tree, seeded from the request's stream as its generate() seeds it: a single request gives
    its latents for the seed. The default (independent draws per step) is another take."""
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    from stable_audio_bento.engine import SIGMA_MAX, SIGMA_MIN

    steps = 3
    tree = engine.info.sampling(
        steps=steps, cfg_scale=1.0, sampler=sampler, sampler_kwargs={"brownian_noise": 1}
    )
    plain = engine.info.sampling(steps=steps, cfg_scale=1.0, sampler=sampler)
    with torch.inference_mode():
        ours = engine.sample([BASE], tree, None).float()  # type: ignore[attr-defined]
        other = engine.sample([BASE], plain, None).float()  # type: ignore[attr-defined]
        reference = generate_diffusion_cond(
            engine.model,  # type: ignore[attr-defined]
            steps=steps,
            cfg_scale=1.0,
            conditioning=[{"prompt": BASE.prompt, "seconds_start": 0.0, "seconds_total": 0.5}],
            sample_size=engine.info.sample_size,
            seed=BASE.seed,
            device="cpu",
            sampler_type=sampler,
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
            return_latents=True,
        ).float()

    def snr(ours: torch.Tensor) -> float:
        return float(10 * torch.log10(reference.pow(2).sum() / (ours - reference).pow(2).sum()))

    assert snr(ours) > 100
    assert snr(other) < 40
