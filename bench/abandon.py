"""Abandoned requests: N sync generations whose clients give up after T seconds, then one more.

    python -m bench.abandon [--requests 300] [--after 2] [--url URL]

Sends ``--requests`` concurrent ``POST /v1/audio/generate`` (1 s of audio, 8 steps), each on
its own connection, and closes every one that has no answer after ``--after`` seconds (as a
client with a timeout does). Then it times one more request of the same kind until it is
answered (retrying a 429 as a client honouring Retry-After would). A server that drops
the work of clients that have gone answers the next request in about the time of one request;
one that does all of it answers after the whole backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BODY = {"input": "rain on a tin roof", "audio_length": 1.0, "num_inference_steps": 8}


async def abandon(url: str, count: int, after: float) -> dict[str, int]:
    import httpx

    outcomes = {"answered": 0, "abandoned": 0, "refused": 0}

    async def one() -> None:
        # One connection per client, so that giving up closes it (a disconnect the server sees).
        async with httpx.AsyncClient(base_url=url, timeout=after) as client:
            try:
                response = await client.post("/v1/audio/generate", json=BODY)
            except httpx.TimeoutException:
                outcomes["abandoned"] += 1
                return
            outcomes["answered" if response.status_code == 200 else "refused"] += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return outcomes


def timed_request(url: str, timeout: float = 600.0) -> tuple[float, int]:
    """Seconds until one request is answered 200 (retrying 429 / 503 every 0.25 s), and how
    many refusals it took."""
    import httpx

    began = time.perf_counter()
    refusals = 0
    while True:
        response = httpx.post(f"{url}/v1/audio/generate", json=BODY, timeout=timeout)
        if response.status_code not in (429, 503) or time.perf_counter() - began > timeout:
            return time.perf_counter() - began, refusals
        refusals += 1
        time.sleep(0.25)


def run(url: str, count: int, after: float) -> dict[str, Any]:
    warm, _ = timed_request(url)
    alone, _ = timed_request(url)
    began = time.perf_counter()
    outcomes = asyncio.run(abandon(url, count, after))
    next_latency, refusals = timed_request(url)
    idle_after = time.perf_counter() - began
    return {
        "requests": count,
        "abandoned_after_s": after,
        **outcomes,
        "alone_s": round(alone, 3),
        "next_request_s": round(next_latency, 3),
        "next_refused_first": refusals,
        "idle_after_s": round(idle_after, 2),
        "warmup_s": round(warm, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abandon", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="abandoned requests (1-1000)")
    parser.add_argument("--after", type=float, default=2.0, help="clients give up after, s")
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 1000:
        parser.error("need 1 <= --requests <= 1000")
    from .common import demo_entry, prepare_environment

    with ExitStack() as stack:
        url = args.url
        if url is None:
            prepare_environment(None)
            demo_entry()
            from tests.servers import start_bento

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ab-")))
            env = {
                "BENTOML_HOME": os.environ["BENTOML_HOME"],
                "BENTOML_RESULT_STORE": str(workdir / "task_result.db"),
                "BENTOML_DO_NOT_TRACK": "True",
                "STABLE_AUDIO_OUTPUT_DIR": str(workdir / "outputs"),
                "STABLE_AUDIO_DEVICE": "cpu",
                "STABLE_AUDIO_API_KEYS": "",
            }
            server = start_bento(env, workdir / "server.log")
            stack.callback(server.stop)
            url = server.url
        result = run(url, args.requests, args.after)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
