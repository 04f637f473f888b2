"""Where and in which precision a model runs: shared by every backend's loader."""

from __future__ import annotations

from ..errors import ModelLoadError

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
