"""Audio in, audio out on both demos (SAO: stable-audio-tools; SA3: diffusers components).

Engine and pipeline level, with the real models: variation strength, inpainting closeness,
continuation past the window, per-request seeds in a batch, and every kind of bad input.
The closeness numbers printed here (``-s``) are the ones the README quotes.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile

from stable_audio_bento.engine import (
    AUDIO_TO_AUDIO,
    CONTINUATION,
    INPAINTING,
    TEXT_TO_AUDIO,
    AudioEngine,
    EngineRequest,
)
from stable_audio_bento.errors import InvalidRequestError, UploadTooLargeError
from stable_audio_bento.pipeline.audio_to_audio import AudioInParams, AudioToAudio
from stable_audio_bento.pipeline.generation import AudioGenerator
from stable_audio_bento.pipeline.registry import ModelRegistry
from stable_audio_bento.schemas import STABLE_API, GenerationParams
from stable_audio_bento.settings import Settings

RATE = 44100
STEPS = 4
FAMILIES = ["demo", "demo-sa3"]


def source_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """(2, samples): two tones under a slow swell, plus a little noise (not silence)."""
    t = np.arange(round(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t)
    left = 0.5 * np.sin(2 * np.pi * 220 * t) * swell + 0.01 * rng.standard_normal(t.size)
    right = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.01 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def wav(audio: np.ndarray, subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.T, RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        device="cpu",
        max_batch_size=4,
        batch_wait_ms=200,
        output_dir=tmp_path_factory.mktemp("a2a") / "outputs",
        max_upload_mb=16,
        max_upload_seconds=120,
    )


@pytest.fixture(scope="module")
def registry(demo_tag: str, demo_sa3_tag: str, settings: Settings) -> Iterator[ModelRegistry]:
    registry = ModelRegistry(settings)
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def pipeline(registry: ModelRegistry, settings: Settings) -> AudioToAudio:
    return AudioToAudio(AudioGenerator(settings, registry))


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request: pytest.FixtureRequest, registry: ModelRegistry) -> Iterator[AudioEngine]:
    with registry.use(request.param) as loaded:
        yield loaded.engine


def base(engine: AudioEngine, seconds: float, **kwargs: Any) -> EngineRequest:
    return EngineRequest(
        prompt="rain on a tin roof",
        seed=11,
        seconds_total=seconds,
        init_audio=source_audio(seconds),
        **kwargs,
    )


def sampling(engine: AudioEngine) -> Any:
    return engine.info.sampling(steps=STEPS)


def source_latent(engine: AudioEngine, request: EngineRequest) -> Any:
    """The source as the engine encodes it (each backend's own encoder)."""
    import torch

    with torch.inference_mode():
        if engine.info.fixed_window:  # SAO
            encoded = engine.encode_sources([request])  # type: ignore[attr-defined]
            return encoded.latents.float()
        frames = engine.info.latent_frames(request)
        return engine.encode_sources([request], frames).float()  # type: ignore[attr-defined]


def sampled_latent(engine: AudioEngine, request: EngineRequest) -> Any:
    import torch

    with torch.inference_mode():
        return engine.sample([request], sampling(engine), None).float()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ modes


def test_models_of_both_families_list_every_mode(engine: AudioEngine) -> None:
    assert engine.info.modes == (TEXT_TO_AUDIO, AUDIO_TO_AUDIO, INPAINTING, CONTINUATION)
    assert engine.info.describe()["modes"] == list(engine.info.modes)


def test_a_mode_the_model_lacks_is_a_400_naming_model_and_mode(engine: AudioEngine) -> None:
    info = dataclasses.replace(engine.info, modes=(TEXT_TO_AUDIO,))
    with pytest.raises(InvalidRequestError, match=rf"{info.name} cannot do inpainting") as caught:
        info.check_request(base(engine, 2.0, inpaint_regions=((0.5, 1.0),)))
    assert caught.value.field == "mode"


# -------------------------------------------------------------------------- variations


def test_variation_strength_moves_the_latent_monotonically_away_from_the_source(
    engine: AudioEngine,
) -> None:
    request = base(engine, 4.0)
    source = source_latent(engine, request)
    distances = []
    for level in (0.05, 0.2, 0.4, 0.6, 0.8, 1.0):
        latent = sampled_latent(engine, dataclasses.replace(request, init_noise_level=level))
        frames = source.shape[-1]
        distances.append(relative(latent[..., :frames].numpy(), source.numpy()))
    print(f"\n{engine.info.name} latent distance by noise level: {np.round(distances, 4)}")
    assert distances == sorted(distances), distances
    assert distances[0] < 0.5 * distances[-1]


def test_variation_strength_changes_the_audio_monotonically(engine: AudioEngine) -> None:
    """Audio distance from the level-0 output (the source as the model hears it)."""
    request = base(engine, 4.0)
    levels = (0.0, 0.2, 0.5, 0.9)
    outs = [
        engine.generate([dataclasses.replace(request, init_noise_level=x)], sampling(engine))[0]
        for x in levels
    ]
    distances = [relative(out, outs[0]) for out in outs]
    print(f"\n{engine.info.name} audio distance by noise level {levels}: {distances}")
    assert distances[0] == 0.0
    assert distances == sorted(distances), distances
    for out in outs:
        assert out.shape == request.init_audio.shape
        assert float(np.max(np.abs(out))) <= 1.0


def test_a_variation_is_the_same_alone_or_in_a_batch_and_depends_on_its_seed(
    engine: AudioEngine,
) -> None:
    one = base(engine, 2.0, init_noise_level=0.7)
    other = dataclasses.replace(one, seed=99, prompt="thunder", init_audio=source_audio(2.0, 5))
    alone = engine.generate([one], sampling(engine))[0]
    batch = engine.generate([other, one], sampling(engine))
    assert np.max(np.abs(batch[1] - alone)) < 1e-4
    assert relative(batch[0], alone) > 1e-5


# -------------------------------------------------------------------------- inpainting


@pytest.mark.parametrize("regions", [((1.0, 2.0),), ((0.0, 0.5), (2.5, 3.25))])
def test_inpainting_keeps_the_source_outside_the_regions(
    engine: AudioEngine, regions: tuple[tuple[float, float], ...]
) -> None:
    request = base(engine, 4.0, inpaint_regions=regions)
    out = engine.generate([request], sampling(engine))[0]
    source = request.init_audio
    inside = np.zeros(out.shape[-1], bool)
    for start, end in regions:
        inside[round(start * RATE) : round(end * RATE)] = True
    outside_error = float(np.max(np.abs(out[:, ~inside] - source[:, ~inside])))
    inside_change = relative(out[:, inside], source[:, inside])
    print(
        f"\n{engine.info.name} inpaint {regions}: max |out - source| outside = "
        f"{outside_error:.2e}, relative change inside = {inside_change:.3f}"
    )
    assert outside_error == 0.0
    assert inside_change > 0.1
    assert float(np.max(np.abs(out))) <= 1.0


# ------------------------------------------------------------------------ the pipeline


def spec(mode: str, model: str, **kwargs: Any) -> AudioInParams:
    fields = {k: kwargs.pop(k) for k in ("seconds_total", "outputs", "speed") if k in kwargs}
    params = GenerationParams(
        prompt="rain", model=model, seed=3, steps=STEPS, api=STABLE_API, **fields
    )
    return AudioInParams(mode=mode, params=params, **kwargs)


def decode(data: bytes) -> np.ndarray:
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == RATE
    return np.ascontiguousarray(audio.T)


@pytest.mark.parametrize("model", FAMILIES)
def test_continuation_extends_to_the_exact_length_keeping_the_clip(
    pipeline: AudioToAudio, model: str
) -> None:
    clip = source_audio(3.0)
    steps: list[tuple[int, int]] = []
    result = pipeline.generate(
        spec(CONTINUATION, model, seconds_total=6.5),
        wav(clip),
        lambda step, total: steps.append((step, total)),
    )
    out = decode(result.encoded.data)
    assert out.shape == (2, round(6.5 * RATE))
    kept = clip.shape[-1] - round(0.02 * RATE)  # the last 20 ms crossfade into the new audio
    # 16-bit WAV out: the clip comes back within one quantisation step.
    assert float(np.max(np.abs(out[:, :kept] - clip[:, :kept]))) <= 1 / 32768 + 1e-7
    assert float(np.sqrt(np.mean(out[:, clip.shape[-1] :] ** 2))) > 1e-3
    assert steps[-1] == (STEPS, STEPS)


def test_continuation_chains_windows_past_the_model_window(pipeline: AudioToAudio) -> None:
    """The SAO demo's window is 47.55 s: 60 s takes two windows, the second conditioned on
    the end of the first."""
    clip = source_audio(5.0)
    plan = pipeline.plan(spec(CONTINUATION, "demo", seconds_total=60.0), wav(clip))
    assert plan.windows == 2 and plan.total_steps == 2 * STEPS
    steps: list[tuple[int, int]] = []
    result = pipeline.run(plan, lambda s, t: steps.append((s, t)))
    out = decode(result.encoded.data)
    assert out.shape == (2, 60 * RATE)
    kept = clip.shape[-1] - round(0.02 * RATE)
    assert float(np.max(np.abs(out[:, :kept] - clip[:, :kept]))) <= 1 / 32768 + 1e-7
    assert steps[-1] == (2 * STEPS, 2 * STEPS)
    assert max(s for s, _ in steps) == 2 * STEPS


@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("mode", [AUDIO_TO_AUDIO, INPAINTING])
def test_pipeline_output_is_as_long_as_the_source(
    pipeline: AudioToAudio, model: str, mode: str
) -> None:
    clip = source_audio(2.5)
    regions = ((1.0, 1.5),) if mode == INPAINTING else ()
    result = pipeline.generate(spec(mode, model, regions=regions), wav(clip, "PCM_16"))
    out = decode(result.encoded.data)
    assert out.shape == clip.shape
    assert result.seed == 3


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_refused_before_any_work(pipeline: AudioToAudio, settings: Settings) -> None:
    good = wav(source_audio(2.0))
    cases: list[tuple[AudioInParams, bytes, type[Exception], str, str]] = [
        (spec(AUDIO_TO_AUDIO, "demo"), b"", InvalidRequestError, "audio is empty", "audio"),
        (spec(AUDIO_TO_AUDIO, "demo"), b"x" * 5000, InvalidRequestError, "decoded", "audio"),
        (
            spec(AUDIO_TO_AUDIO, "demo"),
            wav(np.zeros((2, RATE), np.float32)),
            InvalidRequestError,
            "silent",
            "audio",
        ),
        (
            spec(AUDIO_TO_AUDIO, "demo"),
            b"\0" * (17 * 2**20),
            UploadTooLargeError,
            "limit is 16 MB",
            "audio",
        ),
        (spec(INPAINTING, "demo"), good, InvalidRequestError, "required", "inpaint_start_seconds"),
        (
            spec(INPAINTING, "demo", regions=((1.5, 3.0),)),
            good,
            InvalidRequestError,
            "within the audio",
            "inpaint_start_seconds",
        ),
        (spec(CONTINUATION, "demo"), good, InvalidRequestError, "required", "duration"),
        (
            spec(CONTINUATION, "demo", seconds_total=1.0),
            good,
            InvalidRequestError,
            "longer than the audio",
            "duration",
        ),
        (
            spec(CONTINUATION, "demo", seconds_total=500.0),
            good,
            InvalidRequestError,
            "server limit",
            "duration",
        ),
        (
            spec(AUDIO_TO_AUDIO, "demo", init_noise_level=1.5),
            good,
            InvalidRequestError,
            "between 0 and 1",
            "init_noise_level",
        ),
        (spec(AUDIO_TO_AUDIO, "demo", outputs=2), good, InvalidRequestError, "1", "batch_size"),
        (spec("remix", "demo"), good, InvalidRequestError, "mode must be one of", "mode"),
    ]
    for case, data, error, message, field in cases:
        with pytest.raises(error, match=message) as caught:
            pipeline.plan(case, data)
        assert getattr(caught.value, "field", None) == field, (case, caught.value)


def test_audio_longer_than_the_window_is_trimmed_when_asked(pipeline: AudioToAudio) -> None:
    long = wav(source_audio(50.0), "PCM_16")
    with pytest.raises(InvalidRequestError, match=r"50\.00 s long; stable-audio-demo takes at"):
        pipeline.plan(spec(AUDIO_TO_AUDIO, "demo"), long)
    plan = pipeline.plan(spec(AUDIO_TO_AUDIO, "demo", trim=True), long)
    assert abs(plan.base.request.init_audio.shape[-1] - 2097152) <= 1


def test_a_tail_region_is_not_encoded_and_the_kept_frames_are_the_same(
    registry: ModelRegistry,
) -> None:
    """SAO: a continuation-shaped request encodes its source only a receptive field past the
    region's start; the frames before it equal those of the whole source's encoding."""
    with registry.use("demo") as loaded:
        engine = loaded.engine
        whole = base(engine, 20.0)
        tail = dataclasses.replace(whole, inpaint_regions=((8.0, 20.0),))
        kept_frames = int(8.0 * RATE / engine.info.latent_downsampling)
        a = source_latent(engine, whole)[..., :kept_frames]
        b = source_latent(engine, tail)[..., :kept_frames]
        # Equal but for float rounding (a shorter input blocks the convolutions differently).
        assert float((a - b).abs().max()) < 1e-5 * float(a.abs().max())
        assert float(a.abs().max()) > 0.01
