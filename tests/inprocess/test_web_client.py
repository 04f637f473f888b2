"""In process: the stable-audio-api stand-in's web client, request for request.

Page load (health), Generate and Queue in each of its three modes (text, variation, inpaint),
its poll loop and its job card's audio and download link (``tests.web_client``), on both model
families: the SAO demo, then the SA3 demo, under the model name the client starts with
(``small-music``).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.conftest import DOC_MODEL_ALIASES, SA3_MODEL_ALIASES
from tests.inprocess.conftest import app_client, make_settings
from tests.probe import ffprobe
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
# What a user picks: a few steps, so that every click is quick on a CPU.
FORM = {**INITIAL_FORM, "steps": 4}


@pytest.fixture(scope="module", params=["sao", "sa3"])
def family(
    request: pytest.FixtureRequest,
    demo_tag: str,
    demo_sa3_tag: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    aliases = DOC_MODEL_ALIASES if request.param == "sao" else SA3_MODEL_ALIASES
    workdir: Path = tmp_path_factory.mktemp(f"web-client-{request.param}")
    with app_client(make_settings(workdir, model_aliases=aliases)) as client:
        yield client


def test_page_load(family: TestClient) -> None:
    health = fetch_health(family)
    assert health["status"] == "ok"  # its green badge
    # Its duration input's max: the limit of the model in its form.
    assert health["model_duration_limits_seconds"][FORM["model"]] >= FORM["duration"]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"chunkedDecode": "true", "negativePrompt": "  muffled  "},
        {"chunkedDecode": "false", "seed": 12},
    ],
    ids=["as-loaded", "chunked-negative", "unchunked-seed"],
)
def test_generate_text(family: TestClient, changes: dict[str, object]) -> None:
    artifact = run_sync(family, "text", {**FORM, **changes})
    assert artifact.content_type == "audio/wav" and artifact.is_audio
    assert artifact.filename.endswith(".wav") and artifact.output_count == 1
    probe = ffprobe(artifact.data)  # it decodes the blob for its waveform
    assert probe.duration == pytest.approx(FORM["duration"], abs=1 / RATE)


def test_generate_a_batch_is_a_zip_it_offers_to_download(family: TestClient) -> None:
    artifact = run_sync(family, "text", {**FORM, "batchSize": 2, "duration": 2})
    assert "zip" in artifact.content_type and not artifact.is_audio
    assert artifact.filename.endswith(".zip") and artifact.output_count == 2
    with zipfile.ZipFile(io.BytesIO(artifact.data)) as archive:
        assert archive.namelist() == ["01.wav", "02.wav"]


@pytest.mark.parametrize("mode", ["variation", "inpaint"])
def test_generate_from_a_file(family: TestClient, mode: str) -> None:
    artifact = run_sync(family, mode, FORM, source_clip())
    assert artifact.content_type == "audio/wav" and artifact.output_count == 1
    assert ffprobe(artifact.data).duration == pytest.approx(8.0, abs=1 / RATE)


@pytest.mark.parametrize("mode", ["text", "variation", "inpaint"])
def test_queue_poll_and_play(family: TestClient, mode: str) -> None:
    source = source_clip() if mode != "text" else None
    job = start_job(family, mode, FORM, source)
    done = poll_until_done(family, job)
    assert done["status"] == "succeeded", done
    assert done["error"] is None and done["output_count"] == 1
    assert "audio" in (done["download_content_type"] or "")  # its <audio> player shows
    played = download(family, done)
    assert "audio" in played.headers["content-type"]
    assert ffprobe(played.content).duration == pytest.approx(8.0, abs=1 / RATE)


def test_queue_a_batch_offers_the_zip(family: TestClient) -> None:
    done = poll_until_done(family, start_job(family, "text", {**FORM, "batchSize": 2}))
    assert done["status"] == "succeeded" and done["output_count"] == 2
    assert "zip" in (done["download_content_type"] or "")
    assert download(family, done).headers["content-type"] == "application/zip"


def test_a_refusal_reads_as_a_message(family: TestClient) -> None:
    with pytest.raises(ClientError) as refused:
        run_sync(family, "text", {**FORM, "duration": 9999})
    assert "duration" in str(refused.value) and "9999" in str(refused.value)


def test_the_icon_a_browser_asks_for_unasked(family: TestClient) -> None:
    icon = family.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content.startswith(b"\x00\x00\x01\x00")  # an ICO directory
