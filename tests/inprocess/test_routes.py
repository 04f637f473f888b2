"""In process: every router of the HTTP app over a real ``Runtime`` and the demo model."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.probe import ffprobe

DEMO = "stable-audio-demo"


def wait_finished(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_vllm_generate_returns_the_requested_audio(client: TestClient) -> None:
    body = {"input": "The sound of a cat purring", "audio_length": 2.0, "seed": 7}
    response = client.post("/v1/audio/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert (response.headers["x-model"], response.headers["x-seed"]) == (DEMO, "7")
    probe = ffprobe(response.content)
    assert (probe.sample_rate, probe.channels) == (44100, 2)
    assert probe.duration == pytest.approx(2.0, abs=1 / 44100)


@pytest.mark.parametrize("path", ["/v1/audio/generations", "/generate"])
def test_stable_api_generations(client: TestClient, path: str) -> None:
    body = {"model": "small-sfx", "prompt": "a train", "duration": 1.5, "steps": 8, "seed": -1}
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert 0 <= int(response.headers["x-seed"]) < 2**32
    assert ffprobe(response.content).duration == pytest.approx(1.5, abs=1 / 44100)


def test_errors_come_from_one_mapping(client: TestClient) -> None:
    unknown = client.post("/v1/audio/generate", json={"input": "x", "model": "xxx"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "message": "The model `xxx` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    too_long = client.post("/generate", json={"prompt": "x", "duration": 400})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "duration"
    invalid = client.post("/v1/audio/generate", json={"input": "x", "response_format": "ogg"})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "response_format"]
    missing_job = client.get("/jobs/0123")
    assert missing_job.status_code == 404
    assert missing_job.json()["error"]["param"] == "id"


def test_job_lifecycle_and_local_download(client: TestClient) -> None:
    body = {"prompt": "short metallic impact", "duration": 1.0, "steps": 4, "seed": 3}
    created = client.post("/jobs", json=body)
    assert created.status_code == 202, created.text
    job = created.json()
    assert created.headers["location"] == job["status_url"] == f"http://testserver/jobs/{job['id']}"
    job = wait_finished(client, job["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"step": 4, "total": 4}
    assert job["id"] in [j["id"] for j in client.get("/jobs").json()["jobs"]]
    download = client.get(job["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "audio/wav"
    assert ffprobe(download.content).duration == pytest.approx(1.0, abs=1 / 44100)
    assert client.get("/outputs/not-there.wav").status_code == 404


def test_health_and_web_page(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert DEMO in health["loaded_models"]
    assert health["coalescing"]["lora_apply"] == "auto"
    page = client.get("/ui/")
    assert page.status_code == 200
    assert "<form" in page.text
    redirect = client.get("/ui", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/ui/")
    spec = client.get("/v1/openapi.json").json()
    assert {"/v1/audio/generate", "/v1/audio/generations", "/generate", "/jobs"} <= set(
        spec["paths"]
    )
