"""Engine level, demo model: our engine vs stable-audio-tools' stock ``generate_diffusion_cond``.

Both run the same model object on the same requests (10 s of audio each, the demo's default
sampling: 8 steps, cfg 7, dpmpp-3m-sde). Stock is what the library's own scripts do: one call
for the batch, one seed for all items, decode of the whole 47.55 s window, trim afterwards.
Also: where the time of one request goes, what coalescing 8 concurrent callers gives over 8
sequential calls, and torch's intra-op thread count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from .common import Timing, best, load_average, quiet, timed

SECONDS = 10.0
PROMPTS = [
    "rain on a tin roof",
    "a dog barking in the distance",
    "warm analog synth pad, slow",
    "footsteps on gravel",
    "crowd applause in a hall",
    "ocean waves crashing on a beach",
    "lofi hip hop beat 90 bpm",
    "a door creaks and slams",
]


def requests(count: int, seconds: float = SECONDS) -> list[Any]:
    from stable_audio_bento.engine import EngineRequest

    return [
        EngineRequest(prompt=PROMPTS[i % len(PROMPTS)], seed=1000 + i, seconds_total=seconds)
        for i in range(count)
    ]


def stock_generate(engine: Any, batch: Sequence[Any], sampling: Any) -> list[Any]:
    """The same requests through ``generate_diffusion_cond``, as its own scripts call it."""
    import numpy as np
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    from stable_audio_bento.engine import RF_OBJECTIVES, SIGMA_MAX, SIGMA_MIN

    info = engine.info
    conditioning = []
    for r in batch:
        row = {
            "prompt": r.prompt,
            "seconds_start": r.seconds_start,
            "seconds_total": r.seconds_start + r.seconds_total,
        }
        conditioning.append({k: v for k, v in row.items() if k in info.conditioning_ids})
    kwargs: dict[str, Any] = {"sampler_type": sampling.sampler}
    if info.objective not in RF_OBJECTIVES:
        kwargs.update(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    with quiet():
        audio = generate_diffusion_cond(
            engine.model,
            steps=sampling.steps,
            cfg_scale=sampling.cfg_scale,
            conditioning=conditioning,
            batch_size=len(batch),
            sample_size=info.sample_size,
            seed=batch[0].seed,
            device=engine.device,
            **kwargs,
        )
    outputs = []
    for i, r in enumerate(batch):
        first = round(r.seconds_start * info.sample_rate)
        item = audio[i, :, first : first + round(r.seconds_total * info.sample_rate)]
        item = item.float().cpu().numpy()
        outputs.append(item / max(float(np.abs(item).max()), 1e-9))
    return outputs


def _per_request(timing: Timing, count: int) -> dict[str, float]:
    return {
        "seconds_per_request": round(timing.wall / count, 4),
        "requests_per_second": round(count / timing.wall, 3),
        "cpu_seconds_per_request": round(timing.cpu / count, 4),
    }


def batch_sizes(engine: Any, sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    sampling = engine.sampling()
    rows = []
    for size in sizes:
        batch = requests(size)
        ours = best(lambda b=batch: engine.generate(b, sampling), repeats)
        stock = best(lambda b=batch: stock_generate(engine, b, sampling), repeats)
        rows.append(
            {
                "batch": size,
                "ours": _per_request(ours, size),
                "stock": _per_request(stock, size),
                "speedup": round(stock.wall / ours.wall, 2),
                "load_average": load_average(),
            }
        )
    return rows


def stages(engine: Any, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Seconds per request in each stage: text encoder, sampling loop, decode, WAV encode."""
    import torch

    from stable_audio_bento.audio import peak_normalize
    from stable_audio_bento.formats import encode_audio

    sampling = engine.sampling()
    rate = engine.info.sample_rate
    rows = []
    for size in sizes:
        batch = requests(size)
        with torch.inference_mode():
            cond = timed(lambda b=batch: engine.conditioning(b))
            began = time.perf_counter()
            latents = engine.sample(batch, sampling, None)
            sample = time.perf_counter() - began
            began = time.perf_counter()
            audio = [
                peak_normalize(engine.decode(latents[i : i + 1], r)) for i, r in enumerate(batch)
            ]
            decode = time.perf_counter() - began
        encode = timed(lambda a=audio: [encode_audio(x, rate, "wav") for x in a])
        seconds = {
            "text_encoder": cond.wall,
            # The sampling call encodes the prompts itself: count that once, above.
            "sampling": max(sample - cond.wall, 0.0),
            "decode": decode,
            "wav_encode": encode.wall,
        }
        rows.append(
            {
                "batch": size,
                **{k: round(v / size, 4) for k, v in seconds.items()},
                "load_average": load_average(),
            }
        )
    return rows


def coalescing(engine: Any, count: int) -> dict[str, Any]:
    """``count`` concurrent callers through the coalescer vs the same requests one by one."""
    from stable_audio_bento.pipeline.batching import Batcher

    sampling = engine.sampling()
    batch = requests(count)
    sequential = timed(lambda: [engine.generate([r], sampling) for r in batch])
    batcher = Batcher(engine, max_batch_size=count, max_wait=0.005)
    start = threading.Barrier(count + 1)

    def call(request: Any) -> None:
        start.wait()
        batcher.run(request, sampling)

    threads = [threading.Thread(target=call, args=(r,)) for r in batch]
    for thread in threads:
        thread.start()

    def release_and_wait() -> None:
        start.wait()
        for thread in threads:
            thread.join()

    before = engine.stats.batches
    concurrent = timed(release_and_wait)
    batcher.close()
    batches = engine.stats.last_batch_sizes[before - engine.stats.batches :]
    return {
        "requests": count,
        "sequential_seconds": round(sequential.wall, 3),
        "concurrent_seconds": round(concurrent.wall, 3),
        "throughput_ratio": round(sequential.wall / concurrent.wall, 2),
        "cpu_ratio": round(sequential.cpu / concurrent.cpu, 2),
        "batch_sizes": batches,
        "load_average": load_average(),
    }


def threads(engine: Any, sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """torch's intra-op threads: its default (one per core) against one."""
    import torch

    default = torch.get_num_threads()
    sampling = engine.sampling()
    rows = []
    try:
        for count in sorted({1, default}):
            torch.set_num_threads(count)
            for size in sizes:
                batch = requests(size)
                timing = best(lambda b=batch: engine.generate(b, sampling), repeats)
                rows.append(
                    {
                        "threads": count,
                        "batch": size,
                        **_per_request(timing, size),
                        "load_average": load_average(),
                    }
                )
    finally:
        torch.set_num_threads(default)
    return rows


def run(entry: Any, quick: bool) -> dict[str, Any]:
    from stable_audio_bento.engine import LoadOptions, StableAudioEngine

    engine = StableAudioEngine.load(
        entry.path, entry.name, entry.metadata, LoadOptions(device="cpu")
    )
    sampling = engine.sampling()
    engine.generate(requests(1), sampling)  # warm-up: first-call allocations, lazy imports
    stock_generate(engine, requests(1), sampling)
    repeats = 1 if quick else 2
    sizes = (1, 8) if quick else (1, 2, 4, 8)
    results: dict[str, Any] = {
        "model": entry.tag,
        "request_seconds": SECONDS,
        "sampling": {
            "steps": sampling.steps,
            "cfg_scale": sampling.cfg_scale,
            "sampler": sampling.sampler,
        },
        "batches": batch_sizes(engine, sizes, repeats),
        "stages": stages(engine, (1, 8)),
        "coalescing": coalescing(engine, 8),
    }
    if not quick:
        results["threads"] = threads(engine, (1, 8), repeats)
    engine.unload()
    return results


def render(results: dict[str, Any]) -> str:
    from .common import table

    s = results["sampling"]
    out = [
        f"### Engine: demo model, {results['request_seconds']:g} s requests, "
        f"{s['steps']} steps, cfg {s['cfg_scale']:g}, {s['sampler']}",
        "",
        table(
            [
                "batch",
                "ours s/req",
                "ours req/s",
                "stock s/req",
                "stock req/s",
                "ours vs stock",
                "load",
            ],
            [
                [
                    r["batch"],
                    r["ours"]["seconds_per_request"],
                    r["ours"]["requests_per_second"],
                    r["stock"]["seconds_per_request"],
                    r["stock"]["requests_per_second"],
                    f"{r['speedup']:.2f}x",
                    r["load_average"],
                ]
                for r in results["batches"]
            ],
        ),
        "",
        "Seconds per request by stage (ours):",
        "",
        table(
            ["batch", "text encoder", "sampling", "decode", "WAV encode", "load"],
            [
                [
                    r["batch"],
                    r["text_encoder"],
                    r["sampling"],
                    r["decode"],
                    r["wav_encode"],
                    r["load_average"],
                ]
                for r in results["stages"]
            ],
        ),
        "",
    ]
    c = results["coalescing"]
    out += [
        f"{c['requests']} concurrent callers through the coalescer: "
        f"{c['concurrent_seconds']:.2f} s vs {c['sequential_seconds']:.2f} s one by one = "
        f"**{c['throughput_ratio']:.2f}x** throughput (batches {c['batch_sizes']}, "
        f"CPU-time ratio {c['cpu_ratio']:.2f}x, load {c['load_average']}).",
        "",
    ]
    if "threads" in results:
        out += [
            "torch intra-op threads (ours):",
            "",
            table(
                ["threads", "batch", "s/req", "CPU s/req", "load"],
                [
                    [
                        r["threads"],
                        r["batch"],
                        r["seconds_per_request"],
                        r["cpu_seconds_per_request"],
                        r["load_average"],
                    ]
                    for r in results["threads"]
                ],
            ),
            "",
        ]
    return "\n".join(out)
