"""CPU mode: the small models at full shape on this CPU, each fast-path mode vs stock float32.

stable-audio-open-small (11.9 s window, 8 steps, cfg 1, ping-pong) is built from its published
configuration with seeded random weights (a ``t5-base``-shaped T5 included) and written as a
store entry, so every mode goes through the engine's real loader, load check included:

- ``float32``: our engine as it loads by default on a CPU (eager float32);
- ``exact``, ``bfloat16``, ``int8``: ``STABLE_AUDIO_CPU_FAST`` (``engine/cpu_fast.py``);
- ``stock``: stable-audio-tools' ``generate_diffusion_cond`` on the float32 model.

Per mode: seconds for one window (after a warm-up), the real-time factor (seconds of compute
per second of audio: under 1 is faster than real time), the load time (compilation and the load
check), the process's peak RSS during the request, the achieved model TFLOP/s against this CPU's
measured matmul peak in the mode's dtype, and the SNR of the waveform against ``float32``
(same weights, seed and request). One request per mode runs under cProfile; the summaries go to
``bench/profiles/``. SA3-small rows come from ``cpu_sa3.py`` when its engine is present.

With ``tiny`` the same code runs at toy shapes in seconds (tests); those numbers mean nothing.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import pstats
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, quiet, table

MODES = ("float32", "exact", "bfloat16", "int8")
PROFILE_DIR = REPO_ROOT / "bench" / "profiles"
PROMPT = "a warm analog synth pad"


def _sig(value: float) -> float:
    return float(f"{value:.3g}")


def matmul_peaks() -> dict[str, float]:
    """Dense 1024^3 matmul TFLOP/s of this CPU in float32 and bfloat16 (best of 3)."""
    import torch

    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(1024, 1024, dtype=dtype)
        b = torch.randn(1024, 1024, dtype=dtype)
        for _ in range(3):
            a @ b
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(10):
                a @ b
            best = min(best, time.perf_counter() - began)
        peaks[str(dtype).removeprefix("torch.")] = _sig(2 * 1024**3 * 10 / best / 1e12)
    return peaks


class PeakRss:
    """The process's largest resident set while the block runs (polled every 10 ms), MiB."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def mib(self) -> int:
        return round(self.peak / 2**20)


def profiled(run: Callable[[], Any], path: Path | None, top: int = 8) -> tuple[Any, list[str]]:
    """Run once under cProfile; the summary (sorted by own time) to ``path``; the top lines."""
    profiler = cProfile.Profile()
    result = profiler.runcall(run)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats("tottime")
    stats.print_stats(40)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(stream.getvalue())
    entries = []
    for func, (_cc, calls, tottime, _ct, _callers) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: -item[1][2],
    )[:top]:
        entries.append(f"{func[2]} ({func[0]}:{func[1]}) {tottime:.2f} s x{calls}")
    return result, entries


def timed(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of ``repeats`` runs and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - began)
    return best, result


def write_entry(config: dict[str, Any], text_encoder: dict[str, Any], folder: Path) -> Path:
    """A store entry of ``config`` with seeded random weights (``bench.gpu._random_model``)."""
    from safetensors.torch import save_file

    from stable_audio_bento.engine.sao.demo import _build_text_encoder
    from stable_audio_bento.store.hub_cache import link_text_encoder, prepare_offline_hub

    from .gpu import _random_model

    recipe = json.loads((REPO_ROOT / "models" / "demo" / "recipe.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.json").write_text(json.dumps(config))
    _build_text_encoder({**recipe, "text_encoder": text_encoder}, folder / "text_encoder")
    link_text_encoder(prepare_offline_hub(), text_encoder["hub_name"], folder / "text_encoder")
    model = _random_model(config)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    del model, state
    gc.collect()
    return folder


def measure(
    engine: Any, request: Any, sampling: Any, warm: Any, repeats: int, path: Path | None
) -> dict[str, Any]:
    """One engine on one request: a warm-up, then the timed runs (the first under cProfile)."""
    engine.generate([request], warm)
    with PeakRss() as rss:
        began = time.perf_counter()
        (audio,), top = profiled(lambda: engine.generate([request], sampling), path)
        seconds = time.perf_counter() - began
    if repeats > 1:
        seconds = min(seconds, timed(lambda: engine.generate([request], sampling), repeats - 1)[0])
    return {"audio": audio, "seconds": seconds, "rss": rss.mib, "top": top}


def measure_stock(engine: Any, request: Any, sampling: Any, repeats: int) -> Any:
    """stable-audio-tools' ``generate_diffusion_cond`` on the same model: seconds, peak RSS.
    No warm-up of its own: it runs the modules and shapes our float32 run has just warmed."""
    from .engine import stock_generate

    with PeakRss() as rss:
        seconds = timed(lambda: stock_generate(engine, [request], sampling), repeats)[0]
    return seconds, rss.mib


def run_open_small(
    use_tiny: bool,
    steps: int | None,
    frames: int | None,
    modes: Sequence[str],
    repeats: int,
    profile_dir: Path | None,
) -> list[dict[str, Any]]:
    """open-small in each mode and stock float32, one row per mode (stock's own row first)."""
    from stable_audio_bento.engine import CpuOptions, EngineRequest, LoadOptions, SamplingParams
    from stable_audio_bento.engine.precision import snr_db
    from stable_audio_bento.engine.sao.engine import StableAudioEngine

    from . import gpu

    spec = gpu.MODELS["small"]
    config = gpu.tiny(spec["config"], frames) if use_tiny else spec["config"]
    sampling = SamplingParams(steps or spec["steps"], spec["cfg_scale"], spec["sampler"])
    warm = SamplingParams(2, spec["cfg_scale"], spec["sampler"])
    shape = "tiny" if use_tiny else "full"
    rows: list[dict[str, Any]] = []
    reference: Any = None
    flops = stock_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        with quiet():
            entry = write_entry(config, gpu.T5_TINY if use_tiny else gpu.T5_BASE, Path(tmp) / "m")
        for mode in ["float32", *[m for m in modes if m != "float32"]]:
            gc.collect()
            began = time.perf_counter()
            with quiet():
                engine = StableAudioEngine.load(
                    entry,
                    "open-small",
                    {},
                    LoadOptions(device="cpu", cpu=CpuOptions("off" if mode == "float32" else mode)),
                )
            load_seconds = time.perf_counter() - began
            request = EngineRequest(prompt=PROMPT, seed=1, seconds_total=engine.info.window_seconds)
            path = profile_dir / f"open-small-{shape}-{mode}.txt" if profile_dir else None
            result = measure(engine, request, sampling, warm, repeats, path)
            if mode == "float32":
                reference = result["audio"]
                flops = sao_flops(engine, request, sampling)
                stock_seconds, stock_rss = measure_stock(engine, request, sampling, repeats)
                rows.append(
                    _row(
                        "open-small", "stock", shape, sampling, request.seconds_total, stock_seconds
                    )
                    | {"precision": "float32", "peak_rss_mib": stock_rss, "flop": flops}
                )
            rows.append(
                _row("open-small", mode, shape, sampling, request.seconds_total, result["seconds"])
                | {
                    "stock_seconds": round(stock_seconds, 3),
                    "speedup": round(stock_seconds / result["seconds"], 2),
                    "precision": engine.precision,
                    "load_seconds": round(load_seconds, 1),
                    "peak_rss_mib": result["rss"],
                    "flop": flops,
                    "snr_db": round(min(snr_db(reference, result["audio"]), 999.0), 1),
                    "profile": _shown(path),
                    "profile_top": result["top"],
                }
            )
            engine.unload()
            del engine
    return rows


def sao_flops(engine: Any, request: Any, sampling: Any) -> float:
    """Model FLOPs of one request: every DiT step (CFG included) and the window's decode.

    The decode is counted on 4 latent frames and scaled: the decoder is convolutional, so its
    FLOPs are exactly linear in the length (its eager float32 run of the whole window would
    cost as much as the request)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    frames = engine.info.sample_size // engine.info.latent_downsampling
    channels = engine.model.io_channels
    with torch.inference_mode():
        cond = engine.conditioning([request])
        x = torch.randn(1, channels, frames, dtype=engine.dtype)
        t = torch.full((1,), 0.5, dtype=engine.dtype)
        with FlopCounterMode(display=False) as step:
            engine.model.model(
                x, t, **cond, cfg_scale=sampling.cfg_scale, batch_cfg=True, rescale_cfg=True
            )
        with FlopCounterMode(display=False) as decode:
            engine.model.pretransform.decode(torch.randn(1, channels, 4, dtype=engine.dtype))
    return float(sampling.steps * step.get_total_flops() + decode.get_total_flops() * frames / 4)


def _shown(path: Path | None) -> str | None:
    if path is None:
        return None
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _row(
    model: str, mode: str, shape: str, sampling: Any, audio_seconds: float, seconds: float
) -> dict[str, Any]:
    return {
        "model": model,
        "mode": mode,
        "shape": shape,
        "steps": sampling.steps,
        "audio_seconds": round(audio_seconds, 2),
        "seconds": round(seconds, 3),
        "stock_seconds": round(seconds, 3),
        "speedup": 1.0,
        "rtf": round(seconds / audio_seconds, 3),
    }


def run(
    tiny_shapes: bool = False,
    steps: int | None = None,
    frames: int | None = None,
    modes: Sequence[str] = MODES,
    repeats: int = 1,
    profile_dir: Path | None = PROFILE_DIR,
    sa3: bool | None = None,
) -> dict[str, Any]:
    """Every model at its CPU shapes, every mode, side by side in this one process (SA3-small
    too unless ``sa3`` is False, when its engine and diffusers' pipeline are there)."""
    import torch

    from stable_audio_bento.engine.precision import cpu_cores, native_bfloat16

    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; expected some of {MODES}")
    peaks = matmul_peaks()
    rows = run_open_small(tiny_shapes, steps, frames, modes, repeats, profile_dir)
    if sa3 or (sa3 is None and sa3_available()):
        from . import cpu_sa3

        rows += cpu_sa3.run(tiny_shapes, steps, modes, repeats, profile_dir)
    for row in rows:
        if "flop" in row:
            peak = peaks["bfloat16" if row["precision"] == "bfloat16" else "float32"]
            row["tflops"] = _sig(row["flop"] / row["seconds"] / 1e12)
            row["fraction_of_peak"] = _sig(row["tflops"] / peak)
    return {
        "threads": torch.get_num_threads(),
        "cores": cpu_cores(),
        "native_bfloat16": native_bfloat16(),
        "peaks": peaks,
        "rows": rows,
    }


def render(results: dict[str, Any]) -> str:
    peaks = results["peaks"]
    rows = []
    for r in results["rows"]:
        rows.append(
            [
                r["model"],
                f"{r['audio_seconds']:g}",
                r["mode"],
                r.get("precision", ""),
                r["seconds"],
                f"{r['rtf']:.2f}",
                f"{r['speedup']:.2f}x",
                r.get("load_seconds", ""),
                r.get("peak_rss_mib", ""),
                r.get("tflops", ""),
                f"{100 * r['fraction_of_peak']:.0f}%" if "fraction_of_peak" in r else "",
                "ref" if r["mode"] == "float32" else r.get("snr_db", ""),
            ]
        )
    shape = results["rows"][0]["shape"] if results["rows"] else "full"
    out = [
        f"### CPU mode: the small models on this CPU ({shape} shapes, random weights)",
        "",
        f"{results['cores']} cores, {results['threads']} torch threads, native bfloat16: "
        f"{'yes' if results['native_bfloat16'] else 'no'}; measured matmul peak "
        f"{peaks['float32']:g} TFLOP/s float32, {peaks['bfloat16']:g} bfloat16. Seconds for "
        "one request after a warm-up; RTF = seconds per second of audio (under 1: faster "
        "than real time); vs stock = stock float32 seconds / these; load = load time with "
        "compilation and the load check; RSS = process peak during the request; SNR = the "
        "waveform against our float32 (same weights, seed and request).",
        "",
        table(
            [
                "model",
                "audio s",
                "mode",
                "precision",
                "seconds",
                "RTF",
                "vs stock",
                "load s",
                "RSS MiB",
                "TFLOP/s",
                "of peak",
                "SNR dB",
            ],
            rows,
        ),
        "",
    ]
    return "\n".join(out)


def sa3_available() -> bool:
    """Whether the SA3 rows can run (their module and diffusers' SA3 pipeline import)."""
    try:
        from diffusers import StableAudio3Pipeline  # noqa: F401

        from . import cpu_sa3, sa3  # noqa: F401
    except ImportError:
        return False
    return True
