"""Jobs belong to the API key that made them: other keys get 404 (records, cancel, audio).

In process: the real app, Runtime, job worker and demo model behind the real key middleware.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from stable_audio_bento.http import create_app
from stable_audio_bento.http.middleware.auth import ApiKeyMiddleware
from stable_audio_bento.runtime import Runtime
from tests.inprocess.conftest import make_settings

ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
ROOT = {"Authorization": "Bearer root-key"}
FAST = {"prompt": "rain", "duration": 1.0, "steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def client(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("owners"), api_keys=["alice-key", "bob-key"])
    runtime = Runtime(settings)
    runtime.start()
    app = ApiKeyMiddleware(
        create_app(runtime), keys=["alice-key", "bob-key"], admin_keys=["root-key"]
    )
    try:
        with TestClient(app, raise_server_exceptions=False) as running:
            yield running
    finally:
        runtime.stop()


def finished(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_other_keys_cannot_see_cancel_or_download(client: TestClient) -> None:
    created = client.post("/jobs", json=FAST, headers=ALICE)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    done = finished(client, job_id, ALICE)
    assert done["status"] == "succeeded"
    assert "owner" not in done  # the hash stays on the server

    not_found = {
        "message": f"Job `{job_id}` does not exist.",
        "type": "NotFoundError",
        "param": "id",
        "code": 404,
    }
    for method, path in [
        ("GET", f"/jobs/{job_id}"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("GET", f"/jobs/{job_id}/audio"),
    ]:
        response = client.request(method, path, headers=BOB)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] == not_found  # exactly as for a job that never was
    assert job_id not in {j["id"] for j in client.get("/jobs", headers=BOB).json()["jobs"]}
    download = done["download_url"].split("testserver", 1)[1]
    assert client.get(download, headers=BOB).status_code == 404
    assert client.get(download, headers=ALICE).status_code == 200
    assert client.get(f"/jobs/{job_id}/audio", headers=ALICE).content[:4] == b"RIFF"

    # An admin key sees and may act on every job.
    assert client.get(f"/jobs/{job_id}", headers=ROOT).json()["id"] == job_id
    assert job_id in {j["id"] for j in client.get("/jobs", headers=ROOT).json()["jobs"]}
    assert client.get(download, headers=ROOT).status_code == 200


def test_idempotency_keys_do_not_cross_owners(client: TestClient) -> None:
    key = {"Idempotency-Key": "same-key"}
    first = client.post("/jobs", json=FAST, headers={**ALICE, **key}).json()
    other = client.post("/jobs", json={**FAST, "seed": 9}, headers={**BOB, **key})
    assert other.status_code == 202 and other.json()["id"] != first["id"]  # no 409, no leak
    again = client.post("/jobs", json=FAST, headers={**ALICE, **key}).json()
    assert again["id"] == first["id"]


def test_listings_cut_long_prompts(client: TestClient) -> None:
    long_prompt = "rain " * 300  # 1500 characters, under the prompt cap
    job_id = client.post("/jobs", json={**FAST, "prompt": long_prompt}, headers=ALICE).json()["id"]
    listed = next(j for j in client.get("/jobs", headers=ALICE).json()["jobs"] if j["id"] == job_id)
    assert listed["truncated"] is True
    assert len(listed["request"]["prompt"]) == 203 and listed["request"]["prompt"].endswith("...")
    whole = client.get(f"/jobs/{job_id}", headers=ALICE).json()
    assert whole["request"]["prompt"] == long_prompt


def test_audio_in_jobs_belong_to_their_key_too(client: TestClient) -> None:
    import io

    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, (44100, 2)).astype(np.float32)
    sf.write(buffer, noise, 44100, format="WAV", subtype="PCM_16")
    created = client.post(
        "/jobs/variations",
        files={"audio": ("source.wav", buffer.getvalue(), "audio/wav")},
        data={"prompt": "rain", "duration": "1", "steps": "2"},
        headers=ALICE,
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert client.get(f"/jobs/{job_id}", headers=ALICE).status_code == 200
    assert client.get(f"/jobs/{job_id}", headers=BOB).status_code == 404
