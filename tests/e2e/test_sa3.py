"""End-to-end: Stable Audio 3 names, limits and refusals against a real ``bentoml serve``.

The server's default model is ``small-sfx`` (``STABLE_AUDIO_DEFAULT_MODEL``), an alias of the
SA3 demo (``STABLE_AUDIO_MODEL_ALIASES=small-sfx=demo-sa3,...``); the SAO demo is in the same
store. The surface tests that run on both demos are parametrized over ``surface_server``.
"""

from __future__ import annotations

import httpx
import pytest

from tests.probe import ffprobe
from tests.servers import BentoServer

SA3 = "stable-audio-3-demo"
SAO = "stable-audio-demo"
TIMEOUT = 300.0
# The stable-audio-api README's own /v1/audio/generations example, as written.
SEED_EXAMPLE = {
    "model": "small-sfx",
    "prompt": "chugging train coming into station with horn",
    "duration": 7,
    "steps": 8,
    "cfg_scale": 1.0,
    "seed": -1,
}


def post(server: BentoServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=TIMEOUT)


def test_the_seed_example_is_a_7_second_44k_stereo_wav(sa3_server: BentoServer) -> None:
    response = post(sa3_server, "/v1/audio/generations", SEED_EXAMPLE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["x-model"] == SA3
    probe = ffprobe(response.content)
    assert (probe.codec, probe.sample_rate, probe.channels) == ("pcm_s16le", 44100, 2)
    assert probe.duration == pytest.approx(7.0, abs=1 / 44100)
    assert 0.1 < abs(probe.samples).max() < 1.0  # sound, never clipping
    assert 0 <= int(response.headers["x-seed"]) < 2**32


@pytest.mark.parametrize(
    "name",
    ["small-sfx", "SMALL-SFX", "medium", "stabilityai/stable-audio-3-medium", "demo-sa3", SA3],
)
def test_sa3_names_resolve_to_the_sa3_demo(sa3_server: BentoServer, name: str) -> None:
    response = post(
        sa3_server, "/v1/audio/generations", {"model": name, "prompt": "x", "duration": 1}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == SA3


def test_health_shows_each_models_real_limits(sa3_server: BentoServer) -> None:
    health = httpx.get(f"{sa3_server.url}/health", timeout=30).json()
    assert health["default_model"] == SA3
    limits = health["model_duration_limits_seconds"]
    assert limits[SA3] == limits["small-sfx"] == 120.0
    assert limits[SAO] == pytest.approx(2097152 / 44100, abs=1e-3)
    (sa3,) = [m for m in health["models"] if m["name"] == SA3]
    assert (sa3["backend"], sa3["max_seconds"], sa3["variable_length"]) == (
        "diffusers-sa3",
        120.0,
        True,
    )
    assert (sa3["steps"], sa3["cfg_scale"], sa3["sampler"]) == (8, 1.0, "pingpong")
    assert {"demo-sa3", "small-sfx"} <= set(sa3["aliases"])
    assert "seconds_start" not in sa3["options"]


def test_sa3_refuses_what_it_cannot_do_naming_the_field(sa3_server: BentoServer) -> None:
    too_long = post(sa3_server, "/v1/audio/generations", {"prompt": "x", "duration": 121})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "duration"
    assert "120" in too_long.json()["error"]["message"]
    start = post(sa3_server, "/v1/audio/generate", {"input": "x", "audio_start": 1.0})
    assert start.status_code == 400
    assert "audio_start" in start.text


def test_normalize_picks_the_output_level_on_every_generation_route(
    sa3_server: BentoServer,
) -> None:
    """SA3 keeps the model's level by default (never boosted); ``normalize: peak`` brings the
    same audio to 0.98; an unknown level is a 422 naming the field."""
    body = {"prompt": "rain on a tin roof", "duration": 1, "steps": 2, "seed": 5}
    levels = {}
    for normalize in (None, "peak"):
        extra = {} if normalize is None else {"normalize": normalize}
        response = post(sa3_server, "/v1/audio/generations", {**body, **extra})
        assert response.status_code == 200, response.text
        levels[normalize] = ffprobe(response.content).samples
    kept, peak = levels[None], levels["peak"]
    assert abs(peak).max() == pytest.approx(0.98, abs=2 / 32768)
    assert abs(kept).max() <= 1.0
    scale = abs(kept).max() / abs(peak).max()
    assert abs(kept - peak * scale).max() < 4 / 32768  # the same audio at another gain
    vllm = post(
        sa3_server,
        "/v1/audio/generate",
        {"input": "rain", "audio_length": 1, "num_inference_steps": 2, "normalize": "peak"},
    )
    assert vllm.status_code == 200, vllm.text
    assert abs(ffprobe(vllm.content).samples).max() == pytest.approx(0.98, abs=2 / 32768)
    bad = post(sa3_server, "/v1/audio/generations", {**body, "normalize": "loud"})
    assert bad.status_code == 422
    assert "normalize" in bad.text
