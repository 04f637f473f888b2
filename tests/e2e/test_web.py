"""End-to-end: the web page at ``/ui/`` in a real Chromium against a real ``bentoml serve``.

The page is driven like a user would (typing, clicking, the keyboard); what it shows is checked
against the job API, the canvases' pixels and ffprobe's reading of the downloaded file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.conftest import serve_env
from tests.servers import BentoServer, bento_serve

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
GENERATION_TIMEOUT_MS = 120_000


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail("Chromium is needed for the web page tests (Debian package `chromium`)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(30_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A fresh page (empty localStorage); uncaught script errors fail the test."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert errors == [], f"uncaught errors in the page: {errors}"


# ------------------------------------------------------------------------------- helpers
def open_ui(page: Page, server: BentoServer) -> None:
    page.goto(f"{server.url}/ui")  # the redirect to /ui/ is part of the surface
    assert page.url == f"{server.url}/ui/"
    expect(page.locator("#model option")).not_to_have_count(0)


def fill_form(page: Page, prompt: str, **fields: str) -> None:
    page.fill("#prompt", prompt)
    for name, value in fields.items():
        page.fill(f"#{name}", value)


def wait_for_result(page: Page, previous: str | None = None) -> str:
    """Wait until a finished result (other than ``previous``) is drawn; its job id."""
    page.wait_for_function(
        """previous => {
            if (!document.getElementById('error').hidden) return true;  // fail fast, below
            const r = document.getElementById('result');
            return !r.hidden && r.dataset.jobId && r.dataset.jobId !== previous
                && document.querySelector('#spectrogram[data-drawn]')
                && document.querySelector('#waveform[data-drawn]');
        }""",
        arg=previous or "",
        timeout=GENERATION_TIMEOUT_MS,
    )
    assert page.is_hidden("#error"), f"the page shows an error: {page.inner_text('#error')}"
    expect(page.locator("#submit")).to_be_enabled()
    job_id = page.get_attribute("#result", "data-job-id")
    assert job_id
    return job_id


def shown_seed(page: Page) -> int:
    return int(page.inner_text("#result-seed"))


def get_job(server: BentoServer, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/jobs/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def job_count(server: BentoServer) -> int:
    return len(httpx.get(f"{server.url}/jobs", params={"limit": 500}, timeout=30).json()["jobs"])


def ffprobe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    info: dict[str, Any] = json.loads(result.stdout)
    return info


CANVAS_STATS = """id => {
    const c = document.getElementById(id);
    const { data, width, height } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
    const colours = new Set();
    const columns = new Array(width).fill(0);  // painted pixels per column
    let sum = 0, sq = 0;
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
        const i = 4 * (y * width + x);
        colours.add((data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3]);
        const rgb = 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
        const luma = rgb * data[i + 3] / 255;
        sum += luma; sq += luma * luma;
        if (data[i + 3] > 0) columns[x]++;
    }
    const n = width * height, mean = sum / n;
    return { width, height, colours: colours.size, std: Math.sqrt(sq / n - mean * mean),
             painted: columns.reduce((a, b) => a + b, 0) / n,
             columnSpread: Math.max(...columns) - Math.min(...columns) };
}"""


# Both canvases drawn again at their current on-screen size (after a resize).
REDRAWN = """() => ['waveform', 'spectrogram'].every(id => {
    const c = document.getElementById(id);
    const scale = Math.min(window.devicePixelRatio || 1, 2);
    return c.dataset.drawn && c.width === Math.round(c.getBoundingClientRect().width * scale);
})"""


def assert_pictures_drawn(page: Page) -> None:
    wave = page.evaluate(CANVAS_STATS, "waveform")
    spec = page.evaluate(CANVAS_STATS, "spectrogram")
    # The waveform: a drawn envelope (not empty, not a filled box) whose height varies.
    assert wave["width"] > 100 and wave["height"] > 40, wave
    assert 0.02 < wave["painted"] < 0.98, wave
    assert wave["columnSpread"] > 2, wave
    assert wave["colours"] >= 3, wave
    # The spectrogram: every pixel painted, many colours, real contrast.
    assert spec["painted"] == 1.0, spec
    assert spec["colours"] > 50, spec
    assert spec["std"] > 10, spec


# --------------------------------------------------------------------------------- tests
def test_generate_progress_play_download(
    page: Page, server: BentoServer, artifacts_dir: Path
) -> None:
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    model = next(m for m in health["models"] if m["name"] == health["default_model"])
    open_ui(page, server)

    # The model's limits from /health are shown and used as the form's defaults.
    info = page.inner_text("#model-info")
    assert f"up to {model['max_seconds']:.2f} s" in info
    assert f"{model['steps']} steps" in info
    assert page.get_attribute("#steps", "placeholder") == str(model["steps"])

    fill_form(page, "Gentle rain on a tin roof, distant thunder", duration="4", steps="60")
    page.fill("#negative_prompt", "music")
    page.fill("#cfg_scale", "5.5")
    # The format radios are the server's registry, in its order.
    radios = page.locator("input[name=response_format]")
    assert [radios.nth(i).get_attribute("value") for i in range(radios.count())] == [
        f["name"] for f in health["formats"]
    ]
    page.focus("input[name=response_format][value=wav]")
    page.keyboard.press("ArrowRight")  # the format control is a keyboard-usable radio group
    second = health["formats"][1]["name"]
    expect(page.locator(f"input[name=response_format][value={second}]")).to_be_checked()
    page.check("input[name=response_format][value=mp3]")
    page.click("#submit")

    expect(page.locator("#cancel")).to_be_visible()
    # Live progress: the bar moves through the steps before the job ends.
    page.wait_for_function(
        """() => { const p = document.getElementById('progress');
                   return p.max === 60 && p.value > 0 && p.value < 60; }""",
        timeout=GENERATION_TIMEOUT_MS,
    )
    expect(page.locator("#progress-text")).to_contain_text("of 60")
    job_id = wait_for_result(page)
    expect(page.locator("#progress-text")).to_contain_text("Done in")
    expect(page.locator("#cancel")).to_be_hidden()

    job = get_job(server, job_id)
    assert job["status"] == "succeeded"
    assert shown_seed(page) == job["seed"]
    sent = {
        "prompt": "Gentle rain on a tin roof, distant thunder",
        "negative_prompt": "music",
        "duration": 4.0,
        "steps": 60,
        "cfg_scale": 5.5,
        "response_format": "mp3",
    }
    assert {key: job["request"][key] for key in sent} == sent
    expect(page.locator("#result-prompt")).to_have_text(job["request"]["prompt"])
    assert_pictures_drawn(page)

    # The player plays: play() resolves and the clock moves.
    assert page.evaluate("document.getElementById('player').play().then(() => true)") is True
    page.wait_for_function("document.getElementById('player').currentTime > 0.2")
    page.evaluate("document.getElementById('player').pause()")

    # The download is the job's output, an MP3 that an independent decoder reads.
    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == f"stable-audio-{job['seed']}.mp3"
    saved = Path(download.path())
    assert saved.read_bytes() == httpx.get(job["download_url"], timeout=30).content
    probe = ffprobe(saved)
    (stream,) = probe["streams"]
    assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == (
        "mp3",
        44100,
        2,
    )
    assert float(probe["format"]["duration"]) == pytest.approx(4.0, abs=0.1)

    # The history lists it, the screenshots show a finished result at both sizes.
    entry = page.locator(f"#history li[data-job-id='{job_id}']")
    expect(entry).to_contain_text(f"seed {job['seed']}")
    page.screenshot(path=artifacts_dir / "web-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_function(REDRAWN)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert_pictures_drawn(page)
    page.screenshot(path=artifacts_dir / "web-phone.png", full_page=True)

    # The history is kept in the browser: it survives a reload, and replays from there.
    page.reload()
    expect(entry).to_contain_text(f"seed {job['seed']}")
    expect(page.locator("#result")).to_be_hidden()
    entry.get_by_role("button", name="Play").click()
    assert wait_for_result(page) == job_id
    assert shown_seed(page) == job["seed"]


def test_validation_errors_are_shown_in_words(page: Page, surface_server: BentoServer) -> None:
    server = surface_server  # its default model: the SAO demo (47.55 s), the SA3 demo (120 s)
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    limit = health["model_duration_limits_seconds"][health["default_model"]]
    open_ui(page, server)
    before = job_count(server)
    error = page.locator("#error")

    # Beyond the model's window: the API's error envelope, next to the form, on the field.
    fill_form(page, "A dog barking", duration=str(int(limit) + 13))
    page.click("#submit")
    expect(error).to_be_visible()
    expect(error).to_contain_text(f"duration must be at most {limit:.2f} seconds")
    expect(page.locator("#duration")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#duration")).to_be_focused()

    # Zero steps: pydantic's 422 detail, in words.
    fill_form(page, "A dog barking", duration="3", steps="0")
    page.click("#submit")
    expect(error).to_have_text("steps: Input should be greater than or equal to 1")
    expect(page.locator("#steps")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#duration")).not_to_have_attribute("aria-invalid", "true")

    # An empty prompt, submitted from the keyboard.
    fill_form(page, "", steps="")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    expect(error).to_contain_text("prompt: String should have at least 1 character")

    assert job_count(server) == before  # nothing invalid was queued
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.locator("#submit")).to_be_enabled()


def test_seed_reuse_random_and_cancel(page: Page, server: BentoServer) -> None:
    open_ui(page, server)
    fill_form(page, "Wind chimes in a light breeze", duration="2")
    page.click("#submit")
    first = wait_for_result(page)
    seed = shown_seed(page)

    # A reload keeps the history, and "Reuse last" takes the seed from it.
    page.reload()
    expect(page.locator(f"#history li[data-job-id='{first}']")).to_contain_text(f"seed {seed}")
    fill_form(page, "Wind chimes in a light breeze", duration="2")
    page.click("#seed-reuse")
    expect(page.locator("#seed")).to_have_value(str(seed))
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    second = wait_for_result(page, previous=first)
    assert second != first
    assert shown_seed(page) == get_job(server, second)["seed"] == seed
    # Same request and seed: the same audio.
    urls = [get_job(server, j)["download_url"] for j in (first, second)]
    assert httpx.get(urls[0], timeout=30).content == httpx.get(urls[1], timeout=30).content

    # "Random" clears it again: the next run gets a fresh seed.
    page.click("#seed-random")
    expect(page.locator("#seed")).to_have_value("")
    page.click("#submit")
    third = wait_for_result(page, previous=second)
    assert shown_seed(page) == get_job(server, third)["seed"] != seed
    expect(page.locator("#history li")).to_have_count(3)

    # Cancel: the job ends canceled, the page says so and shows no result for it.
    fill_form(page, "A long drone", duration="4", steps="60")
    page.click("#submit")
    expect(page.locator("#cancel")).to_be_visible()
    page.click("#cancel")
    expect(page.locator("#progress-text")).to_have_text("Canceled.", timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#submit")).to_be_enabled()
    assert page.get_attribute("#result", "data-job-id") == third
    jobs = httpx.get(f"{server.url}/jobs", params={"limit": 5}, timeout=30).json()["jobs"]
    canceled = next(j for j in jobs if j["request"]["prompt"] == "A long drone")
    assert canceled["status"] == "canceled"
    expect(page.locator("#history li")).to_have_count(3)


def test_api_key_asked_for_and_sent(
    demo_tag: str, browser: Browser, tmp_path: Path, artifacts_dir: Path
) -> None:
    env = serve_env(tmp_path, STABLE_AUDIO_API_KEYS="k1")
    with bento_serve(env, tmp_path / "server.log") as server:
        assert httpx.post(f"{server.url}/jobs", json={"prompt": "x"}).status_code == 401
        context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
        try:
            page = context.new_page()
            open_ui(page, server)  # the page and /health stay open
            expect(page.locator("#server")).to_contain_text("API key required")
            expect(page.locator("#auth")).to_have_attribute("open", "")

            fill_form(page, "Footsteps on gravel", duration="2")
            page.click("#submit")
            error = page.locator("#error")
            expect(error).to_contain_text("Missing or invalid API key")
            expect(error).to_contain_text("This server needs an API key")
            expect(page.locator("#api_key")).to_be_focused()

            page.fill("#api_key", "wrong")
            page.keyboard.press("Enter")  # saves the key, does not submit
            page.click("#submit")
            expect(error).to_contain_text("The saved API key was not accepted")

            page.fill("#api_key", "k1")
            page.click("#key-save")
            expect(error).to_be_hidden()
            page.click("#submit")
            job_id = wait_for_result(page)
            assert_pictures_drawn(page)
            job = httpx.get(
                f"{server.url}/jobs/{job_id}", headers={"Authorization": "Bearer k1"}
            ).json()
            assert shown_seed(page) == job["seed"]
            with page.expect_download() as download_info:
                page.click("#download")
            probe = ffprobe(Path(download_info.value.path()))
            assert probe["streams"][0]["codec_name"] == "pcm_s16le"

            # The key is remembered by this browser.
            page.reload()
            expect(page.locator("#api_key")).to_have_value("k1")
            expect(page.locator("#key-state")).to_contain_text("saved")
        finally:
            context.close()


def test_the_page_follows_jobs_through_their_event_stream(page: Page, server: BentoServer) -> None:
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    open_ui(page, server)
    fill_form(page, "A short bell", duration="1", steps="30")
    page.click("#submit")
    job_id = wait_for_result(page)
    status_url = f"{server.url}/jobs/{job_id}"
    assert ("GET", f"{status_url}/events") in requests, requests
    assert ("GET", status_url) not in requests  # no polling
    expect(page.locator("#progress-text")).to_contain_text("Done in")
