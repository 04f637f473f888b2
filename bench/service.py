"""Service level: concurrent HTTP clients against ``bentoml serve`` of the demo, coalescing on/off.

Each client holds one keep-alive connection and sends its requests back to back to
``POST /v1/audio/generate`` (10 s of audio, the demo's default sampling). The HTTP overhead is
measured with a small request sent alternately over HTTP and straight into the same pipeline
in this process (plan, coalescer, engine, WAV encode), so both sides pay for the same work.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .common import load_average, percentile, quiet
from .engine import PROMPTS, SECONDS

OVERHEAD_BODY = {"input": "rain", "audio_length": 1.0, "num_inference_steps": 2, "seed": 5}


def _server_env(workdir: Path, max_batch_size: int) -> dict[str, str]:
    import os

    return {
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        "BENTOML_RESULT_STORE": str(workdir / "task_result.db"),
        "BENTOML_DO_NOT_TRACK": "True",
        "STABLE_AUDIO_OUTPUT_DIR": str(workdir / "outputs"),
        "STABLE_AUDIO_DEVICE": "cpu",
        "STABLE_AUDIO_API_KEYS": "",
        "STABLE_AUDIO_MAX_BATCH_SIZE": str(max_batch_size),
    }


def clients(url: str, count: int, per_client: int) -> dict[str, Any]:
    """``count`` concurrent clients, ``per_client`` requests each; latency and throughput."""
    import httpx

    latencies: list[float] = []
    batch_sizes: list[int] = []
    errors: list[str] = []
    start = threading.Barrier(count + 1)
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            start.wait()
            for k in range(per_client):
                n = index * per_client + k
                body = {"input": PROMPTS[n % len(PROMPTS)], "audio_length": SECONDS, "seed": n}
                began = time.perf_counter()
                response = http.post("/v1/audio/generate", json=body)
                elapsed = time.perf_counter() - began
                with lock:
                    if response.status_code != 200:
                        errors.append(response.text[:200])
                    latencies.append(elapsed)
                    batch_sizes.append(int(response.headers.get("x-batch-size", "0")))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
    return {
        "clients": count,
        "requests": len(latencies),
        "p50_seconds": round(percentile(latencies, 50), 3),
        "p95_seconds": round(percentile(latencies, 95), 3),
        "requests_per_second": round(len(latencies) / wall, 3),
        "mean_batch_size": round(statistics.mean(batch_sizes), 2),
        "load_average": load_average(),
    }


def http_overhead(url: str, pairs: int) -> dict[str, Any]:
    """The same small request over HTTP and as a direct in-process call, alternately."""
    import httpx

    from stable_audio_bento.pipeline.generation import AudioGenerator
    from stable_audio_bento.pipeline.registry import ModelRegistry
    from stable_audio_bento.schemas import AudioGenerateRequest
    from stable_audio_bento.settings import Settings

    settings = Settings(device="cpu", preload_models=[], api_keys=[])
    registry = ModelRegistry(settings)
    generator = AudioGenerator(settings, registry)
    params = AudioGenerateRequest.model_validate(OVERHEAD_BODY).to_params()
    direct: list[float] = []
    over_http: list[float] = []
    health: list[float] = []
    try:
        with quiet():
            generator.generate(params)  # load and warm up
        with httpx.Client(base_url=url, timeout=600) as http:
            http.post("/v1/audio/generate", json=OVERHEAD_BODY)
            for _ in range(pairs):
                began = time.perf_counter()
                generator.generate(params)
                direct.append(time.perf_counter() - began)
                began = time.perf_counter()
                response = http.post("/v1/audio/generate", json=OVERHEAD_BODY)
                over_http.append(time.perf_counter() - began)
                assert response.status_code == 200, response.text
                began = time.perf_counter()
                http.get("/health")
                health.append(time.perf_counter() - began)
    finally:
        registry.close()
    differences = [h - d for h, d in zip(over_http, direct, strict=True)]
    return {
        "pairs": pairs,
        "direct_p50_seconds": round(statistics.median(direct), 4),
        "http_p50_seconds": round(statistics.median(over_http), 4),
        "overhead_p50_ms": round(statistics.median(differences) * 1000, 1),
        "health_p50_ms": round(statistics.median(health) * 1000, 1),
        "load_average": load_average(),
    }


def run(entry: Any, quick: bool) -> dict[str, Any]:
    from tests.servers import start_bento

    plan = [(1, 3), (4, 2), (16, 1)] if quick else [(1, 6), (4, 3), (16, 2)]
    results: dict[str, Any] = {"model": entry.tag, "request_seconds": SECONDS, "runs": []}
    for coalescing, max_batch_size in (("on", 8), ("off", 1)):
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            workdir = Path(tmp)
            server = start_bento(_server_env(workdir, max_batch_size), workdir / "server.log")
            try:
                for count, per_client in plan:
                    row = clients(server.url, count, per_client)
                    results["runs"].append({"coalescing": coalescing, **row})
                if coalescing == "on":
                    results["http_overhead"] = http_overhead(server.url, 6 if quick else 20)
            finally:
                server.stop()
    return results


def render(results: dict[str, Any], engine: dict[str, Any] | None) -> str:
    from .common import table

    rows = [
        [
            r["coalescing"],
            r["clients"],
            r["requests"],
            r["p50_seconds"],
            r["p95_seconds"],
            r["requests_per_second"],
            r["mean_batch_size"],
            r["load_average"],
        ]
        for r in results["runs"]
    ]
    if engine is not None:
        # The baseline: the same request through stock generate_diffusion_cond, no server.
        stock = next(b for b in engine["batches"] if b["batch"] == 1)["stock"]
        rows.append(
            [
                "stock, in-process",
                1,
                "",
                stock["seconds_per_request"],
                "",
                stock["requests_per_second"],
                1,
                "",
            ]
        )
    out = [
        "### Service: `bentoml serve`, `POST /v1/audio/generate`, "
        f"{results['request_seconds']:g} s requests",
        "",
        table(
            ["coalescing", "clients", "requests", "p50 s", "p95 s", "req/s", "mean batch", "load"],
            rows,
        ),
        "",
    ]
    o = results.get("http_overhead")
    if o:
        out += [
            f"HTTP overhead over a direct call of the same pipeline (1 s, 2 steps, WAV; "
            f"{o['pairs']} alternating pairs): p50 **{o['overhead_p50_ms']:.1f} ms** "
            f"(direct {o['direct_p50_seconds'] * 1000:.0f} ms, "
            f"HTTP {o['http_p50_seconds'] * 1000:.0f} ms; "
            f"`GET /health` round trip {o['health_p50_ms']:.1f} ms; load {o['load_average']}).",
            "",
        ]
    return "\n".join(out)
