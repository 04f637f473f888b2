"""Where and in which precision a model runs: shared by every backend's loader."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def set_threads(threads: int) -> None:
    """``threads`` > 0 sets torch's intra-op thread count (for the whole process)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def first_finite(
    name: str,
    candidates: Sequence[str],
    make: Callable[[str, bool], T],
    proves: Callable[[T, str], bool],
) -> T:
    """The first precision whose engine passes its check, best first (``dtype_candidates``).

    ``make(dtype, fresh)`` builds the engine in ``dtype`` (``fresh``: after a failed check, from
    the stored weights again); ``proves(engine, dtype)`` says whether it gives finite audio
    (float32 needs no proof unless something else, compilation, must be warmed up).
    """
    for i, candidate in enumerate(candidates):
        engine = make(candidate, i > 0)
        if proves(engine, candidate):
            return engine
        log.warning("%s gives non-finite audio in %s; trying the next precision", name, candidate)
    raise ModelLoadError(f"{name}: no precision gives finite audio ({', '.join(candidates)})")
