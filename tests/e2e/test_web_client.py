"""A real ``bentoml serve``, talked to as the stable-audio-api stand-in's web client talks.

The same requests as the in-process tier (``tests.web_client``), in the order a user's session
sends them: page load, Generate in each mode, Queue in each mode, the poll loop, the job card's
player and download link; on both model families (the SAO demo, then the SA3 demo, under the
client's model name ``small-music``). Then BentoML's native API with every optional field null,
and the icon a browser asks for.
"""

from __future__ import annotations

import httpx
import pytest

from stable_audio_bento.schemas import AudioGenerateRequest
from tests.probe import ffprobe
from tests.servers import BentoServer
from tests.unit.test_unset import optional_fields
from tests.web_client import (
    INITIAL_FORM,
    ClientError,
    download,
    fetch_health,
    poll_until_done,
    run_sync,
    source_clip,
    start_job,
)

RATE = 44100
FORM = {**INITIAL_FORM, "steps": 4}


def test_a_session_of_the_web_client(surface_server: BentoServer) -> None:
    source = source_clip()
    with httpx.Client(base_url=surface_server.url, timeout=240) as client:
        health = fetch_health(client)
        assert health["status"] == "ok"
        assert health["model_duration_limits_seconds"][FORM["model"]] >= FORM["duration"]
        for mode in ("text", "variation", "inpaint"):
            artifact = run_sync(client, mode, FORM, source if mode != "text" else None)
            assert artifact.content_type == "audio/wav" and artifact.is_audio, mode
            assert artifact.output_count == 1 and artifact.filename.endswith(".wav")
            assert ffprobe(artifact.data).duration == pytest.approx(8.0, abs=1 / RATE)
        batch = run_sync(client, "text", {**FORM, "batchSize": 2, "duration": 2})
        assert "zip" in batch.content_type and batch.output_count == 2
        cards = [
            start_job(client, mode, FORM, source if mode != "text" else None)
            for mode in ("text", "variation", "inpaint")
        ]
        for card in cards:
            done = poll_until_done(client, card)
            assert done["status"] == "succeeded" and done["error"] is None, done
            assert "audio" in (done["download_content_type"] or "")
            played = download(client, done)
            assert "audio" in played.headers["content-type"]
            assert ffprobe(played.content).duration == pytest.approx(8.0, abs=1 / RATE)
        with pytest.raises(ClientError, match="duration"):
            run_sync(client, "text", {**FORM, "duration": 9999})


def test_the_native_api_takes_null_for_every_optional_field(server: BentoServer) -> None:
    body = {"input": "rain", **dict.fromkeys(optional_fields(AudioGenerateRequest))}
    body.update(audio_length=1.0, num_inference_steps=3)  # quick; the rest stays null
    response = httpx.post(f"{server.url}/api/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert ffprobe(response.content).duration == pytest.approx(1.0, abs=1 / RATE)


def test_the_icon_a_browser_asks_for(server: BentoServer) -> None:
    icon = httpx.get(f"{server.url}/favicon.ico", timeout=30)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
