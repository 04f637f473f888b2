"""Audio in against a real ``bentoml serve``, on both model families.

Each mode through the compatible sync routes (multipart), the job routes, the native BentoML
API with the Bento Python client (sync and task); a job queued before a kill -9 runs after the
restart from its stored source. The latency of a 10 s request per mode is printed (``-s``).
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
import soundfile

from tests.conftest import serve_env
from tests.probe import ffprobe
from tests.servers import BentoServer, bento_serve

RATE = 44100
MODES = {
    "variations": ("audio-to-audio", {"init_noise_level": "0.6"}),
    "inpaint": ("inpainting", {"inpaint_start_seconds": "4", "inpaint_end_seconds": "6"}),
    "continue": ("continuation", {"duration": "10"}),
}


def take(seconds: float) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = 0.4 * np.sin(2 * np.pi * 196 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([wave, wave], 1), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def samples(data: bytes) -> np.ndarray:
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == RATE
    return audio


def wait_finished(url: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(f"{url}/jobs/{job_id}", timeout=30).json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.25)


@pytest.mark.parametrize("route", list(MODES))
def test_each_mode_sync_and_as_a_job(surface_server: BentoServer, route: str) -> None:
    mode, fields = MODES[route]
    source = take(5.0 if route == "continue" else 10.0)
    form = {"prompt": "rain on a tin roof", "seed": "3", **fields}
    files = {"audio": ("take.wav", source, "audio/wav")}
    started = time.perf_counter()
    response = httpx.post(
        f"{surface_server.url}/v1/audio/{route}", data=form, files=files, timeout=600
    )
    latency = time.perf_counter() - started
    assert response.status_code == 200, response.text
    model = response.headers["x-model"]
    print(f"\n{model} {mode}: 10 s result in {latency:.2f} s (sync route, default steps)")
    assert response.headers["x-mode"] == mode
    probe = ffprobe(response.content)
    assert (probe.sample_rate, probe.channels) == (RATE, 2)
    assert probe.duration == pytest.approx(10.0, abs=1 / RATE)
    if route == "inpaint":  # outside the region: the source, to the 16-bit step
        out, src = samples(response.content), samples(source)
        keep = np.ones(len(out), bool)
        keep[4 * RATE : 6 * RATE] = False
        assert float(np.max(np.abs(out[keep] - src[keep]))) <= 1 / 32768

    queued = httpx.post(f"{surface_server.url}/jobs/{route}", data=form, files=files, timeout=60)
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert (job["mode"], job["source"]["filename"]) == (mode, "take.wav")
    done = wait_finished(surface_server.url, job["id"])
    assert done["status"] == "succeeded", done
    audio = httpx.get(f"{surface_server.url}/jobs/{job['id']}/audio", timeout=60)
    # The same request and seed: the job's audio is the sync route's.
    assert audio.content == response.content


def test_native_api_with_the_bento_client(surface_server: BentoServer, tmp_path: Path) -> None:
    source = tmp_path / "take.wav"
    source.write_bytes(take(3.0))
    with bentoml.SyncHTTPClient(surface_server.url, timeout=600) as client:
        variation = client.audio_to_audio(audio=source, prompt="rain", seed=4, steps=4)
        inpainted = client.audio_to_audio(
            audio=source,
            prompt="rain",
            mode="inpainting",
            inpaint_start_seconds=[1.0],
            inpaint_end_seconds=[2.0],
            steps=4,
        )
        extended = client.audio_to_audio(
            audio=source, prompt="rain", mode="continuation", duration=5.0, steps=4
        )
        with pytest.raises(bentoml.exceptions.BentoMLException) as caught:
            client.audio_to_audio(audio=source, prompt="rain", mode="continuation", duration=1.0)
    assert "longer than the audio" in str(caught.value)
    for path, seconds in ((variation, 3.0), (inpainted, 3.0), (extended, 5.0)):
        assert ffprobe(Path(path).read_bytes()).duration == pytest.approx(seconds, abs=1 / RATE)

    async def as_task() -> Path:
        async with bentoml.AsyncHTTPClient(surface_server.url, timeout=600) as client:
            task = await client.audio_to_audio_async.submit(
                audio=source, prompt="rain", mode="audio-to-audio", steps=4, seed=4
            )
            deadline = time.monotonic() + 120
            while (await task.get_status()).value in ("pending", "in_progress"):
                assert time.monotonic() < deadline, "the task never finished"
                await asyncio.sleep(0.2)
            result: Path = await task.get()
            return result

    from_task = asyncio.run(as_task())
    assert Path(from_task).read_bytes() == Path(variation).read_bytes()


@pytest.mark.parametrize(
    ("form", "file", "status", "param"),
    [
        ({"mode": "audio-to-audio"}, ("a.wav", take(1.0), "audio/wav"), 400, "prompt"),
        ({"prompt": "rain", "mode": "nope"}, ("a.wav", take(1.0), "audio/wav"), 400, "mode"),
        ({"prompt": "rain", "steps": "many"}, ("a.wav", take(1.0), "audio/wav"), 400, "steps"),
        (
            {"prompt": "rain", "init_noise_level": "2"},
            ("a.wav", take(1.0), "audio/wav"),
            400,
            "init_noise_level",
        ),
        (
            {"prompt": "rain", "mode": "inpainting"},
            ("a.wav", take(1.0), "audio/wav"),
            400,
            "inpaint_start_seconds",
        ),
        ({"prompt": "rain", "model": "nope"}, ("a.wav", take(1.0), "audio/wav"), 404, "model"),
        ({"prompt": "rain"}, ("a.wav", b"not audio at all", "audio/wav"), 400, "audio"),
        ({"prompt": "rain"}, ("a.txt", take(1.0), "text/plain"), 400, "audio"),
        ({"prompt": "rain"}, None, 400, "audio"),
    ],
    ids=[
        "no-prompt",
        "mode",
        "steps",
        "noise",
        "regions",
        "model",
        "undecodable",
        "type",
        "no-file",
    ],
)
def test_native_audio_task_is_refused_at_submit(
    surface_server: BentoServer,
    form: dict[str, str],
    file: tuple[str, bytes, str] | None,
    status: int,
    param: str,
) -> None:
    """A multipart task the run would refuse is refused at submit, in the envelope, with the
    field named; nothing is queued."""
    files = {"audio": file} if file else {"unrelated": ("x.bin", b"x", "application/octet-stream")}
    submit = f"{surface_server.url}/api/audio_to_audio_async/submit"
    response = httpx.post(submit, data=form, files=files, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (status, param), error


def test_a_good_native_audio_task_is_accepted_and_runs(surface_server: BentoServer) -> None:
    base = f"{surface_server.url}/api/audio_to_audio_async"
    form = {"prompt": "rain", "mode": "audio-to-audio", "steps": "4", "seed": "4"}
    files = {"audio": ("take.wav", take(1.0), "audio/wav")}
    submitted = httpx.post(f"{base}/submit", data=form, files=files, timeout=60)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    deadline = time.monotonic() + 120
    while True:
        status = httpx.get(f"{base}/status", params={"task_id": task_id}, timeout=30).json()
        if status["status"] not in ("pending", "in_progress"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "completed", status
    result = httpx.get(f"{base}/get", params={"task_id": task_id}, timeout=60)
    assert ffprobe(result.content).duration == pytest.approx(1.0, abs=1 / RATE)


def test_a_queued_job_runs_after_a_kill_from_its_stored_source(
    demo_tag: str, tmp_path: Path
) -> None:
    """The upload is in storage before the 202: a server killed before it ran the job runs it
    after the restart (the same store, the same storage)."""
    env = serve_env(tmp_path, STABLE_AUDIO_JOB_LEASE_SECONDS="3")
    form = {"prompt": "rain", "seed": "9", "steps": "60", "init_noise_level": "0.9"}
    files = {"audio": ("take.wav", take(2.0), "audio/wav")}
    with bento_serve(env, tmp_path / "first.log") as first:
        # One worker: the first job keeps it busy, the second waits in the queue.
        ids = []
        for _ in range(2):
            response = httpx.post(f"{first.url}/jobs/variations", data=form, files=files)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        assert (tmp_path / "state" / "sources" / ids[1]).is_file()
        first.kill()
    with bento_serve(env, tmp_path / "second.log") as second:
        for job_id in ids:
            done = wait_finished(second.url, job_id)
            assert done["status"] == "succeeded", done
            assert done["source"]["seconds"] == pytest.approx(2.0)


# ------------------------------------------------------------------------ the web page


@pytest.fixture(scope="module")
def browser() -> Any:
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_web import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def wait_a2a_result(page: Any, previous: str | None) -> str:
    page.wait_for_function(
        """previous => {
            if (!document.getElementById('a2a-error').hidden) return true;
            const box = document.getElementById('a2a-result-box');
            return !box.hidden && box.dataset.jobId && box.dataset.jobId !== previous
                && document.querySelector('#a2a-result[data-drawn]');
        }""",
        arg=previous or "",
        timeout=180_000,
    )
    assert page.is_hidden("#a2a-error"), page.inner_text("#a2a-error")
    job_id = page.get_attribute("#a2a-result-box", "data-job-id")
    assert job_id
    return str(job_id)


def test_web_page_variation_inpaint_extend_and_reuse(
    server: BentoServer, browser: Any, tmp_path: Path, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    from tests.e2e.test_web import DESKTOP

    source = tmp_path / "take.wav"
    source.write_bytes(take(4.0))
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server.url}/ui/")
    expect(page.locator("#model option")).not_to_have_count(0)
    page.fill("#prompt", "rain on a tin roof")
    page.fill("#steps", "4")
    page.fill("#seed", "12")

    # Upload, then mark two regions: one by dragging on the waveform, one by the inputs.
    page.set_input_files("#a2a-file", str(source))
    expect(page.locator("#a2a-source-info")).to_contain_text("take.wav · 4.00 s")
    page.wait_for_selector("#a2a-source[data-drawn]")
    page.click("#a2a label:has(input[value=inpaint])")
    expect(page.locator("#a2a-run")).to_be_disabled()  # no region yet
    box = page.locator("#a2a-source").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.25 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.4 * box["width"], y, steps=5)
    page.mouse.up()
    page.fill("#a2a-start", "3.0")
    page.fill("#a2a-end", "3.5")
    page.click("#a2a-add")
    expect(page.locator("#a2a-regions li")).to_have_count(2)
    expect(page.locator("#a2a-regions li").first).to_contain_text("1.00–1.60 s")
    page.click("#a2a-run")
    inpaint_id = wait_a2a_result(page, None)
    page.screenshot(path=str(artifacts_dir / "audio-in-inpaint.png"), full_page=True)
    job = httpx.get(f"{server.url}/jobs/{inpaint_id}", timeout=30).json()
    assert job["mode"] == "inpainting" and job["source"]["filename"] == "take.wav"
    assert job["audio_in"]["regions"] == [[1.0, 1.6], [3.0, 3.5]]
    expect(page.locator("#a2a-result-info")).to_contain_text("4.00 s")

    # A variation of the same source, at a chosen strength.
    page.click("#a2a label:has(input[value=variation])")
    page.locator("#a2a-strength").fill("0.4")
    page.click("#a2a-run")
    variation_id = wait_a2a_result(page, inpaint_id)
    job = httpx.get(f"{server.url}/jobs/{variation_id}", timeout=30).json()
    assert job["mode"] == "audio-to-audio"
    page.screenshot(path=str(artifacts_dir / "audio-in-variation.png"), full_page=True)

    # Extend the variation, taken from the history (it was added there).
    page.locator(f"#history li[data-job-id='{variation_id}'] >> text=Play").click()
    page.wait_for_function(
        "id => document.getElementById('result').dataset.jobId === id", arg=variation_id
    )
    page.click("#a2a-reuse")
    expect(page.locator("#a2a-source-info")).to_contain_text(f"result-{variation_id}")
    page.click("#a2a label:has(input[value=extend])")
    page.fill("#a2a-target", "7")
    page.click("#a2a-run")
    extend_id = wait_a2a_result(page, variation_id)
    job = httpx.get(f"{server.url}/jobs/{extend_id}", timeout=30).json()
    assert job["mode"] == "continuation"
    assert job["duration"] == pytest.approx(7.0, abs=1e-3)
    expect(page.locator("#a2a-result-info")).to_contain_text("7.00 s")
    page.screenshot(path=str(artifacts_dir / "audio-in-extend.png"), full_page=True)
    context.close()
    assert errors == [], errors
