"""Stable Audio 3 at full shape with random weights: our engine vs diffusers' stock pipeline.

No weights are needed: the SA3-small shape (DiT 1024 x 20 layers, 16 heads, 433 M; SAME-S,
107.5 M; a T5Gemma-b-shaped encoder) is built with seeded random weights, so each step and the
decode cost what the real model's do. Both implementations run the same modules on the same
requests (8 ping-pong steps, cfg 1): ours (``SA3Engine``) and ``StableAudio3Pipeline``. Each
implementation runs in a subprocess of its own, so its peak RSS is its own; lengths go up, so
a peak is never an earlier, longer run's. The decode rows show how the time grows with the
length: diffusers' SAME decode is quadratic (a dense band mask and score matrix per layer),
ours linear.

    python -m bench --only sa3           the CPU rows (10 s and 30 s; decodes up to 120 s)
    python -m bench.sa3 --worker ours    one implementation's rows as JSON (used by the above)

GPU mode (``gpu_rows``, called from ``bench/gpu.py``): the small and medium shapes in half
precision at 10 / 120 / 380 s, ours vs stock (an out-of-memory stock run is reported as such).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, quiet

PROMPT = "a steam train pulling into a station, horn"
STEPS = 8
GENERATE_SECONDS = (10.0, 30.0)
DECODE_SECONDS = {"ours": (10.0, 30.0, 60.0, 120.0), "stock": (10.0, 30.0)}
# Full shapes (parameter counts checked against the published sizes in the SA3 import tests).
SHAPES: dict[str, dict[str, Any]] = {
    "small": {
        "transformer": {
            "embed_dim": 1024,
            "depth": 20,
            "num_heads": 16,
            "ff_mult": 4.0,
            "use_differential_attention": False,
        },
        "vae": {},  # AutoencoderSAME's defaults are SAME-S
        "max_seconds": 120.0,
    },
    "medium": {
        "transformer": {"embed_dim": 1536, "depth": 24, "num_heads": 24, "ff_mult": 4.0},
        "vae": {
            "encoder_channels": 256,
            "encoder_transformer_depths": [12],
            "decoder_sinusoidal_blocks": [8],
        },
        "max_seconds": 380.0,
    },
}
# google/t5gemma-b-b-ul2's encoder shape.
T5GEMMA_B = {
    "vocab_size": 256000,
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "head_dim": 64,
    "query_pre_attn_scalar": 64,
}
TINY = {
    "transformer": {"embed_dim": 64, "depth": 2, "num_heads": 2, "cond_token_dim": 64},
    "text_encoder": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1},
    "vae": {"encoder_channels": 16, "encoder_transformer_depths": [1], "dim_heads": 32},
}


def build(shape: str, tiny: bool = False, device: str = "cpu", dtype: Any = None) -> Any:
    """An ``SA3Engine`` of ``shape`` with seeded random weights, and a stock pipeline sharing
    its modules (the same weights)."""
    import torch
    from diffusers import (
        AutoencoderSAME,
        FlowMatchEulerDiscreteScheduler,
        StableAudio3DiTModel,
        StableAudio3DurationEmbedder,
        StableAudio3Pipeline,
    )
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma import T5GemmaModuleConfig

    from stable_audio_bento.engine.info import ModelInfo
    from stable_audio_bento.engine.sa3 import SA3_BACKEND
    from stable_audio_bento.engine.sa3.demo import build_tokenizer
    from stable_audio_bento.engine.sa3.engine import OPTIONS, Components, SA3Engine

    dtype = dtype or torch.float32
    spec = SHAPES[shape]
    dit = dict(spec["transformer"])
    text = dict(T5GEMMA_B)
    vae = dict(spec["vae"])
    if tiny:
        dit.update(TINY["transformer"])
        text.update(TINY["text_encoder"], num_attention_heads=2, num_key_value_heads=1)
        text.update(head_dim=32, query_pre_attn_scalar=32, vocab_size=2048)
        vae = dict(TINY["vae"])
    width = int(text["hidden_size"])
    recipe = json.loads((REPO_ROOT / "models" / "demo-sa3" / "recipe.json").read_text())
    with torch.random.fork_rng(), quiet():
        torch.manual_seed(0)
        module = T5GemmaModuleConfig(**text)
        encoder = T5GemmaEncoderModel(
            T5GemmaConfig(
                encoder=module.to_dict(),
                decoder=module.to_dict(),
                is_encoder_decoder=False,
                vocab_size=text["vocab_size"],
            )
        )
        parts = Components(
            transformer=StableAudio3DiTModel(
                **{"cond_token_dim": width, "global_cond_dim": width, **dit}
            ),
            vae=AutoencoderSAME(**vae),
            text_encoder=encoder,
            tokenizer=build_tokenizer(recipe["vocabulary"], 256),
            duration_embedder=StableAudio3DurationEmbedder(output_dim=width),
        )
        for part in parts.modules():
            with torch.no_grad():  # zero-initialised output layers would make outputs constant
                for param in part.parameters():
                    if param.ndim >= 2 and not param.any():
                        param.normal_(0, 0.02)
            part.eval().requires_grad_(False).to(device=device, dtype=dtype)
    info = ModelInfo(
        name=f"sa3-{shape}",
        backend=SA3_BACKEND,
        sample_rate=44100,
        channels=2,
        sample_size=round(spec["max_seconds"] * 44100),
        latent_downsampling=parts.vae.downsampling_ratio,
        objective="rf_denoiser",
        default_steps=STEPS,
        default_cfg_scale=1.0,
        default_sampler="pingpong",
        conditioning_ids=("prompt", "seconds_total"),
        fixed_window=False,
        max_seconds_override=spec["max_seconds"],
        options=OPTIONS,
    )
    engine = SA3Engine(parts, info, device, dtype)
    pipe = StableAudio3Pipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        duration_embedder=parts.duration_embedder,
        transformer=parts.transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, stochastic_sampling=True),
    )
    pipe.set_progress_bar_config(disable=True)
    return engine, pipe


class PeakRss:
    """The process's resident set size, sampled every few milliseconds while in use."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    @contextmanager
    def watch(self) -> Iterator[PeakRss]:
        self.peak = self.start = self.now()
        self._stop.clear()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, self.now())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(self.peak, self.now())


def _measure(run: Callable[[], object]) -> dict[str, float]:
    import gc

    gc.collect()
    rss = PeakRss()
    with rss.watch():
        began = time.perf_counter()
        run()
        seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 2),
        "peak_rss_gb": round(rss.peak / 1e9, 2),
        "added_rss_gb": round((rss.peak - rss.start) / 1e9, 2),
    }


def _generation(
    impl: str, engine: Any, pipe: Any, seconds: float, sampling: Any
) -> Callable[[], object]:
    """One request of ``seconds``: our engine, or diffusers' pipeline with a CPU generator."""
    import torch

    from stable_audio_bento.engine import EngineRequest

    request = EngineRequest(PROMPT, 1, seconds)
    if impl == "ours":
        return lambda: engine.generate([request], sampling)
    device = str(pipe.device)
    return lambda: (
        pipe(
            PROMPT,
            duration=seconds,
            num_inference_steps=sampling.steps,
            generator=[torch.Generator(device).manual_seed(1)],
        ).audios
    )


def _decoding(impl: str, vae: Any, latent: Any) -> Callable[[], object]:
    from stable_audio_bento.engine.sa3.decode import decode

    if impl == "ours":
        return lambda: decode(vae, latent)
    return lambda: vae.decode(latent).sample


def worker(impl: str, shape: str = "small", tiny: bool = False) -> list[dict[str, Any]]:
    """One implementation's rows (generate, then decode), in this process."""
    import torch

    from stable_audio_bento.engine import SamplingParams

    engine, pipe = build(shape, tiny)
    vae = engine.parts.vae
    sampling = SamplingParams(STEPS, 1.0, "pingpong")
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        # Warm-up: one short request through the whole path.
        _generation(impl, engine, pipe, 1.0, SamplingParams(1, 1.0, "pingpong"))()
        for seconds in GENERATE_SECONDS:
            measured = _measure(_generation(impl, engine, pipe, seconds, sampling))
            rows.append({"impl": impl, "stage": "generate", "audio_seconds": seconds, **measured})
        for seconds in DECODE_SECONDS[impl]:
            frames = -(-round(seconds * 44100) // vae.downsampling_ratio)
            latent = torch.randn(1, vae.config.latent_dim, frames)
            measured = _measure(_decoding(impl, vae, latent))
            rows.append({"impl": impl, "stage": "decode", "audio_seconds": seconds, **measured})
    return rows


def run(shape: str = "small", tiny: bool = False) -> dict[str, Any]:
    """Both implementations, each in its own process (its peak RSS is its own)."""
    rows: list[dict[str, Any]] = []
    for impl in ("ours", "stock"):
        command = [sys.executable, "-m", "bench.sa3", "--worker", impl, "--shape", shape]
        if tiny:
            command.append("--tiny")
        done = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=3600
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.sa3 {impl} failed:\n{done.stderr[-3000:]}")
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    return {"shape": shape, "tiny": tiny, "steps": STEPS, "rows": rows}


def render(results: dict[str, Any]) -> str:
    from .common import table

    rows = results["rows"]

    def find(impl: str, stage: str, seconds: float) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in rows
                if (r["impl"], r["stage"], r["audio_seconds"]) == (impl, stage, seconds)
            ),
            None,
        )

    body = []
    for r in rows:
        stock = find("stock", r["stage"], r["audio_seconds"])
        speedup = f"{stock['seconds'] / r['seconds']:.2f}x" if stock else "n/a"
        body.append(
            [
                r["stage"],
                f"{r['audio_seconds']:g}",
                r["impl"],
                r["seconds"],
                f"{r['seconds'] / r['audio_seconds']:.3f}",
                speedup,
                r["peak_rss_gb"],
                r["added_rss_gb"],
            ]
        )
    growth = []
    for impl in ("ours", "stock"):
        decodes = [r for r in rows if r["impl"] == impl and r["stage"] == "decode"]
        if len(decodes) >= 2:
            first, last = decodes[0], decodes[-1]
            growth.append(
                f"{impl} decode {first['audio_seconds']:g} -> {last['audio_seconds']:g} s "
                f"({last['audio_seconds'] / first['audio_seconds']:g}x longer): "
                f"{last['seconds'] / first['seconds']:.1f}x the time"
            )
    shape = "tiny" if results["tiny"] else "full"
    return "\n".join(
        [
            f"### Stable Audio 3 {results['shape']} ({shape} shape, random weights) on this CPU",
            "",
            f"One request, {results['steps']} ping-pong steps, cfg 1, float32; the same modules"
            " and requests for both. `generate` is prompt to audio; `decode` is the SAME decode"
            " of a latent of that length alone. RSS: the process's peak during the run, and what"
            " the run added to it.",
            "",
            table(
                [
                    "stage",
                    "audio s",
                    "implementation",
                    "seconds",
                    "s per audio s",
                    "vs stock",
                    "peak RSS GB",
                    "added GB",
                ],
                body,
            ),
            "",
            "Growth with length: " + "; ".join(growth) + ".",
            "",
        ]
    )


def gpu_rows(
    device: str, tiny: bool, lengths: tuple[float, ...] = (10.0, 120.0, 380.0)
) -> list[dict[str, Any]]:
    """GPU mode: small and medium shapes in half precision, ours vs stock, per length."""
    import torch

    from stable_audio_bento.engine import SamplingParams, dtype_candidates

    dtype_name = dtype_candidates(device, half=True)[0]
    dtype = getattr(torch, dtype_name)
    sampling = SamplingParams(STEPS, 1.0, "pingpong")
    rows: list[dict[str, Any]] = []
    for shape in ("small", "medium"):
        engine, pipe = build(shape, tiny, device, dtype)
        limit = SHAPES[shape]["max_seconds"]
        for seconds in [s for s in lengths if s <= limit]:
            timings: dict[str, float | str] = {}
            for impl in ("ours", "stock"):
                go = _generation(impl, engine, pipe, seconds, sampling)
                try:
                    with torch.inference_mode():
                        go()  # warm-up
                        _sync(device)
                        began = time.perf_counter()
                        go()
                        _sync(device)
                    timings[impl] = round(time.perf_counter() - began, 3)
                except torch.OutOfMemoryError:
                    timings[impl] = "out of memory"
                if device == "cuda":
                    torch.cuda.empty_cache()
            rows.append(
                {
                    "model": f"sa3-{shape}",
                    "shape": "tiny" if tiny else "full",
                    "dtype": dtype_name,
                    "audio_seconds": seconds,
                    "seconds": timings,
                }
            )
        del engine, pipe
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def render_gpu(rows: list[dict[str, Any]]) -> str:
    from .common import table

    body = []
    for r in rows:
        for impl in ("ours", "stock"):
            value = r["seconds"][impl]
            ours = r["seconds"]["ours"]
            speedup = (
                f"{value / ours:.2f}x"
                if isinstance(value, float) and isinstance(ours, float)
                else ""
            )
            body.append([r["model"], r["shape"], r["audio_seconds"], impl, value, speedup])
    return "\n".join(
        [
            f"Stable Audio 3 ({rows[0]['dtype']}, {STEPS} ping-pong steps, cfg 1), seconds per "
            "request; the last column is stock's time over ours:",
            "",
            table(["model", "shape", "audio s", "implementation", "seconds", "stock / ours"], body),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sa3", description=__doc__)
    parser.add_argument("--worker", choices=("ours", "stock"), help="one implementation, as JSON")
    parser.add_argument("--shape", choices=tuple(SHAPES), default="small")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a smoke run)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.shape, args.tiny)))
    else:
        print(render(run(args.shape, args.tiny)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
