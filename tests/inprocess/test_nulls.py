"""In process: ``null`` is "not given" on every route, one optional field at a time.

The fields come from the schemas (``tests.unit.test_unset.optional_fields``): a field added
later is sent as null here without a line of its own. Each answer must be the answer to the
same body without the field (byte for byte where the seed is fixed).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from stable_audio_bento.http.audio_to_audio import AudioInFields
from stable_audio_bento.schemas import AudioGenerateRequest, GenerationsRequest
from tests.unit.test_unset import optional_fields
from tests.web_client import source_clip

# A body that sets a few fields (so that null replaces something) and stays quick.
BODIES: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "/v1/audio/generations": (
        GenerationsRequest,
        {"prompt": "rain", "duration": 1, "steps": 3, "seed": 4, "negative_prompt": "hum"},
    ),
    "/v1/audio/generate": (
        AudioGenerateRequest,
        {"input": "rain", "audio_length": 1, "num_inference_steps": 3, "seed": 4},
    ),
}
CASES = [(path, name) for path, (model, _) in BODIES.items() for name in optional_fields(model)]
AUDIO_IN = {"prompt": "rain", "steps": 3, "seed": 4}
AUDIO_IN_FIELDS = optional_fields(AudioInFields)


def without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != name}


@pytest.mark.parametrize(("path", "name"), CASES, ids=[f"{p}:{n}" for p, n in CASES])
def test_a_null_field_is_the_field_not_given(client: TestClient, path: str, name: str) -> None:
    body = BODIES[path][1]
    nulled = client.post(path, json={**body, name: None})
    omitted = client.post(path, json=without(body, name))
    assert nulled.status_code == omitted.status_code == 200, nulled.text
    assert "x-ignored-fields" not in nulled.headers
    if name != "seed":  # omitted, the seed is random
        assert nulled.content == omitted.content


def test_a_job_with_every_optional_field_null(client: TestClient) -> None:
    fields = dict.fromkeys(optional_fields(GenerationsRequest))
    response = client.post("/jobs", json={"prompt": "rain", **fields})
    assert response.status_code == 202, response.text
    assert response.json()["request"]["duration"] == 7.0  # the default


@pytest.mark.parametrize("name", AUDIO_IN_FIELDS)
def test_audio_in_json_null_and_form_blank_are_not_given(client: TestClient, name: str) -> None:
    filename, data, kind = source_clip(1.0)
    encoded = base64.b64encode(data).decode()
    as_json = client.post("/v1/audio/variations", json={**AUDIO_IN, name: None, "audio": encoded})
    assert as_json.status_code == 200, as_json.text
    omitted = client.post(
        "/v1/audio/variations", json={**without(AUDIO_IN, name), "audio": encoded}
    )
    form = {k: str(v) for k, v in AUDIO_IN.items()}
    blank = client.post(
        "/v1/audio/variations", data={**form, name: ""}, files={"audio": (filename, data, kind)}
    )
    assert blank.status_code == 200, blank.text
    if name != "seed":
        assert as_json.content == omitted.content == blank.content
