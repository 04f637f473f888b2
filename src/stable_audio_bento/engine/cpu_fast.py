"""The CPU fast path's model surgery, shared by the backends (``STABLE_AUDIO_CPU_FAST``).

Measured on a 2-core x86 CPU with AVX-512 BF16 / AMX (bench/RESULTS.md, CPU section): bfloat16
matmuls run at ~10x the float32 rate there, so the diffusion transformer in bfloat16 is ~4x
faster per step; the autoencoder's decoder is memory-bound in eager mode (its Snake activations
are five passes over the largest tensors), and ``torch.compile`` fuses them into the
convolutions' neighbours: the same samples (float32) at a fraction of the time. Compiling the
DiT does not pay on a CPU (slower than eager in both precisions), so only the decoder is.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

log = logging.getLogger(__name__)


def fold_weight_norm(module: Any) -> int:
    """Replace every weight-normalised layer's (g, v) by the weight they make: the same
    weights, computed once instead of at each call. Returns how many layers were folded.

    In place; the module's state-dict keys change (``weight_g``/``weight_v`` -> ``weight``), so
    a model is loaded from its weights before this runs, never after.
    """
    import torch
    from torch.nn.utils import parametrize

    folded = 0
    for layer in module.modules():
        if hasattr(layer, "weight_g") and hasattr(layer, "weight_v"):
            torch.nn.utils.remove_weight_norm(layer)
            folded += 1
        elif parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            folded += 1
    return folded


def compile_in_place(module: Any) -> None:
    """``torch.compile`` a module in place, for every length (dynamic shapes); compiled by
    its first call (the load check)."""
    module.compile(dynamic=True)


def quantize_int8(module: Any) -> int:
    """Quantize a module's linear layers to int8 weights with dynamic (per-batch) activation
    scales, in place; float32 in and out. Returns how many layers were quantized."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    count = sum(isinstance(m, torch.nn.Linear) for m in module.modules())
    with warnings.catch_warnings():  # torch points eager quantization users at torchao
        warnings.simplefilter("ignore")
        quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return count
