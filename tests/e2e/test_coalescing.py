"""End-to-end coalescing: concurrent requests through every entry point share one engine batch.

One server with a long coalescing wait (so the batch does not depend on this machine's load)
gets five compatible requests: the vLLM-Omni route, the stable-audio-api route, BentoML's sync
API, BentoML's task API and a job. Sent one at a time, then all at once, each must decode
(ffmpeg) to the same samples; the responses and the server log show they really were batched.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import serve_env
from tests.probe import ffprobe
from tests.servers import BentoServer, bento_serve

TIMEOUT = 300.0
STEPS = 4
LSB = 1 / 32768  # the WAVs are 16-bit: float rounding may move a sample by one step

Call = Callable[[str], tuple[bytes, str | None]]  # base URL -> (audio bytes, X-Batch-Size)


@pytest.fixture(scope="module")
def batching_server(
    demo_tag: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    workdir = tmp_path_factory.mktemp("coalescing")
    env = serve_env(workdir, STABLE_AUDIO_BATCH_WAIT_MS="1500", STABLE_AUDIO_MAX_BATCH_SIZE="8")
    with bento_serve(env, workdir / "server.log") as running:
        yield running


def _post(base: str, path: str, body: dict[str, object]) -> tuple[bytes, str | None]:
    response = httpx.post(f"{base}{path}", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.content, response.headers.get("x-batch-size")


def vllm_route(base: str) -> tuple[bytes, str | None]:
    body = {"input": "rain on a tin roof", "audio_length": 1.0, "seed": 11}
    return _post(base, "/v1/audio/generate", {**body, "num_inference_steps": STEPS})


def stable_api_route(base: str) -> tuple[bytes, str | None]:
    body = {"prompt": "a dog barking", "duration": 2.0, "seed": 12, "negative_prompt": "noise"}
    return _post(base, "/v1/audio/generations", {**body, "steps": STEPS})


def sync_api(base: str) -> tuple[bytes, str | None]:
    body = {"input": "piano chord", "audio_length": 1.5, "audio_start": 3.0, "seed": 13}
    return _post(base, "/api/generate", {**body, "num_inference_steps": STEPS})


def _wait(get: Callable[[], httpx.Response], done: Callable[[dict[str, object]], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        response = get()
        assert response.status_code == 200, response.text
        if done(response.json()):
            return
        time.sleep(0.2)
    raise AssertionError(f"not done after {TIMEOUT} s: {response.text}")


def task_api(base: str) -> tuple[bytes, str | None]:
    body = {"input": "wind in the trees", "audio_length": 0.7, "seed": 14}
    submitted = httpx.post(
        f"{base}/api/generate_async/submit",
        json={**body, "num_inference_steps": STEPS},
        timeout=TIMEOUT,
    )
    assert submitted.status_code == 200, submitted.text
    task = {"task_id": submitted.json()["task_id"]}
    _wait(
        lambda: httpx.get(f"{base}/api/generate_async/status", params=task, timeout=TIMEOUT),
        lambda view: view["status"] in ("success", "completed", "failure", "failed"),
    )
    result = httpx.get(f"{base}/api/generate_async/get", params=task, timeout=TIMEOUT)
    assert result.status_code == 200, result.text
    return result.content, None


def job(base: str) -> tuple[bytes, str | None]:
    body = {"prompt": "crickets at night", "duration": 1.2, "seed": 15, "steps": STEPS}
    created = httpx.post(f"{base}/jobs", json=body, timeout=TIMEOUT)
    assert created.status_code == 202, created.text
    url = created.json()["status_url"]
    _wait(
        lambda: httpx.get(url, timeout=TIMEOUT),
        lambda view: view["status"] in ("succeeded", "failed", "canceled"),
    )
    view = httpx.get(url, timeout=TIMEOUT).json()
    assert view["status"] == "succeeded", view
    download = httpx.get(view["download_url"], timeout=TIMEOUT)
    assert download.status_code == 200
    return download.content, None


CALLS: dict[str, Call] = {
    "vllm-omni route": vllm_route,
    "stable-audio-api route": stable_api_route,
    "BentoML sync API": sync_api,
    "BentoML task API": task_api,
    "job": job,
}


def run_together(base: str) -> dict[str, tuple[bytes, str | None]]:
    results: dict[str, tuple[bytes, str | None]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(CALLS))

    def work(name: str, call: Call) -> None:
        try:
            start.wait()
            results[name] = call(base)
        except BaseException as e:  # reported in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=item) for item in CALLS.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors, errors
    return results


def test_concurrent_requests_are_batched_and_sound_as_they_do_alone(
    batching_server: BentoServer, artifacts_dir: Path
) -> None:
    base = batching_server.url
    alone = {name: call(base) for name, call in CALLS.items()}
    for name, (_, batch_size) in alone.items():
        assert batch_size in (None, "1"), name
    log_before = batching_server.log()

    together = run_together(base)

    log = batching_server.log()[len(log_before) :]
    (artifacts_dir / "coalescing-server.log").write_text(batching_server.log())
    for name in CALLS:
        first, second = ffprobe(alone[name][0]), ffprobe(together[name][0])
        assert first.samples.shape == second.samples.shape, name
        assert np.abs(first.samples).max() > 0.1, name  # real audio, not silence
        assert np.abs(first.samples - second.samples).max() <= 2 * LSB, name
    # The HTTP answers say so, and the server log shows one engine batch for all five.
    sizes = {name: size for name, (_, size) in together.items() if size is not None}
    assert sizes == dict.fromkeys(sizes, str(len(CALLS))), sizes
    batches = [int(n) for n in re.findall(r"generated a batch of (\d+)", log)]
    assert batches == [len(CALLS)], log[-3000:]


def test_requests_with_other_settings_are_not_mixed_in(batching_server: BentoServer) -> None:
    base = batching_server.url
    bodies = [
        {"input": "rain", "audio_length": 0.5, "seed": 1, "num_inference_steps": STEPS},
        {"input": "rain", "audio_length": 0.5, "seed": 2, "num_inference_steps": STEPS + 1},
        {"input": "rain", "audio_length": 0.5, "seed": 3, "num_inference_steps": STEPS},
    ]
    sizes: dict[int, str | None] = {}
    start = threading.Barrier(len(bodies))

    def work(i: int) -> None:
        start.wait()
        sizes[i] = _post(base, "/v1/audio/generate", bodies[i])[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert sizes == {0: "2", 1: "1", 2: "2"}
