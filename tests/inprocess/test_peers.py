"""In process: the reference servers' documented requests, sent verbatim, read as their clients
read the answers; and the fields of their current request models.

The stable-audio-api README's model names (``small-sfx`` ...) are aliases of the demo model.
"""

from __future__ import annotations

import base64
import io
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx_sse
import numpy as np
import pytest
from starlette.testclient import TestClient

from stable_audio_bento.jobs.records import Job, new_job_id
from stable_audio_bento.runtime import Runtime
from tests.conftest import DOC_MODEL_ALIASES
from tests.inprocess.conftest import app_client, make_settings
from tests.probe import ffprobe

DEMO = "stable-audio-demo"
DEMO_WINDOW = 2097152 / 44100


def wait_finished(client: TestClient, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def seconds_of(data: bytes) -> float:
    return ffprobe(data).duration


# ------------------------------------------------------ stable-audio-api README, verbatim
def test_readme_sync_example(client: TestClient) -> None:
    body = {
        "model": "small-sfx",
        "prompt": "chugging train coming into station with horn",
        "duration": 7,
        "steps": 8,
        "cfg_scale": 1.0,
        "seed": -1,
    }
    response = client.post("/v1/audio/generations", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    # The headers its client reads.
    assert response.headers["x-model"] == DEMO
    assert response.headers["x-sample-rate"] == "44100"
    assert response.headers["x-output-count"] == "1"
    assert seconds_of(response.content) == pytest.approx(7.0, abs=1 / 44100)


def test_readme_job_example(client: TestClient) -> None:
    body = {
        "model": "small-sfx",
        "prompt": "short metallic impact with room reverb",
        "duration": 5,
        "steps": 8,
    }
    created = client.post("/jobs", json=body)
    assert created.status_code == 202, created.text
    first = created.json()
    assert first["status"] == "queued"
    assert first["status_url"] == f"http://testserver/jobs/{first['id']}"
    job = wait_finished(client, first["id"])
    assert job["status"] == "succeeded", job
    # The stable-audio-api job record.
    assert (job["mode"], job["model"], job["duration"], job["steps"]) == (
        "text-to-audio",
        DEMO,
        5.0,
        8,
    )
    assert job["output_count"] == 1
    assert job["completed_at"] == job["finished_at"] is not None
    assert job["created_at"] and job["started_at"]
    assert (job["storage_backend"], job["storage_key"]) == ("local", f"{job['id']}.wav")
    assert (job["download_content_type"], job["sample_rate"], job["error"]) == (
        "audio/wav",
        44100,
        None,
    )
    download = client.get(job["download_url"])
    assert seconds_of(download.content) == pytest.approx(5.0, abs=1 / 44100)
    audio = client.get(f"/jobs/{job['id']}/audio")
    assert audio.status_code == 200
    assert audio.content == download.content
    # The normalised, versioned parameters it ran with.
    assert job["params"]["version"] == 2
    assert job["params"]["seconds_total"] == 5.0
    assert job["params"]["seed"] == job["seed"]


def test_defaults_and_blank_prompts(client: TestClient) -> None:
    # A missing duration is the peer's 7 s on its routes; vLLM's is the model's window.
    response = client.post("/generate", json={"prompt": "rain", "steps": 2})
    assert seconds_of(response.content) == pytest.approx(7.0, abs=1 / 44100)
    for path, field in (
        ("/v1/audio/generate", "input"),
        ("/v1/audio/generations", "prompt"),
        ("/generate", "prompt"),
        ("/jobs", "prompt"),
    ):
        for blank in ("", "  \t\n"):
            refused = client.post(path, json={field: blank})
            assert refused.status_code == 422, (path, blank)
            (detail,) = refused.json()["detail"]
            assert detail["loc"] == ["body", field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "duration": True}, "duration"),
        ({"prompt": "x", "steps": "8"}, "steps"),
        # 8.0 is an integer in JSON Schema (the documents say integer), so it is accepted;
        # 8.5 is not.
        ({"prompt": "x", "steps": 8.5}, "steps"),
        ({"prompt": "x", "batch_size": True}, "batch_size"),
        ({"prompt": "x", "chunked_decode": "yes"}, "chunked_decode"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": "x", "cfg_scale": 21}, "cfg_scale"),
        ({"prompt": "x", "apg_scale": 11}, "apg_scale"),
        ({"prompt": "x", "duration_padding_sec": 31}, "duration_padding_sec"),
        ({"prompt": "x", "sampler_kwargs": {"steps": 3}}, "sampler_kwargs"),
        ({"prompt": "x", "sampler_kwargs": {"sigma_min": [1]}}, "sampler_kwargs"),
        ({"prompt": "x", "sampler_kwargs": "sigma_min=1"}, "sampler_kwargs"),
    ],
)
def test_strict_types_and_ranges_422(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/audio/generations", json=body)
    assert response.status_code == 422, response.text
    assert {d["loc"][1] for d in response.json()["detail"]} == {field}


# ----------------------------------------------------------------- batch_size
def test_batch_size_is_a_zip_of_outputs_one_seed_each(client: TestClient) -> None:
    body = {"prompt": "a bell", "duration": 1.5, "steps": 4, "seed": 41, "batch_size": 3}
    response = client.post("/v1/audio/generations", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["x-output-count"] == "3"
    assert response.headers["x-seeds"] == "41,42,43"
    assert response.headers["x-seed"] == "41"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["01.wav", "02.wav", "03.wav"]
        entries = [archive.read(name) for name in archive.namelist()]
    # Each output is what that seed gives alone (batched float sums may differ by an LSB).
    for seed, data in zip((41, 42, 43), entries, strict=True):
        alone = client.post("/generate", json={**body, "batch_size": 1, "seed": seed})
        together, single = ffprobe(data).samples, ffprobe(alone.content).samples
        assert np.abs(together - single).max() <= 2 / 32768
    assert len(set(entries)) == 3
    flac = client.post("/generate", json={**body, "batch_size": 2, "response_format": "flac"})
    with zipfile.ZipFile(io.BytesIO(flac.content)) as archive:
        assert archive.namelist() == ["01.flac", "02.flac"]
        assert ffprobe(archive.read("02.flac")).codec == "flac"


def test_batch_size_over_the_server_limit_is_400(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "x", "batch_size": 5})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "batch_size"
    assert "between 1 and 4" in error["message"]


def test_batch_job_stores_a_zip(client: TestClient) -> None:
    body = {"prompt": "a bell", "duration": 1, "steps": 3, "seed": 9, "batch_size": 2}
    job = wait_finished(client, client.post("/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    assert (job["output_count"], job["seeds"]) == (2, [9, 10])
    assert job["download_content_type"] == "application/zip"
    assert job["storage_key"] == f"{job['id']}.zip"
    download = client.get(job["download_url"])
    assert download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert archive.namelist() == ["01.wav", "02.wav"]


# ------------------------------------------------------- what the model can honour
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"apg_scale": 2.0}, "apg_scale"),  # 1.0, the peer's default, is ignored
        ({"sampler_kwargs": {"eta": 0.5}}, "sampler_kwargs.eta"),
        ({"sampler_kwargs": {"sigma_min": 0}}, "sampler_kwargs.sigma_min"),
    ],
)
def test_what_the_demo_cannot_honour_is_a_400_naming_it(
    client: TestClient, extra: dict[str, Any], param: str
) -> None:
    response = client.post("/generate", json={"prompt": "x", "duration": 1, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert param in response.json()["error"]["message"]


def test_accepted_options(client: TestClient) -> None:
    base = {"prompt": "x", "duration": 1, "steps": 3, "seed": 5}
    plain = client.post("/generate", json=base)
    same = client.post(
        "/generate", json={**base, "chunked_decode": True, "duration_padding_sec": 0}
    )
    assert same.content == plain.content  # bounded decode is what we always do
    schedule = client.post("/generate", json={**base, "sampler_kwargs": {"sigma_min": 0.5}})
    assert schedule.status_code == 200, schedule.text
    assert schedule.content != plain.content


# ----------------------------------------------------------------- vLLM-Omni
def test_vllm_examples_verbatim(client: TestClient) -> None:
    dog = client.post("/v1/audio/generate", json={"input": "A dog barking", "audio_length": 5.0})
    assert dog.status_code == 200, dog.text
    assert seconds_of(dog.content) == pytest.approx(5.0, abs=1 / 44100)
    audio = client.post(
        "/v1/audio/generate", json={"input": "x", "audio_length": 1, "stream_format": "audio"}
    )
    assert audio.status_code == 200


def test_unknown_fields_ignored_and_named(client: TestClient) -> None:
    body = {"prompt": "x", "duration": 1, "steps": 2, "voice": "alloy", "héllo": 1}
    response = client.post("/generate", json=body)
    assert response.status_code == 200
    assert response.headers["x-ignored-fields"] == "voice,h%C3%A9llo"
    created = client.post("/jobs", json=body)
    assert created.headers["x-ignored-fields"] == "voice,h%C3%A9llo"
    assert "voice" not in created.json()["request"]


@pytest.fixture(scope="module")
def strict_client(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("strict"), strict_requests=True)
    with app_client(settings) as running:
        yield running


def test_strict_mode_refuses_unknown_fields(strict_client: TestClient) -> None:
    response = strict_client.post("/generate", json={"prompt": "x", "voice": "alloy"})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert (detail["type"], detail["loc"]) == ("extra_forbidden", ["body", "voice"])
    assert strict_client.post("/jobs", json={"prompt": "x", "colour": 1}).status_code == 422
    assert strict_client.get("/jobs").json()["jobs"] == []


# ------------------------------------------------------------------------- jobs
def test_job_audio_409_until_done_404_when_unknown(client: TestClient) -> None:
    created = client.post("/jobs", json={"prompt": "a drone", "duration": 2, "steps": 150})
    job_id = created.json()["id"]
    early = client.get(f"/jobs/{job_id}/audio")
    assert early.status_code == 409
    assert early.json()["error"]["type"] == "ConflictError"
    assert wait_finished(client, job_id)["status"] == "succeeded"
    assert client.get(f"/jobs/{job_id}/audio").status_code == 200
    assert client.get(f"/jobs/{'0' * 32}/audio").status_code == 404


def test_a_job_queued_by_an_older_release_still_runs(client: TestClient) -> None:
    """The record as the release before versioned parameters wrote it: the stable-audio-api
    body under ``request`` (``duration`` None then meant the model's whole window)."""
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    old = {
        "id": new_job_id(),
        "status": "queued",
        "request": {
            "prompt": "an old job",
            "model": "small-sfx",
            "duration": None,
            "steps": 3,
            "cfg_scale": None,
            "seed": 77,
            "negative_prompt": None,
            "response_format": "wav",
        },
        "model": DEMO,
        "response_format": "wav",
        "seed": 77,
        "progress_step": 0,
        "progress_total": 3,
        "created_at": time.time(),
        "attempts": 0,
        "cancel_requested": False,
    }
    job = runtime.jobs.create(Job.model_validate_json(Job.model_validate(old).model_dump_json()))
    done = wait_finished(client, job.id)
    assert done["status"] == "succeeded", done
    assert done["request"]["prompt"] == "an old job"
    assert done["params"] is None
    audio = client.get(f"/jobs/{job.id}/audio").content
    assert seconds_of(audio) == pytest.approx(DEMO_WINDOW, abs=1 / 44100)


# ------------------------------------------------------------------------ health
def test_health_in_the_peer_shape_plus_ours(client: TestClient) -> None:
    health = client.get("/health").json()
    assert (health["status"], health["model"], health["loaded"]) == ("ok", DEMO, True)
    assert health["device"] == "cpu"
    assert health["storage_backend"] == "local"
    # The session's store may also hold the SA3 demo (imported by other tests): names only.
    assert DEMO in health["available_models"]
    assert all(isinstance(name, str) for name in health["available_models"])
    assert health["preload_models"] == [DEMO]
    assert DEMO in health["loaded_models"]
    assert set(health["loaded_models"]) <= set(health["available_models"])
    names = {DEMO, *(pair.split("=")[0] for pair in DOC_MODEL_ALIASES.split(","))}
    assert names <= set(health["model_duration_limits_seconds"])
    assert health["max_duration_seconds"] == 380
    assert (health["max_steps"], health["max_batch_size"]) == (500, 4)
    records = {record["name"]: record for record in health["models"]}
    assert set(records) == set(health["available_models"])
    assert "text-to-audio" in records[DEMO]["modes"]
    # The format registry, for the web page.
    formats = [f["name"] for f in health["formats"]]
    assert formats == ["wav", "pcm", "flac", "mp3", "aac", "opus"]
    page = client.get("/ui/app.js").text
    assert all(f'"{name}"' not in page for name in ("flac", "mp3", "aac"))


def test_vllm_generate_streams_progress_then_the_audio_as_sse(client: TestClient) -> None:
    # vLLM-Omni refuses stream_format "sse"; ours streams events (http/audio_stream.py).
    body = {"input": "x", "audio_length": 1, "num_inference_steps": 5, "seed": 11}
    plain = client.post("/v1/audio/generate", json=body)
    with httpx_sse.connect_sse(
        client, "POST", "/v1/audio/generate", json={**body, "stream_format": "sse"}
    ) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = list(source.iter_sse())
    kinds = [e.event for e in events]
    steps = [e.json()["step"] for e in events if e.event == "progress"]
    assert steps == [1, 2, 3, 4, 5], kinds
    chunks = [e.json() for e in events if e.event == "audio"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    data = b"".join(base64.b64decode(c["data"]) for c in chunks)
    assert data == plain.content  # the same file as stream_format "audio"
    done = events[-1]
    assert kinds.index("audio") > max(i for i, k in enumerate(kinds) if k == "progress")
    assert done.event == "done"
    assert done.json() == {
        "media_type": "audio/wav",
        "format": "wav",
        "bytes": len(data),
        "chunks": len(chunks),
        "seed": 11,
        "sample_rate": int(plain.headers["x-sample-rate"]),
        "duration": pytest.approx(1.0, abs=1 / 44100),
        "model": plain.headers["x-model"],
    }
    # A bad request is the usual 4xx, before any stream.
    bad = client.post("/v1/audio/generate", json={**body, "stream_format": "sse", "model": "no"})
    assert bad.status_code == 404 and bad.json()["error"]["param"] == "model"
