"""Small ones, in process on the demo model: errors name the field the client got wrong, model
tags as BentoML writes them, the shortest audio, no 500 for what a client can send."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.probe import ffprobe


@pytest.mark.parametrize("start", [47.55, 47.54, 100.0])
def test_a_start_past_the_window_blames_the_start(client: TestClient, start: float) -> None:
    response = client.post("/v1/audio/generate", json={"input": "rain", "audio_start": start})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "audio_start" and "audio_start" in error["message"]


@pytest.mark.parametrize("model", ["demo:latest", "stable-audio-demo:latest", "DEMO"])
def test_latest_tags_resolve(client: TestClient, model: str) -> None:
    body = {"input": "rain", "audio_length": 0.5, "num_inference_steps": 2, "model": model}
    response = client.post("/v1/audio/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "stable-audio-demo"


@pytest.mark.parametrize("fmt", ["opus", "aac", "mp3", "wav"])
def test_speed_4_on_the_shortest_length_still_answers_audio(client: TestClient, fmt: str) -> None:
    body = {
        "input": "tick",
        "audio_length": 1 / 44100,
        "speed": 4.0,
        "num_inference_steps": 2,
        "response_format": fmt,
    }
    response = client.post("/v1/audio/generate", json=body)
    assert response.status_code == 200, response.text
    assert len(ffprobe(response.content).samples) >= 1


@pytest.mark.parametrize(
    "raw",
    ['{"input":"rain","audio_length":NaN}', '{"input":"rain\\ud800","audio_length":1}'],
)
def test_what_the_guard_catches_is_never_a_500_behind_it_either(
    client: TestClient, raw: str
) -> None:
    """Without the request guard in front (as here), the 422 handler still answers."""
    response = client.post(
        "/v1/audio/generate", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()
