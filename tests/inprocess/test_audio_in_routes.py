"""In process: the audio-in routes (variations, inpaint, continue; sync and jobs) over a real
``Runtime`` with both demos: multipart and base64 JSON bodies, the stand-in's field names,
job records with their mode and source, and every kind of bad input."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from starlette.testclient import TestClient

from tests.inprocess.conftest import app_client, make_settings
from tests.probe import ffprobe

RATE = 44100
STEPS = "4"


def clip(seconds: float = 2.0, rate: int = RATE, channels: int = 2) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * t))
    return np.stack([wave] * channels, axis=1).astype(np.float32)


def wav(audio: np.ndarray, rate: int = RATE, fmt: str = "WAV", subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == RATE
    return audio


def wait_finished(client: TestClient, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio-in")


@pytest.fixture(scope="module", params=["demo", "demo-sa3"])
def family(
    request: pytest.FixtureRequest, demo_tag: str, demo_sa3_tag: str, workdir: Path
) -> Iterator[tuple[TestClient, str]]:
    """A client whose default model is the SAO demo, then the SA3 demo."""
    model = str(request.param)
    settings = make_settings(
        workdir / model, default_model=model, max_upload_mb=2, max_upload_seconds=60
    )
    with app_client(settings) as client:
        yield client, model


FORM = {"prompt": "rain on a tin roof", "steps": STEPS, "seed": "5"}


def test_health_says_which_model_can_do_which_mode(family: tuple[TestClient, str]) -> None:
    client, _ = family
    models = client.get("/health").json()["models"]
    for model in models:
        assert model["modes"] == ["text-to-audio", "audio-to-audio", "inpainting", "continuation"]


def test_variations_multipart(family: tuple[TestClient, str]) -> None:
    client, _ = family
    source = clip(2.0)
    response = client.post(
        "/v1/audio/variations",
        data={**FORM, "init_noise_level": "0.5"},
        files={"audio": ("take.wav", wav(source), "audio/wav")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-mode"] == "audio-to-audio"
    assert response.headers["x-seed"] == "5"
    probe = ffprobe(response.content)
    assert (probe.sample_rate, probe.channels) == (RATE, 2)
    assert probe.duration == pytest.approx(2.0, abs=1 / RATE)


def test_inpaint_with_the_mask_alias_and_a_json_list(family: tuple[TestClient, str]) -> None:
    client, _ = family
    source = clip(3.0)
    response = client.post(
        "/v1/audio/inpaint",
        data={
            **FORM,
            "inpaint_mask_start_seconds": "[0.5, 2.0]",
            "inpaint_mask_end_seconds": "[1.0, 2.5]",
            "response_format": "flac",
        },
        files={"audio": ("take.flac", wav(source, fmt="FLAC", subtype="PCM_24"), "audio/flac")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/flac"
    out = decode(response.content)
    assert out.shape == source.shape
    keep = np.ones(out.shape[0], bool)
    keep[round(0.5 * RATE) : RATE] = False
    keep[2 * RATE : round(2.5 * RATE)] = False
    # 24-bit in, 16-bit FLAC out: the kept audio within one 16-bit step.
    assert float(np.max(np.abs(out[keep] - source[keep]))) <= 2 / 32768


def test_continue_with_a_json_body_and_base64_audio(family: tuple[TestClient, str]) -> None:
    client, _ = family
    source = clip(1.5, rate=22050, channels=1)  # another rate, mono
    body = {
        **FORM,
        "steps": 4,
        "seed": 5,
        "duration": 4.0,
        "audio": "data:audio/wav;base64," + base64.b64encode(wav(source, 22050)).decode(),
    }
    response = client.post("/v1/audio/continue", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-mode"] == "continuation"
    out = decode(response.content)
    assert out.shape == (4 * RATE, 2)
    # The mono clip, resampled, is both channels of the first 1.5 s.
    head = out[: round(1.4 * RATE)]
    np.testing.assert_array_equal(head[:, 0], head[:, 1])
    assert float(np.sqrt(np.mean(head**2))) == pytest.approx(0.5 * 0.62 / np.sqrt(2), rel=0.2)


@pytest.mark.parametrize(
    ("route", "fields"),
    [
        ("variations", {"init_noise_level": "0.7"}),
        ("inpaint", {"inpaint_start_seconds": "0.5", "inpaint_end_seconds": "1.5"}),
        ("continue", {"duration": "3.0"}),
    ],
)
def test_jobs_store_the_source_first_and_say_mode_and_source(
    family: tuple[TestClient, str], workdir: Path, route: str, fields: dict[str, str]
) -> None:
    client, model = family
    data = wav(clip(2.0))
    response = client.post(
        f"/jobs/{route}",
        data={**FORM, **fields},
        files={"audio": ("take.wav", data, "audio/wav")},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    mode = {"variations": "audio-to-audio", "inpaint": "inpainting", "continue": "continuation"}
    assert job["mode"] == mode[route]
    assert job["source"]["filename"] == "take.wav"
    assert job["source"]["bytes"] == len(data)
    assert job["source"]["seconds"] == pytest.approx(2.0)
    # The upload is kept where every worker of this store finds it (the state directory).
    stored = workdir / model / "state" / "sources" / job["id"]
    assert stored.read_bytes() == data
    done = wait_finished(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["mode"] == mode[route]
    audio = client.get(f"/jobs/{job['id']}/audio")
    assert audio.status_code == 200
    expected = 3.0 if route == "continue" else 2.0
    assert ffprobe(audio.content).duration == pytest.approx(expected, abs=1 / RATE)


def test_the_source_goes_with_the_job_at_retention(demo_tag: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, job_retention_seconds=0.5)
    with app_client(settings) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        response = client.post(
            "/jobs/variations",
            data=FORM,
            files={"audio": ("take.wav", wav(clip(1.0)), "audio/wav")},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        stored = tmp_path / "state" / "sources" / job_id
        assert stored.is_file()
        assert wait_finished(client, job_id)["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while stored.exists():
            runtime.worker.sweep()
            assert time.monotonic() < deadline, "the source outlived its job"
            time.sleep(0.2)
        assert client.get(f"/jobs/{job_id}").status_code == 404


def test_bad_inputs(family: tuple[TestClient, str]) -> None:
    client, _ = family
    good = wav(clip(1.0))
    jobs_before = client.get("/jobs").json()["jobs"]

    def post(route: str, fields: dict[str, Any], data: bytes | None = good) -> Any:
        files = {} if data is None else {"audio": ("x.wav", data, "audio/wav")}
        return client.post(f"/v1/audio/{route}", data={**FORM, **fields}, files=files)

    cases = [
        (post("variations", {}, None), 400, "audio", "audio is required"),
        (post("variations", {}, b""), 400, "audio", "audio is empty"),
        (post("variations", {}, b"not audio " * 100), 400, "audio", "could not be decoded"),
        (post("variations", {}, wav(np.zeros((RATE, 2), np.float32))), 400, "audio", "silent"),
        (post("variations", {}, b"\0" * (3 * 2**20)), 413, "audio", "limit is 2 MB"),
        (
            post("variations", {}, wav(clip(61.0, 8000, 1), 8000, subtype="PCM_16")),
            400,
            "audio",
            "at most 60 s",
        ),
        (
            post("inpaint", {"inpaint_start_seconds": "[0.1, 0.5]", "inpaint_end_seconds": "0.3"}),
            400,
            "inpaint_end_seconds",
            "one end for each start",
        ),
        (
            post("inpaint", {"inpaint_start_seconds": "0.5", "inpaint_end_seconds": "4"}),
            400,
            "inpaint_start_seconds",
            "within the audio",
        ),
        (post("continue", {"duration": "0.5"}), 400, "duration", "longer than the audio"),
        (post("variations", {"model": "nope"}), 404, "model", "does not exist"),
    ]
    for response, status, param, message in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == param, error
        assert message in error["message"], error
    # Field types are pydantic's 422, as on the other routes.
    bad_level = post("variations", {"init_noise_level": "2"})
    assert bad_level.status_code == 422
    assert bad_level.json()["detail"][0]["loc"] == ["body", "init_noise_level"]
    long_prompt = post("variations", {"prompt": "rain " * 500})  # past max_prompt_chars (2000)
    assert long_prompt.status_code == 422
    assert long_prompt.json()["detail"][0]["type"] == "string_too_long"
    # A JSON body without a file, or with something that is not base64.
    for body, message in [
        ({"prompt": "x"}, "audio is required"),
        ({"prompt": "x", "audio": "@@"}, "base64"),
    ]:
        response = client.post("/v1/audio/variations", json=body)
        assert response.status_code == 400 and message in response.json()["error"]["message"]
    # The same through the job routes: nothing is queued.
    for route, fields in [("variations", {}), ("continue", {"duration": "0.5"})]:
        response = client.post(
            f"/jobs/{route}",
            data={**FORM, **fields},
            files={"audio": ("x.wav", b"" if route == "variations" else good, "audio/wav")},
        )
        assert response.status_code == 400, response.text
    assert client.get("/jobs").json()["jobs"] == jobs_before
