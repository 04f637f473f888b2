"""End-to-end: the documented HTTP surface against a real ``bentoml serve`` of the demo model.

Every example of both reference documents is sent as written (bodies copied verbatim); the audio
is checked with ffprobe / ffmpeg, not with our own code.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import serve_env
from tests.probe import ffprobe
from tests.servers import REPO_ROOT, BentoServer, bento_serve

DEMO = "stable-audio-demo"  # the demo's store name; "demo" is its alias
PUBLIC_URL = "https://audio.example.com/stable-audio"  # the keyed server's, as behind a proxy
ORIGIN = "https://studio.example.org"  # the keyed server lets browsers on this origin call it
DEMO_WINDOW = 2097152 / 44100  # 47.55 s: models/demo/model_config.json sample_size / rate
TIMEOUT = 300.0


def post(server: BentoServer, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=TIMEOUT, **kwargs)


def assert_wav(response: httpx.Response, seconds: float, generated: bool = True) -> None:
    """A 44.1 kHz stereo WAV of ``seconds`` that is neither silent nor clipped.

    ``generated``: a generation response, which also states the duration in a header.
    """
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    probe = ffprobe(response.content)
    assert (probe.codec, probe.sample_rate, probe.channels) == ("pcm_s16le", 44100, 2)
    assert probe.duration == pytest.approx(seconds, abs=1 / 44100)
    if generated:
        assert float(response.headers["x-audio-duration"]) == pytest.approx(seconds, abs=1e-4)
    assert abs(probe.samples).max() < 1.0  # never clips
    assert abs(probe.samples).max() > 0.1  # not silence


# --------------------------------------------------------------------- vLLM-Omni document
VLLM_EXAMPLES = {
    "quick-start": ({"input": "The sound of a cat purring", "audio_length": 10.0}, 10.0),
    "basic": ({"input": "The sound of ocean waves crashing on a beach"}, DEMO_WINDOW),
    "custom-duration": ({"input": "A dog barking", "audio_length": 5.0}, 5.0),
    "high-quality": (
        {
            "input": "A piano playing a gentle melody",
            "audio_length": 10.0,
            "negative_prompt": "Low quality, distorted, noisy",
            "guidance_scale": 8.0,
            "num_inference_steps": 150,
        },
        10.0,
    ),
    "reproducible": ({"input": "Thunder and rain sounds", "audio_length": 15.0, "seed": 42}, 15.0),
    "full-control": (
        {
            "input": "Thunder and rain sounds",
            "audio_length": 15.0,
            "negative_prompt": "Low quality",
            "guidance_scale": 7.0,
            "num_inference_steps": 100,
            "seed": 42,
        },
        15.0,
    ),
    "quick": (
        {"input": "Birds chirping in a forest", "audio_length": 8.0, "num_inference_steps": 50},
        8.0,
    ),
    "python-client": (
        {
            "input": "Thunder and rain",
            "audio_length": 15.0,
            "negative_prompt": "Low quality",
            "guidance_scale": 7.0,
            "num_inference_steps": 100,
            "seed": 42,
            "response_format": "wav",
        },
        15.0,
    ),
}


@pytest.mark.parametrize("name", list(VLLM_EXAMPLES))
def test_vllm_document_examples(server: BentoServer, name: str) -> None:
    body, seconds = VLLM_EXAMPLES[name]
    response = post(server, "/v1/audio/generate", body)
    assert_wav(response, seconds)
    assert response.headers["x-model"] == DEMO
    if "seed" in body:
        assert response.headers["x-seed"] == str(body["seed"])
    else:
        assert 0 <= int(response.headers["x-seed"]) < 2**32


def test_same_seed_same_audio_random_seed_reported(surface_server: BentoServer) -> None:
    server = surface_server  # its default model: the SAO demo, then the SA3 demo
    body = {"input": "Thunder and rain sounds", "audio_length": 3.0, "seed": 42}
    first, second = (post(server, "/v1/audio/generate", body) for _ in range(2))
    assert first.content == second.content
    other = post(server, "/v1/audio/generate", {**body, "seed": 43})
    assert other.content != first.content

    unseeded = post(server, "/v1/audio/generate", {"input": "wind", "audio_length": 2.0})
    seed = int(unseeded.headers["x-seed"])
    replay = post(
        server, "/v1/audio/generate", {"input": "wind", "audio_length": 2.0, "seed": seed}
    )
    assert replay.content == unseeded.content


def test_audio_start_and_length(server: BentoServer) -> None:
    body = {"input": "a bell", "audio_start": 5.0, "audio_length": 3.5, "seed": 1}
    assert_wav(post(server, "/v1/audio/generate", body), 3.5)
    # Without a length the rest of the window after the start is generated.
    body = {"input": "a bell", "audio_start": 40.0, "seed": 1}
    assert_wav(post(server, "/v1/audio/generate", body), DEMO_WINDOW - 40.0)


# ------------------------------------------------------------------------- formats
FORMATS = {
    # format: (Content-Type, ffprobe codec, decoded rate)
    "wav": ("audio/wav", "pcm_s16le", 44100),
    "mp3": ("audio/mpeg", "mp3", 44100),
    "flac": ("audio/flac", "flac", 44100),
    "aac": ("audio/aac", "aac", 44100),
    "opus": ("audio/opus", "opus", 48000),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_decodes(server: BentoServer, fmt: str) -> None:
    length = 4.0
    body = {"input": "a snare drum", "audio_length": length, "seed": 5, "response_format": fmt}
    response = post(server, "/v1/audio/generate", body)
    assert response.status_code == 200, response.text
    content_type, codec, rate = FORMATS[fmt]
    assert response.headers["content-type"] == content_type
    assert response.headers["x-sample-rate"] == str(rate)
    assert response.headers["x-channels"] == "2"
    probe = ffprobe(response.content)
    assert (probe.codec, probe.sample_rate, probe.channels) == (codec, rate, 2)
    # MP3 and Opus carry their encoder delay and padding, so decoders trim them; AAC in ADTS
    # cannot, so a decoder yields the 1024 priming samples and the padded last frame too.
    tolerance = 2048 / 44100 if fmt == "aac" else 0.005
    assert probe.duration == pytest.approx(length, abs=tolerance)
    assert 0.05 < abs(probe.samples).max() < 1.0


def test_pcm_is_raw_s16le_described_by_headers(server: BentoServer) -> None:
    body = {"input": "a snare drum", "audio_length": 2.5, "seed": 5, "response_format": "pcm"}
    response = post(server, "/v1/audio/generate", body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/pcm"
    rate, channels = int(response.headers["x-sample-rate"]), int(response.headers["x-channels"])
    assert (rate, channels) == (44100, 2)
    assert len(response.content) == round(2.5 * rate) * channels * 2
    probe = ffprobe(response.content, pcm=(rate, channels))
    assert probe.duration == pytest.approx(2.5, abs=1 / rate)
    wav = ffprobe(post(server, "/v1/audio/generate", {**body, "response_format": "wav"}).content)
    assert (probe.samples == wav.samples).all()  # the same samples as the WAV


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_speed_stretches_duration(server: BentoServer, speed: float) -> None:
    body = {"input": "a melody", "audio_length": 4.0, "seed": 3, "speed": speed}
    response = post(server, "/v1/audio/generate", body)
    assert_wav(response, 4.0 / speed)


# -------------------------------------------------------------------------- errors
def test_422_literal_error_for_unknown_format(server: BentoServer) -> None:
    response = post(server, "/v1/audio/generate", {"input": "x", "response_format": "ogg"})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["type"] == "literal_error"
    assert detail["msg"] == "Input should be 'wav', 'pcm', 'flac', 'mp3', 'aac' or 'opus'"
    assert detail["loc"] == ["body", "response_format"]


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ({"input": "x", "speed": 4.5}, "speed", "less_than_equal"),
        ({"input": "x", "speed": 0.2}, "speed", "greater_than_equal"),
        ({"input": ""}, "input", "string_too_short"),
        ({"audio_length": 3}, "input", "missing"),
        ({"input": "x", "seed": 2**32}, "seed", "less_than_equal"),
        ({"input": "x", "audio_length": -1}, "audio_length", "greater_than"),
        ({"input": "x", "num_inference_steps": 0}, "num_inference_steps", "greater_than_equal"),
        ({"input": "   "}, "input", "value_error"),
        ({"input": "x", "audio_length": True}, "audio_length", "float_type"),
        ({"input": "x", "stream_format": "json"}, "stream_format", "literal_error"),
    ],
)
def test_422_validation_detail(
    server: BentoServer, body: dict[str, Any], field: str, kind: str
) -> None:
    response = post(server, "/v1/audio/generate", body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["loc"][-1], d["type"]) for d in detail] == [(field, kind)]


def test_400_for_malformed_json(server: BentoServer) -> None:
    # Not JSON at all is a 400 in the envelope (the request guard, on every route); a body that
    # parses but does not fit the schema is the 422 detail list.
    response = httpx.post(
        f"{server.url}/v1/audio/generate",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("BadRequestError", 400)
    assert error["message"].startswith("The body is not valid JSON")


def test_404_unknown_model(server: BentoServer) -> None:
    response = post(server, "/v1/audio/generate", {"input": "x", "model": "xxx"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `xxx` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/v1/audio/generate", {"input": "x", "audio_length": 60}, "audio_length", "47.55"),
        (
            "/v1/audio/generate",
            {"input": "x", "audio_start": 40, "audio_length": 10},
            "audio_length",
            "47.55",
        ),
        (
            "/v1/audio/generate",
            {"input": "x", "num_inference_steps": 501},
            "num_inference_steps",
            "500",
        ),
        ("/v1/audio/generations", {"prompt": "x", "duration": 400}, "duration", "380"),
        ("/generate", {"prompt": "x", "steps": 1000}, "steps", "500"),
    ],
)
def test_400_envelope_names_field_and_range(
    server: BentoServer, path: str, body: dict[str, Any], param: str, words: str
) -> None:
    response = post(server, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "BadRequestError"
    assert error["code"] == 400
    assert error["param"] == param
    assert param in error["message"] and words in error["message"]


def test_bad_requests_change_nothing(server: BentoServer) -> None:
    before = httpx.get(f"{server.url}/jobs", params={"limit": 500}).json()["jobs"]
    response = post(server, "/jobs", {"prompt": "x", "duration": 100})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "duration"
    after = httpx.get(f"{server.url}/jobs", params={"limit": 500}).json()["jobs"]
    assert [j["id"] for j in after] == [j["id"] for j in before]


# ------------------------------------------------------------ stable-audio-api README
TRAIN = {
    "model": "small-sfx",
    "prompt": "chugging train coming into station with horn",
    "duration": 7,
    "steps": 8,
    "cfg_scale": 1.0,
    "seed": -1,
}


@pytest.mark.parametrize("path", ["/v1/audio/generations", "/generate"])
def test_stable_api_generations_example(surface_server: BentoServer, path: str) -> None:
    # small-sfx is the SAO demo on one server, the SA3 demo on the other.
    response = post(surface_server, path, TRAIN)
    assert_wav(response, 7.0)
    assert 0 <= int(response.headers["x-seed"]) < 2**32


def test_stable_api_repo_id_alias(server: BentoServer) -> None:
    body = {**TRAIN, "model": "stabilityai/stable-audio-3-medium", "duration": 2}
    assert_wav(post(server, "/v1/audio/generations", body), 2.0)


def test_stable_api_jobs_example(surface_server: BentoServer) -> None:
    server = surface_server
    body = {
        "model": "small-sfx",
        "prompt": "short metallic impact with room reverb",
        "duration": 5,
        "steps": 8,
    }
    created = post(server, "/jobs", body)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] == "queued"
    assert re.fullmatch(r"[0-9a-f]{32}", job["id"])
    assert job["status_url"] == f"{server.url}/jobs/{job['id']}"
    assert created.headers["location"] == job["status_url"]

    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = httpx.get(job["status_url"]).json()
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"step": 8, "total": 8}
    download = httpx.get(job["download_url"])
    assert_wav(download, 5.0, generated=False)


def test_health_lists_models_and_limits(server: BentoServer) -> None:
    health = httpx.get(f"{server.url}/health").json()
    # The stable-audio-api server's fields, as its web client reads them.
    assert health["status"] == "ok"
    assert health["model"] == DEMO
    assert (health["device"], health["loaded"], health["storage_backend"]) == ("cpu", True, "local")
    assert DEMO in health["available_models"]
    assert DEMO in health["preload_models"]
    assert DEMO in health["loaded_models"]
    limits = health["model_duration_limits_seconds"]
    assert limits[DEMO] == limits["small-sfx"] == pytest.approx(DEMO_WINDOW, abs=1e-3)
    assert (health["max_duration_seconds"], health["max_steps"]) == (380, 500)
    assert health["max_batch_size"] == 4
    # Ours: the rich model records under their own key.
    assert health["default_model"] == DEMO
    assert DEMO in health["preloaded_models"]
    (demo,) = [m for m in health["models"] if m["name"] == DEMO]
    assert demo["max_seconds"] == pytest.approx(DEMO_WINDOW, abs=1e-3)
    assert (demo["sample_rate"], demo["channels"]) == (44100, 2)
    assert {"demo", "small-sfx", "stabilityai/stable-audio-3-medium"} <= set(demo["aliases"])
    assert health["limits"]["max_duration"] == 380
    assert health["limits"]["max_steps"] == 500
    assert health["limits"]["models"][DEMO]["max_seconds"] == pytest.approx(DEMO_WINDOW, abs=1e-3)


@pytest.mark.parametrize("name", [DEMO, "demo", "DEMO", "small-sfx", "Small-SFX", "medium"])
def test_model_names_and_aliases(server: BentoServer, name: str) -> None:
    response = post(server, "/v1/audio/generate", {"input": "x", "model": name, "audio_length": 1})
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == DEMO


def test_model_by_full_tag(server: BentoServer, demo_tag: str) -> None:
    body = {"input": "x", "model": demo_tag, "audio_length": 1}
    assert post(server, "/v1/audio/generate", body).status_code == 200


# ---------------------------------------------------------------- many models
def test_lazy_load_once_under_concurrent_first_requests(
    server: BentoServer, bentoml_home: Path
) -> None:
    """A model imported after start is found, loaded on first use, and loaded only once."""
    name = "demo-lazy"
    subprocess.run(
        [sys.executable, "-m", "models", "import", "demo", "--name", name],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert name not in httpx.get(f"{server.url}/health").json()["loaded_models"]

    responses: list[httpx.Response] = []

    def first_request(seed: int) -> None:
        body = {"input": "x", "model": name, "audio_length": 1, "seed": seed}
        responses.append(post(server, "/v1/audio/generate", body))

    threads = [threading.Thread(target=first_request, args=(s,)) for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.headers["x-model"] for r in responses} == {name}
    health = httpx.get(f"{server.url}/health").json()
    assert name in health["loaded_models"]
    assert name not in health["preloaded_models"]
    assert len(re.findall(rf"loaded {name} on cpu", server.log())) == 1


# -------------------------------------------------------------------- native API
def test_native_sync_api_errors_are_fast_and_typed(server: BentoServer) -> None:
    started = time.monotonic()
    response = post(server, "/api/generate", {"input": "x", "audio_length": 200})
    assert time.monotonic() - started < 10
    assert response.status_code == 400
    assert "audio_length" in response.text


def test_swagger_ui_kept_at_root(server: BentoServer) -> None:
    response = httpx.get(f"{server.url}/")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
    spec = httpx.get(f"{server.url}/v1/openapi.json").json()
    assert {"/v1/audio/generate", "/v1/audio/generations", "/generate", "/jobs"} <= set(
        spec["paths"]
    )


def test_open_server_says_so_at_start(server: BentoServer) -> None:
    assert "STABLE_AUDIO_API_KEYS is not set" in server.log()


# -------------------------------------------------------------------------- auth
@pytest.fixture(scope="module")
def keyed_server(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("keyed")
    env = serve_env(
        workdir,
        STABLE_AUDIO_API_KEYS="key-one, key-two",
        STABLE_AUDIO_PUBLIC_URL=PUBLIC_URL,
        STABLE_AUDIO_CORS_ORIGINS=ORIGIN,
    )
    with bento_serve(env, workdir / "server.log") as running:
        yield running


def test_links_use_the_public_url_behind_a_proxy(keyed_server: BentoServer) -> None:
    """Behind a proxy the request's own URL is the inner address; links use the public one."""
    auth = {"Authorization": "Bearer key-one"}
    body = {"prompt": "a bell", "duration": 1, "steps": 4}
    created = httpx.post(f"{keyed_server.url}/jobs", json=body, headers=auth, timeout=30)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert created.json()["status_url"] == f"{PUBLIC_URL}/jobs/{job_id}"
    assert created.headers["location"] == f"{PUBLIC_URL}/jobs/{job_id}"
    deadline = time.monotonic() + 120
    while (job := httpx.get(f"{keyed_server.url}/jobs/{job_id}", headers=auth).json())[
        "status"
    ] != "succeeded":
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["download_url"].startswith(f"{PUBLIC_URL}/outputs/")
    # The same path on the server itself serves the audio.
    path = job["download_url"].removeprefix(PUBLIC_URL)
    audio = httpx.get(f"{keyed_server.url}{path}", headers=auth, timeout=30)
    assert audio.status_code == 200
    assert ffprobe(audio.content).duration == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/audio/generate"),
        ("POST", "/v1/audio/generations"),
        ("POST", "/generate"),
        ("POST", "/jobs"),
        ("GET", "/jobs"),
        ("POST", "/api/generate"),
        ("POST", "/api/generate_async/submit"),
    ],
)
def test_auth_required_on_api_routes(keyed_server: BentoServer, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-one"}):
        response = httpx.request(
            method, f"{keyed_server.url}{path}", json={"input": "x"}, headers=headers
        )
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["type"] == "AuthenticationError"


@pytest.mark.parametrize("path", ["/health", "/healthz", "/livez", "/readyz", "/metrics", "/ui/"])
def test_auth_open_paths(keyed_server: BentoServer, path: str) -> None:
    assert httpx.get(f"{keyed_server.url}{path}").status_code == 200


@pytest.mark.parametrize("key", ["key-one", "key-two"])
def test_auth_each_key_works(keyed_server: BentoServer, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"input": "x", "audio_length": 1}
    response = post(keyed_server, "/v1/audio/generate", body, headers=headers)
    assert_wav(response, 1.0)
    assert "STABLE_AUDIO_API_KEYS is not set" not in keyed_server.log()
    assert json.loads(httpx.get(f"{keyed_server.url}/health").text)["auth"] is True


# -------------------------------------------------------------------------- CORS
def preflight(server: BentoServer, origin: str) -> httpx.Response:
    return httpx.options(
        f"{server.url}/v1/audio/generations",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def test_cors_preflight_and_response_headers(keyed_server: BentoServer) -> None:
    allowed = preflight(keyed_server, ORIGIN)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= {
        h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    other = preflight(keyed_server, "https://elsewhere.example.net")
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers

    # A browser script on the origin reads the audio's headers, and a 401's body.
    body = {"prompt": "a bell", "duration": 1, "steps": 4}
    auth = {"Origin": ORIGIN, "Authorization": "Bearer key-one"}
    response = post(keyed_server, "/v1/audio/generations", body, headers=auth)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = response.headers["access-control-expose-headers"].lower()
    assert {"x-seed", "x-output-count", "x-ignored-fields"} <= {
        h.strip() for h in exposed.split(",")
    }
    refused = post(keyed_server, "/v1/audio/generations", body, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_cors_off_by_default(server: BentoServer) -> None:
    assert "access-control-allow-origin" not in preflight(server, ORIGIN).headers


# ------------------------------------------------------------ fields no API knows
def test_unknown_fields_are_ignored_and_named(server: BentoServer) -> None:
    body = {"input": "x", "audio_length": 1, "voice": "alloy", "colour": "red"}
    response = post(server, "/v1/audio/generate", body)
    assert_wav(response, 1.0)
    assert response.headers["x-ignored-fields"] == "voice,colour"
    assert response.headers["x-output-count"] == "1"
    assert "ignored fields no API knows: voice, colour" in server.log()
