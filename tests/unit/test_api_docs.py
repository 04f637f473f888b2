"""Both OpenAPI documents declare what the server really answers; Starlette's 404 / 405 too."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from starlette.testclient import TestClient

from stable_audio_bento.http import create_app
from stable_audio_bento.http.errors import _methods_of
from stable_audio_bento.http.middleware.api_docs import ENVELOPE, complete, statuses


@pytest.fixture(scope="module")
def compat() -> dict[str, Any]:
    return complete(copy.deepcopy(create_app().openapi()))


def responses(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    result: dict[str, Any] = doc["paths"][path][method]["responses"]
    return result


def test_job_routes_declare_their_refusals(compat: dict[str, Any]) -> None:
    assert {"400", "401", "404", "409", "413", "422", "429", "503"} <= set(
        responses(compat, "/jobs", "post")
    )
    assert {"401", "404", "429", "503"} <= set(responses(compat, "/jobs/{job_id}", "get"))
    assert {"404", "409", "307"} <= set(responses(compat, "/jobs/{job_id}/audio", "get"))
    assert {"404"} <= set(responses(compat, "/jobs/{job_id}/cancel", "post"))
    for code in ("429", "503"):
        assert "Retry-After" in responses(compat, "/jobs", "post")[code]["headers"]
    error = responses(compat, "/jobs", "post")["413"]["content"]["application/json"]["schema"]
    assert error == ENVELOPE and "ErrorResponse" in compat["components"]["schemas"]


def test_generation_and_outputs_declare_every_audio_type(compat: dict[str, Any]) -> None:
    wanted = {"audio/wav", "audio/mpeg", "audio/flac", "audio/pcm", "audio/aac", "audio/opus"}
    outputs = responses(compat, "/outputs/{key}", "get")
    assert (
        wanted <= set(outputs["200"]["content"])
        and "application/json" not in outputs["200"]["content"]
    )
    assert wanted <= set(responses(compat, "/generate", "post")["200"]["content"])
    assert {"400", "404", "413", "429", "503"} <= set(responses(compat, "/generate", "post"))
    # FastAPI's 422 (the detail list) is kept where it is the answer.
    schema = responses(compat, "/generate", "post")["422"]["content"]["application/json"]
    assert schema["schema"]["$ref"].endswith("/HTTPValidationError")


def test_open_paths_declare_no_key_or_rate_refusals() -> None:
    assert 401 not in statuses("/health", "get", False)
    assert 429 not in statuses("/health", "get", False)
    assert statuses("/api/generate_async/status", "get", False) >= {400, 404, 500}


def test_bentoml_document_becomes_openapi_3_1_with_envelope_errors() -> None:
    doc = {
        "openapi": "3.0.2",
        "paths": {
            "/api/generate": {
                "post": {
                    "requestBody": {"content": {"application/json": {"schema": {}}}},
                    "responses": {
                        "200": {"content": {"audio/*": {}}},
                        "400": {"content": {"application/json": {"schema": {"$ref": "x"}}}},
                    },
                }
            }
        },
        "components": {"schemas": {"A": {"exclusiveMinimum": 0, "type": "number"}}},
    }
    out = complete(doc)
    assert out["openapi"] == "3.1.0"  # what its numeric exclusiveMinimum already is
    answers = out["paths"]["/api/generate"]["post"]["responses"]
    assert {"400", "401", "404", "413", "422", "429", "500", "503"} <= set(answers)
    assert answers["400"]["content"]["application/json"]["schema"] == ENVELOPE


def test_405_lists_every_method_of_the_path_and_404_is_the_envelope() -> None:
    client = TestClient(create_app(), raise_server_exceptions=False)
    response = client.request("OPTIONS", "/jobs")
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    assert response.json()["error"]["code"] == 405
    assert client.delete("/jobs/abc").headers["allow"] == "GET"
    # A literal route is not also the template beside it (/jobs/{job_id}).
    paths = {"/jobs/{job_id}": {"get": {}}, "/jobs/inpaint": {"post": {}}}
    assert _methods_of({"paths": paths}, "/jobs/inpaint") == ["POST"]
    assert _methods_of({"paths": paths}, "/jobs/abc") == ["GET"]
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "No route /no/such/route",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }
