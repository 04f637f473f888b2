"""CPU mode, Stable Audio 3 small: our engine in each CPU mode vs diffusers' stock pipeline.

The SA3-small shape with seeded random weights (``bench.sa3.build``: DiT 1024 x 20, SAME-S, a
T5Gemma-b-shaped encoder); stock is ``StableAudio3Pipeline`` in float32 on the same modules.
Modes as the SA3 loader applies them (``SA3Engine.load`` with ``CpuOptions``): ``float32``
(the default), ``bfloat16`` (every component cast, as a bfloat16 load reads them; only where
the CPU has native bfloat16) and ``int8`` (the DiT's linear layers quantized). ``exact`` is
float32 for SA3 (its decode is already ours, exact and linear in length; nothing is
compiled), so it has no row of its own.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .cpu import PeakRss, _row, _shown, profiled, timed

LENGTHS = (10.0, 30.0)
# int8 is measured on open-small (the same DiT quantization); at SA3's lengths on two cores each
# extra mode costs minutes, so it runs here only when asked for (``modes_sa3``).
SA3_MODES = ("float32", "bfloat16")
TINY_LENGTHS = (1.0,)


def _flops(engine: Any, request: Any, sampling: Any) -> float:
    """Model FLOPs of one request (every DiT step, the decode), counted by running it once
    under FlopCounterMode at 1 step (the step count scales the DiT's share)."""
    from torch.utils.flop_counter import FlopCounterMode

    from stable_audio_bento.engine import SamplingParams

    one = SamplingParams(1, sampling.cfg_scale, sampling.sampler)
    with FlopCounterMode(display=False) as counter:
        latents = engine.sample([request], one, None)
    with FlopCounterMode(display=False) as decode:
        engine.decode(latents[:1], request)
    return float(sampling.steps * counter.get_total_flops() + decode.get_total_flops())


def _stock(pipe: Any, request: Any, sampling: Any) -> Any:
    import torch

    return pipe(
        request.prompt,
        duration=request.seconds_total,
        num_inference_steps=sampling.steps,
        generator=[torch.Generator("cpu").manual_seed(request.seed)],
    ).audios


def run(
    use_tiny: bool,
    steps: int | None,
    modes: Sequence[str],
    repeats: int,
    profile_dir: Path | None,
    lengths: Sequence[float] | None = None,
    sa3_modes: Sequence[str] = SA3_MODES,
) -> list[dict[str, Any]]:
    import torch

    from stable_audio_bento.engine import EngineRequest, SamplingParams
    from stable_audio_bento.engine.cpu_fast import quantize_int8
    from stable_audio_bento.engine.precision import native_bfloat16, snr_db

    from . import sa3
    from .common import quiet

    lengths = tuple(lengths or (TINY_LENGTHS if use_tiny else LENGTHS))
    sampling = SamplingParams(steps or sa3.STEPS, 1.0, "pingpong")
    warm = SamplingParams(1, 1.0, "pingpong")
    shape = "tiny" if use_tiny else "full"
    wanted = ["float32"] + [m for m in ("bfloat16", "int8") if m in modes and m in sa3_modes]
    if not native_bfloat16() and "bfloat16" in wanted:
        wanted.remove("bfloat16")
    rows: list[dict[str, Any]] = []
    reference: dict[float, Any] = {}
    stock: dict[float, float] = {}
    flops: dict[float, float] = {}
    for mode in wanted:
        gc.collect()
        with quiet():
            engine, pipe = sa3.build("small", use_tiny)
        if mode == "bfloat16":
            with quiet():
                for part in engine.parts.modules():
                    part.to(torch.bfloat16)
            engine.dtype = torch.bfloat16
        elif mode == "int8":
            quantize_int8(engine.parts.transformer)
        with torch.inference_mode():
            engine.generate([EngineRequest(sa3.PROMPT, 1, 1.0)], warm)
            for seconds in lengths:
                request = EngineRequest(sa3.PROMPT, 1, seconds)
                name = f"sa3-small-{shape}-{seconds:g}s-{mode}.txt"
                path = profile_dir / name if profile_dir else None
                with PeakRss() as rss:
                    began = time.perf_counter()
                    (audio,), top = profiled(partial(engine.generate, [request], sampling), path)
                    elapsed = time.perf_counter() - began
                if repeats > 1:
                    elapsed = min(
                        elapsed,
                        timed(partial(engine.generate, [request], sampling), repeats - 1)[0],
                    )
                if mode == "float32":
                    reference[seconds] = audio
                    flops[seconds] = _flops(engine, request, sampling)
                    with quiet():
                        _stock(pipe, EngineRequest(sa3.PROMPT, 1, 1.0), warm)
                    with PeakRss() as stock_rss:
                        stock[seconds] = timed(partial(_stock, pipe, request, sampling), repeats)[0]
                    rows.append(
                        _row("sa3-small", "stock", shape, sampling, seconds, stock[seconds])
                        | {
                            "precision": "float32",
                            "peak_rss_mib": stock_rss.mib,
                            "flop": flops[seconds],
                        }
                    )
                rows.append(
                    _row("sa3-small", mode, shape, sampling, seconds, elapsed)
                    | {
                        "stock_seconds": round(stock[seconds], 3),
                        "speedup": round(stock[seconds] / elapsed, 2),
                        "precision": mode,
                        "peak_rss_mib": rss.mib,
                        "flop": flops[seconds],
                        "snr_db": round(min(snr_db(reference[seconds], audio), 999.0), 1),
                        "profile": _shown(path),
                        "profile_top": top,
                    }
                )
        engine = pipe = None  # free before the next mode builds its own
    return rows
