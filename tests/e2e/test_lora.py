"""End-to-end: LoRA files imported with the CLI and served per request by ``bentoml serve``.

Tiny LoRA files in the reference's format are written here for both demos: a plain ``lora``
for the Stable Audio Open demo and a ``dora-rows`` for the Stable Audio 3 demo (the shared
server's store holds both; a LoRA imported after the server started is found on first use).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from stable_audio_bento.store.catalog import ModelCatalog
from tests.e2e.test_web import browser, context, get_job, open_ui, page, wait_for_result
from tests.lora_files import base_layers, write_lora
from tests.servers import REPO_ROOT, BentoServer

pytestmark = pytest.mark.e2e
# The web page test's browser fixtures (a real Chromium).
__all__ = ["browser", "context", "page"]

TIMEOUT = 300.0
SAO, SA3 = "stable-audio-demo", "stable-audio-3-demo"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def lora_names(demo_tag: str, demo_sa3_tag: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("lora-files")
    catalog = ModelCatalog.from_store()
    plain = write_lora(folder / "e2e-plain.safetensors", base_layers(catalog.resolve("demo")))
    dora = write_lora(
        folder / "e2e-dora.safetensors", base_layers(catalog.resolve("demo-sa3")), "dora-rows"
    )
    for path, base in ((plain, "demo"), (dora, "demo-sa3")):
        done = cli("import-lora", str(path), "--base", base)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{path.stem}:")
    return {"sao": "e2e-plain", "sa3": "e2e-dora"}


def generate(server: BentoServer, model: str, loras: list[dict[str, object]] | None):
    body: dict[str, object] = {"model": model, "prompt": "rain", "duration": 1, "seed": 5}
    if loras is not None:
        body["loras"] = loras
    return httpx.post(f"{server.url}/v1/audio/generations", json=body, timeout=TIMEOUT)


def test_a_bad_file_is_one_clear_line_and_stores_nothing(
    lora_names: dict[str, str], tmp_path: Path
) -> None:
    catalog = ModelCatalog.from_store()
    other = write_lora(tmp_path / "wrong.safetensors", base_layers(catalog.resolve("demo-sa3")))
    done = cli("import-lora", str(other), "--base", "demo")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "another base" in lines[-1], done.stderr
    listed = cli("list")
    assert "wrong:" not in listed.stdout and "e2e-plain:" in listed.stdout


@pytest.mark.parametrize("family", ["sao", "sa3"])
def test_loras_change_the_audio_per_request_and_strength_0_is_the_base(
    server: BentoServer, lora_names: dict[str, str], family: str
) -> None:
    model = SAO if family == "sao" else SA3
    name = lora_names[family]
    base = generate(server, model, None)
    full = generate(server, model, [{"name": name, "strength": 1.0}])
    half = generate(server, model, [{"name": name, "strength": 0.5}])
    zero = generate(server, model, [{"name": name, "strength": 0}])
    again = generate(server, model, [{"name": name, "strength": 1.0}])
    for response in (base, full, half, zero, again):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "audio/wav"
    assert zero.content == base.content
    assert full.content == again.content
    assert len({base.content, full.content, half.content}) == 3


def test_concurrent_requests_with_different_loras_each_get_their_own_audio(
    server: BentoServer, lora_names: dict[str, str]
) -> None:
    """Requests with different strengths (and one without LoRA) sent at once, twice over:
    whatever shared their batches (by default plain LoRAs are applied per item, so they may),
    each gets the audio it gets alone. Two steps: the tiny demo's sampler amplifies float
    rounding with every step (the same request merged in a batch of two is 6e-6 from itself
    alone at 2 steps, 5e-5 at 4, 2e-3 at the default 8 with guidance)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import soundfile

    name = lora_names["sao"]
    sets = [None, *([{"name": name, "strength": s}] for s in (1.0, 0.5, 0.25, 1.5))]

    def audio(loras: list[dict[str, object]] | None) -> np.ndarray:
        body = {"model": SAO, "prompt": "rain", "duration": 1, "seed": 5, "steps": 2}
        response = httpx.post(
            f"{server.url}/v1/audio/generations",
            json={**body, **({"loras": loras} if loras else {})},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return soundfile.read(io.BytesIO(response.content), dtype="float32")[0]

    alone = [audio(s) for s in sets]
    with ThreadPoolExecutor(len(sets) * 2) as pool:
        together = list(pool.map(audio, sets * 2))
    for i, got in enumerate(together):
        want = alone[i % len(sets)]
        change = float(np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want**2)))
        assert change < 1e-3, (i, change)
    changes = [float(np.sqrt(np.mean((a - alone[0]) ** 2))) for a in alone[1:]]
    assert min(changes) > 1e-2 * float(np.sqrt(np.mean(alone[0] ** 2))), changes


def test_listed_in_health_and_v1_loras(server: BentoServer, lora_names: dict[str, str]) -> None:
    listed = httpx.get(f"{server.url}/v1/loras", timeout=30).json()["data"]
    by_name = {item["name"]: item for item in listed}
    assert by_name["e2e-plain"]["base"] == SAO and by_name["e2e-plain"]["adapter_type"] == "lora"
    assert by_name["e2e-dora"]["base"] == SA3
    assert by_name["e2e-dora"]["adapter_type"] == "dora-rows"
    only = httpx.get(f"{server.url}/v1/loras", params={"model": "demo-sa3"}, timeout=30).json()
    assert {i["base"] for i in only["data"]} == {SA3}
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert "e2e-plain" in [i["name"] for i in health["loras"][SAO]]
    assert health["coalescing"]["lora_apply"] == "auto"


def test_refusals_name_the_lora(server: BentoServer, lora_names: dict[str, str]) -> None:
    unknown = generate(server, SAO, [{"name": "no-such-lora"}])
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert "no-such-lora" in error["message"] and error["param"] == "loras"
    other = generate(server, SAO, [{"name": lora_names["sa3"]}])
    assert other.status_code == 400
    assert f"is for the model `{SA3}`" in other.json()["error"]["message"]
    strong = generate(server, SAO, [{"name": lora_names["sao"], "strength": 2.5}])
    assert strong.status_code == 422
    assert "loras" in strong.text and "2" in strong.text


def test_vllm_route_and_jobs_keep_the_loras(
    server: BentoServer, lora_names: dict[str, str]
) -> None:
    loras = [{"name": lora_names["sao"], "strength": 0.75}]
    response = httpx.post(
        f"{server.url}/v1/audio/generate",
        json={"input": "rain", "model": SAO, "audio_length": 1, "seed": 5, "loras": loras},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    submitted = httpx.post(
        f"{server.url}/jobs",
        json={"model": SAO, "prompt": "rain", "duration": 1, "seed": 5, "loras": loras},
        timeout=TIMEOUT,
    )
    assert submitted.status_code in (200, 201, 202), submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + TIMEOUT
    while True:
        job = httpx.get(f"{server.url}/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert job["status"] == "succeeded", job
    assert job["request"]["loras"] == loras


def test_the_bento_client_sends_loras(server: BentoServer, lora_names: dict[str, str]) -> None:
    """The native API through ``bentoml.SyncHTTPClient``: the LoRA changes the file, and the
    same LoRA and strength give the same file as the compatible route's native twin."""
    import bentoml

    body = {"input": "rain", "model": SAO, "audio_length": 1, "seed": 5}
    with bentoml.SyncHTTPClient(server.url, timeout=TIMEOUT) as client:
        plain = Path(client.generate(body)).read_bytes()
        adapted = Path(
            client.generate({**body, "loras": [{"name": lora_names["sao"], "strength": 1.0}]})
        ).read_bytes()
    assert plain[:4] == adapted[:4] == b"RIFF"
    assert plain != adapted
    direct = httpx.post(
        f"{server.url}/v1/audio/generate",
        json={**body, "loras": [{"name": lora_names["sao"], "strength": 1.0}]},
        timeout=TIMEOUT,
    )
    assert direct.content == adapted


def test_the_web_page_offers_the_models_loras_with_sliders(
    page: Page, server: BentoServer, lora_names: dict[str, str]
) -> None:
    open_ui(page, server)
    page.select_option("#model", SAO)
    expect(page.locator("#loras")).to_be_visible()
    plain = lora_names["sao"]
    expect(page.locator(f"label[for='lora-on-{plain}']")).to_have_text(plain)
    expect(page.locator(f"label[for='lora-on-{lora_names['sa3']}']")).to_have_count(0)
    page.check(f"#lora-on-{plain}")
    page.locator(f"#lora-strength-{plain}").evaluate(
        "el => { el.value = '0.55'; el.dispatchEvent(new Event('input')); }"
    )
    expect(page.locator(f"output[for='lora-strength-{plain}']")).to_have_text("0.55")
    page.fill("#prompt", "rain")
    page.fill("#duration", "1")
    page.click("#submit")
    job = get_job(server, wait_for_result(page))
    assert job["request"]["loras"] == [{"name": plain, "strength": 0.55}]
