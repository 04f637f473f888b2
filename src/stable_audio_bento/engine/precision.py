"""Where and in which precision a model runs: shared by every backend's loader."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..errors import ModelLoadError

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")


def pick_device(requested: str) -> str:
    """auto: cuda > mps > cpu."""
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("STABLE_AUDIO_DEVICE=cuda but no CUDA device is available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dtype_candidates(
    device: str, half: bool, requested: str = "auto", model_default: str | None = None
) -> list[str]:
    """The precisions to try, best first; float32 always ends the list."""
    choice = requested if requested != "auto" else model_default
    if choice is None:
        choice = "float16" if (half and device == "cuda") else "float32"
    if choice not in DTYPES:
        raise ModelLoadError(f"unknown dtype {choice!r}; expected one of {', '.join(DTYPES)}")
    # float16 has the finer mantissa; bfloat16 the float32 range, for what overflows float16.
    order = {"float16": ["float16", "bfloat16"], "bfloat16": ["bfloat16"], "float32": []}[choice]
    return [*order, "float32"]


def set_threads(threads: int, fast: bool = False) -> None:
    """``threads`` > 0 sets torch's intra-op thread count (for the whole process); 0 with the
    CPU fast path: one per core this process may use (torch counts the host's cores)."""
    import torch

    if threads <= 0 and fast:
        threads = cpu_cores()
    if threads > 0:
        torch.set_num_threads(threads)


class Checkable(Protocol):
    """An engine that can generate the load check's short request."""

    def check_audio(self) -> Any:
        """The check request's audio, None if it is not finite."""


E = TypeVar("E", bound=Checkable)


def first_passing(
    name: str,
    candidates: Sequence[str],
    make: Callable[[str, bool], E],
    *,
    check: bool = True,
    warm_up: bool = False,
    reference: Any = None,
    min_snr_db: float = 0.0,
) -> E:
    """The engine of the first precision that passes the load check, best first.

    ``make(candidate, fresh)`` builds the engine in ``candidate`` (``fresh``: after a failed
    check, from the stored weights again). The check is a short generation (``check_audio``):
    it must be finite and, with a float32 ``reference`` audio of the same request, within
    ``min_snr_db`` of it. float32 itself is only held to finiteness, and needs no check at all
    unless ``warm_up`` (a compiled model is warmed up by that same generation).
    """
    for i, candidate in enumerate(candidates):
        engine = make(candidate, i > 0)
        if not check or (candidate == "float32" and not warm_up):
            return engine
        audio = engine.check_audio()
        if audio is None:
            log.warning(
                "%s gives non-finite audio in %s; trying the next precision", name, candidate
            )
            continue
        if reference is None or candidate == "float32":
            return engine
        error = snr_db(reference, audio)
        if error >= min_snr_db:
            log.info("%s in %s: %.1f dB SNR against float32", name, candidate, error)
            return engine
        log.warning(
            "%s in %s is %.1f dB from float32 (minimum %.1f); trying the next precision",
            name,
            candidate,
            error,
            min_snr_db,
        )
    raise ModelLoadError(f"{name}: no precision gives finite audio ({', '.join(candidates)})")


# ------------------------------------------------------------------ the CPU fast path
# STABLE_AUDIO_CPU_FAST: off (eager float32), exact (float32, the decoder compiled), bfloat16
# (bfloat16 where the CPU computes it natively, the decoder compiled), int8 (the DiT's linear
# layers dynamically quantized to int8, float32 elsewhere, the decoder compiled).
CPU_MODES = ("off", "exact", "bfloat16", "int8")
# The check at load: a reduced-precision model's audio for the check request must stay within
# this signal-to-noise ratio of float32's (same request, seed and weights). Measured on
# open-small-shaped random weights (bench/RESULTS.md): bfloat16 ~30 dB, int8 ~15 dB.
MIN_SNR_DB = 12.0
# /proc/cpuinfo flags of native bfloat16 arithmetic: x86 AVX-512 BF16 / AMX, ARM's BF16.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@dataclass(frozen=True)
class CpuOptions:
    """What the CPU fast path does (``STABLE_AUDIO_CPU_FAST``, ``..._PRECISION_MIN_SNR_DB``)."""

    mode: str = "off"
    min_snr_db: float = MIN_SNR_DB

    def __post_init__(self) -> None:
        if self.mode not in CPU_MODES:
            raise ModelLoadError(
                f"unknown CPU mode {self.mode!r}; expected one of {', '.join(CPU_MODES)}"
            )

    def active(self, device: str) -> bool:
        return device == "cpu" and self.mode != "off"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``) from ``/proc/cpuinfo``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bfloat16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (else bfloat16 is emulated, and slower)."""
    return bool(BF16_FLAGS & (cpu_flags() if flags is None else flags))


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_candidates(
    options: CpuOptions, requested: str = "auto", native: bool | None = None
) -> list[str]:
    """The fast path's precisions to try on a CPU, best first; float32 always ends the list.

    ``bfloat16`` only where the CPU has it natively (emulated bfloat16 is slower than float32);
    an explicit ``STABLE_AUDIO_DTYPE`` wins over the mode's own choice.
    """
    if requested != "auto":
        return dtype_candidates("cpu", False, requested)
    if options.mode == "bfloat16" and (native_bfloat16() if native is None else native):
        return ["bfloat16", "float32"]
    if options.mode == "int8":
        return ["int8", "float32"]
    return ["float32"]


def torch_dtype(candidate: str) -> Any:
    """The torch dtype of a candidate (int8 quantizes weights only: float32 activations)."""
    import torch

    return torch.float32 if candidate == "int8" else getattr(torch, candidate)


def snr_db(reference: Any, candidate: Any) -> float:
    """Signal-to-noise ratio of ``candidate`` against ``reference``, dB (inf when equal)."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(candidate, dtype=np.float64)) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(float(np.sum(ref**2)), 1e-30) / noise)
