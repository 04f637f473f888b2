"""In process: the stable-audio-api peer's fields on both model families (``peer_fields``).

``duration_padding_sec`` is honoured by both (Stable Audio Open is told the padded length and
the padding is cut); ``apg_scale`` only by Stable Audio 3: elsewhere its default is ignored and
named in ``X-Ignored-Fields``, and any other value is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.conftest import SA3_MODEL_ALIASES
from tests.inprocess.conftest import app_client, make_settings
from tests.probe import ffprobe
from tests.web_client import source_clip

RATE = 44100
DEMO_WINDOW = 2097152 / RATE
BASE = {"prompt": "a bell in the rain", "duration": 2, "steps": 3, "seed": 5}


@pytest.fixture(scope="module")
def sa3(demo_sa3_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    workdir = tmp_path_factory.mktemp("sa3")
    settings = make_settings(workdir, model_aliases=SA3_MODEL_ALIASES, default_model="small-sfx")
    with app_client(settings) as client:
        yield client


def generate(client: TestClient, **fields: object) -> bytes:
    response = client.post("/v1/audio/generations", json={**BASE, **fields})
    assert response.status_code == 200, response.text
    return response.content


def test_padding_on_stable_audio_open_is_generated_and_cut(client: TestClient) -> None:
    plain = generate(client)
    padded = generate(client, duration_padding_sec=6.0)
    assert padded == generate(client, duration_padding_sec=6.0)  # same seed, same audio
    assert padded != plain  # the model was told 8 s and 2 s were kept
    assert ffprobe(padded).duration == pytest.approx(2.0, abs=1 / RATE)
    assert generate(client, duration_padding_sec=0) == plain  # its reference: no padding


def test_padding_stays_inside_the_window(client: TestClient) -> None:
    whole = DEMO_WINDOW - 0.05
    full = generate(client, duration=whole, duration_padding_sec=6.0)
    assert ffprobe(full).duration == pytest.approx(whole, abs=1 / RATE)


def test_the_peers_apg_default_is_ignored_and_named_on_stable_audio_open(
    client: TestClient,
) -> None:
    plain = client.post("/v1/audio/generations", json=BASE)
    apg = client.post("/v1/audio/generations", json={**BASE, "apg_scale": 1.0})
    assert apg.status_code == 200, apg.text
    assert apg.headers["x-ignored-fields"] == "apg_scale"
    assert "x-ignored-fields" not in plain.headers
    assert apg.content == plain.content
    both = client.post("/generate", json={**BASE, "voice": "x", "apg_scale": 1})
    assert both.headers["x-ignored-fields"] == "voice,apg_scale"


def test_another_apg_value_is_a_400_naming_it(client: TestClient) -> None:
    response = client.post("/v1/audio/generations", json={**BASE, "apg_scale": 2.5})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "apg_scale"
    assert "apg_scale is not supported by stable-audio-demo" in error["message"]


def test_a_queued_job_names_the_ignored_default(client: TestClient) -> None:
    response = client.post("/jobs", json={**BASE, "apg_scale": 1.0, "negative_prompt": None})
    assert response.status_code == 202, response.text
    assert response.headers["x-ignored-fields"] == "apg_scale"


def test_stable_audio_3_honours_both(sa3: TestClient) -> None:
    guided = {**BASE, "cfg_scale": 4.0}  # APG shapes classifier-free guidance: needs cfg > 1
    response = sa3.post("/v1/audio/generations", json={**guided, "apg_scale": 1.0})
    assert response.status_code == 200, response.text
    assert "x-ignored-fields" not in response.headers
    # 1.0 is Stable Audio 3's own default (the reference generate()'s); another scale differs.
    assert response.content == generate(sa3, cfg_scale=4.0)
    assert generate(sa3, cfg_scale=4.0, apg_scale=0.5) != response.content
    assert generate(sa3, duration_padding_sec=6.0) == generate(sa3)  # 6 s is its default
    assert generate(sa3, duration_padding_sec=1.0) != generate(sa3)


def test_audio_in_names_the_text_fields_it_does_not_take(client: TestClient) -> None:
    name, data, kind = source_clip(2.0)
    form = {"prompt": "rain", "steps": "3", "seed": "5", "apg_scale": "1", "batch_size": "1"}
    form["duration_padding_sec"] = "6"
    response = client.post("/v1/audio/variations", data=form, files={"audio": (name, data, kind)})
    assert response.status_code == 200, response.text
    assert response.headers["x-ignored-fields"] == "apg_scale,duration_padding_sec"
    many = client.post(
        "/v1/audio/variations",
        data={**form, "batch_size": "2"},
        files={"audio": (name, data, kind)},
    )
    assert many.status_code == 422, many.text
    assert many.json()["detail"][0]["loc"] == ["body", "batch_size"]
