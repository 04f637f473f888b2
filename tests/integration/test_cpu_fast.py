"""The CPU fast path (STABLE_AUDIO_CPU_FAST) on the demo model, loaded as the service loads it.

Each load compiles the autoencoder's decoder (tens of seconds on two cores; later loads of the
same graph in one process reuse the compiled code), so the tests share their engines.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from stable_audio_bento.audio import FloatAudio
from stable_audio_bento.engine import EngineRequest, StableAudioEngine
from stable_audio_bento.engine.precision import native_bfloat16, snr_db
from stable_audio_bento.pipeline.registry import ModelRegistry
from stable_audio_bento.settings import Settings

REQUEST = EngineRequest(prompt="rain on a tin roof", seed=7, seconds_total=1.5)


@contextlib.contextmanager
def loaded(mode: str, **settings: object) -> Iterator[StableAudioEngine]:
    with loaded_any("demo", mode, **settings) as engine:
        assert isinstance(engine, StableAudioEngine)
        yield engine


@contextlib.contextmanager
def loaded_any(model: str, mode: str, **settings: object) -> Iterator[Any]:
    registry = ModelRegistry(
        Settings(device="cpu", cpu_fast=mode, max_batch_size=1, **settings)  # type: ignore[arg-type]
    )
    try:
        with registry.use(model) as entry:
            yield entry.engine
    finally:
        registry.close()


def generate(engine: StableAudioEngine) -> FloatAudio:
    return engine.generate([REQUEST], engine.sampling(steps=2))[0]


@pytest.fixture(scope="module")
def reference(demo_tag: str) -> FloatAudio:
    """The default CPU engine's audio: eager float32."""
    with loaded("off") as engine:
        assert engine.precision == "float32"
        return generate(engine)


def weight_norm_layers(engine: StableAudioEngine) -> int:
    return sum(hasattr(m, "weight_g") for m in engine.model.pretransform.modules())


def test_exact_mode_gives_the_same_audio(demo_tag: str, reference: FloatAudio) -> None:
    with loaded("exact") as engine:
        assert engine.precision == "float32"
        assert weight_norm_layers(engine) == 0  # folded once at load
        audio = generate(engine)
        assert audio.shape == reference.shape
        assert snr_db(reference, audio) > 80  # float rounding only
        # Another length goes through the same compiled decoder (dynamic shapes).
        other = engine.generate(
            [EngineRequest(prompt="x", seed=1, seconds_total=0.7)], engine.sampling(steps=1)
        )[0]
        assert other.shape == (2, round(0.7 * 44100)) and np.isfinite(other).all()


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_bfloat16_mode_is_checked_against_float32(demo_tag: str, reference: FloatAudio) -> None:
    with loaded("bfloat16") as engine:
        assert engine.precision == engine.dtype_name == "bfloat16"
        assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
        audio = generate(engine)
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
        # The load check's bound holds for another request too (measured: ~40 dB here).
        assert snr_db(reference, audio) >= Settings().precision_min_snr_db


def test_a_precision_too_far_from_float32_falls_back(
    demo_tag: str, reference: FloatAudio, caplog: pytest.LogCaptureFixture
) -> None:
    # No int8 model is within 300 dB of float32: the load check refuses it, float32 loads.
    with (
        caplog.at_level(logging.WARNING, logger="stable_audio_bento.engine.precision"),
        loaded("int8", precision_min_snr_db=300.0) as engine,
    ):
        assert engine.precision == "float32"
        assert not any(
            isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in engine.model.modules()
        )
        assert snr_db(reference, generate(engine)) > 80
    assert "int8 is" in caplog.text and "dB from float32 (minimum 300.0)" in caplog.text


def test_int8_mode_quantizes_the_dit(demo_tag: str, reference: FloatAudio) -> None:
    with loaded("int8") as engine:
        assert engine.precision == "int8"
        quantized = [
            m
            for m in engine.model.model.modules()
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
        ]
        assert quantized
        assert snr_db(reference, generate(engine)) >= Settings().precision_min_snr_db


# ------------------------------------------------------------------ SA3 (diffusers backend)
SA3_REQUEST = EngineRequest(prompt="rain on a tin roof", seed=7, seconds_total=1.0)


@pytest.fixture(scope="module")
def sa3_reference(demo_sa3_tag: str) -> FloatAudio:
    with loaded_any("demo-sa3", "off") as engine:
        assert engine.dtype_name == "float32"
        audio: FloatAudio = engine.generate([SA3_REQUEST], engine.info.sampling(steps=2))[0]
        return audio


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_sa3_bfloat16_mode_is_checked_against_float32(
    demo_sa3_tag: str, sa3_reference: FloatAudio, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="stable_audio_bento.engine.precision"),
        loaded_any("demo-sa3", "bfloat16") as engine,
    ):
        assert engine.dtype_name == "bfloat16"
        audio = engine.generate([SA3_REQUEST], engine.info.sampling(steps=2))[0]
        assert snr_db(sa3_reference, audio) >= Settings().precision_min_snr_db
    assert "in bfloat16:" in caplog.text and "dB SNR against float32" in caplog.text


def test_sa3_falls_back_to_float32_when_too_far(
    demo_sa3_tag: str, sa3_reference: FloatAudio
) -> None:
    with loaded_any("demo-sa3", "int8", precision_min_snr_db=300.0) as engine:
        assert engine.dtype_name == "float32"
        assert not any(
            isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
            for m in engine.parts.transformer.modules()
        )
        audio = engine.generate([SA3_REQUEST], engine.info.sampling(steps=2))[0]
        assert snr_db(sa3_reference, audio) > 80
