"""The CPU fast path's choices: native bfloat16 from the CPU's flags, candidates, the SNR check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from stable_audio_bento.engine.precision import (
    CPU_MODES,
    CpuOptions,
    cpu_candidates,
    cpu_cores,
    cpu_flags,
    native_bfloat16,
    set_threads,
    snr_db,
)
from stable_audio_bento.errors import ModelLoadError
from stable_audio_bento.settings import Settings

X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd {extra}\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        (X86.format(extra="avx512_bf16 avx512_vnni"), True),
        (X86.format(extra="amx_bf16 amx_tile"), True),
        (X86.format(extra="avx512_vnni avx_vnni"), False),  # int8 dot products, no bfloat16
        (ARM.format(extra="bf16 i8mm"), True),
        (ARM.format(extra="sve"), False),
        ("", False),
    ],
)
def test_native_bfloat16_comes_from_the_cpu_flags(cpuinfo: str, native: bool) -> None:
    assert native_bfloat16(cpu_flags(cpuinfo)) is native


def test_the_flags_are_read_from_the_first_processor() -> None:
    two = X86.format(extra="avx512_bf16") + "\n" + X86.format(extra="")
    assert "avx512_bf16" in cpu_flags(two)
    assert cpu_flags("model name\t: something\n") == frozenset()


@pytest.mark.parametrize(
    ("mode", "native", "requested", "expected"),
    [
        ("bfloat16", True, "auto", ["bfloat16", "float32"]),
        ("bfloat16", False, "auto", ["float32"]),  # emulated bfloat16 is slower than float32
        ("int8", True, "auto", ["int8", "float32"]),
        ("exact", True, "auto", ["float32"]),
        ("exact", True, "bfloat16", ["bfloat16", "float32"]),  # STABLE_AUDIO_DTYPE wins
        ("bfloat16", True, "float32", ["float32"]),
    ],
)
def test_cpu_candidates_end_with_float32(
    mode: str, native: bool, requested: str, expected: list[str]
) -> None:
    assert cpu_candidates(CpuOptions(mode), requested, native=native) == expected


def test_an_unknown_mode_is_refused_by_name() -> None:
    with pytest.raises(ModelLoadError, match="unknown CPU mode 'fp8'"):
        CpuOptions("fp8")
    assert not CpuOptions("off").active("cpu")
    assert CpuOptions("bfloat16").active("cpu")
    assert not CpuOptions("bfloat16").active("cuda")  # a GPU keeps its own half precision


def test_snr_db() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((2, 4096)).astype(np.float32)
    assert snr_db(signal, signal) == math.inf
    # Noise at a tenth of the signal's amplitude: 20 dB; at a hundredth: 40 dB.
    assert snr_db(signal, signal + 0.1 * signal) == pytest.approx(20.0, abs=1e-3)
    assert snr_db(signal, signal * 0.99) == pytest.approx(40.0, abs=1e-3)
    assert snr_db(signal, -signal) == pytest.approx(-6.02, abs=0.01)


def test_fast_path_threads_default_to_the_usable_cores() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        set_threads(0)  # no fast path: torch's own choice stays
        assert torch.get_num_threads() == 1
        set_threads(0, fast=True)
        assert torch.get_num_threads() == cpu_cores() >= 1
        set_threads(1, fast=True)  # an explicit count wins
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().cpu_fast, Settings().precision_min_snr_db) == ("off", 12.0)
    monkeypatch.setenv("STABLE_AUDIO_CPU_FAST", "bfloat16")
    monkeypatch.setenv("STABLE_AUDIO_PRECISION_MIN_SNR_DB", "25")
    settings = Settings()
    assert (settings.cpu_fast, settings.precision_min_snr_db) == ("bfloat16", 25.0)
    assert set(CPU_MODES) == {"off", "exact", "bfloat16", "int8"}
    monkeypatch.setenv("STABLE_AUDIO_CPU_FAST", "fp8")
    with pytest.raises(ValidationError, match="STABLE_AUDIO_CPU_FAST"):
        Settings()
    monkeypatch.setenv("STABLE_AUDIO_CPU_FAST", "exact")
    monkeypatch.setenv("STABLE_AUDIO_PRECISION_MIN_SNR_DB", "-1")
    with pytest.raises(ValidationError, match="STABLE_AUDIO_PRECISION_MIN_SNR_DB"):
        Settings()
