"""The request guard in front of every route: hostile bodies get a 4xx envelope, never a 500.

A real ASGI app behind it (a Starlette route that echoes the JSON it parsed), driven by
starlette's TestClient.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from stable_audio_bento.http.middleware.guard import RequestGuard, parse_strict_json


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body), "content_type": request.headers.get("content-type")})


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = Starlette(routes=[Route("/echo", echo, methods=["POST", "GET"])])
    guarded = RequestGuard(app, max_body_bytes=16384, max_upload_bytes=4096, max_prompt_chars=50)
    return TestClient(guarded)


def post(client: TestClient, raw: str | bytes, content_type: str = "application/json") -> Any:
    return client.post("/echo", content=raw, headers={"content-type": content_type})


def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == response.status_code
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("raw", "param", "says"),
    [
        ('{"input":"rain","audio_length":NaN}', "audio_length", "got NaN"),
        ('{"input":"rain","audio_length":Infinity}', "audio_length", "got Infinity"),
        ('{"speed":-Infinity}', "speed", "got -Infinity"),
        ('{"duration":1e400}', "duration", "a number too large"),
        ('{"sampler_kwargs":{"eta":NaN}}', "sampler_kwargs.eta", "finite number"),
        ('{"regions":[1, [2, NaN]]}', "regions[1][1]", "finite number"),
        ('{"input":"rain\\ud800","audio_length":1}', "input", "lone surrogate \\ud800"),
        ('{"prompt":"x\\udfff y"}', "prompt", "not valid Unicode"),
        ('{"in\\ud800put":"x"}', None, "not valid Unicode"),
        ("NaN", None, "the body must be a finite number"),
        ('{"input": ', None, "not valid JSON"),
        ("not json", None, "not valid JSON: Expecting value (line 1, column 1)"),
        ('{"a":1,}', None, "not valid JSON"),
        ('{"n":' + "9" * 5000 + "}", None, "not JSON this server reads"),
        ("[" * 5000 + "]" * 5000, None, "nests arrays or objects too deeply"),
    ],
)
def test_bodies_no_client_can_mean_are_400_naming_the_field(
    client: TestClient, raw: str, param: str | None, says: str
) -> None:
    response = post(client, raw.encode("utf-8", "surrogatepass"))
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["type"], error["param"]) == ("BadRequestError", param)
    assert says in error["message"]


def test_invalid_utf8_is_400(client: TestClient) -> None:
    error = error_of(post(client, b'{"input": "\xff\xfe"}'))
    assert "not UTF-8" in error["message"]


def test_a_body_without_content_type_is_checked_as_json(client: TestClient) -> None:
    response = client.post("/echo", content=b'{"x": NaN}')
    assert response.status_code == 400 and error_of(response)["param"] == "x"


def test_good_json_reaches_the_app_unchanged(client: TestClient) -> None:
    raw = json.dumps({"input": "rain é 🌧", "audio_length": 1.5, "n": [1, 2.5, None]})
    response = post(client, raw)
    assert response.status_code == 200
    assert response.json()["bytes"] == len(raw.encode())


@pytest.mark.parametrize("name", ["input", "prompt", "negative_prompt"])
def test_a_prompt_past_the_limit_is_422_before_the_app(client: TestClient, name: str) -> None:
    response = post(client, json.dumps({name: "x" * 51}))
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", name]
    assert detail["type"] == "string_too_long" and detail["ctx"] == {"max_length": 50}
    assert post(client, json.dumps({name: "x" * 50})).status_code == 200


def test_a_large_json_body_is_413_by_its_declared_length(client: TestClient) -> None:
    response = post(client, json.dumps({"input": "x" * 20000}))
    assert response.status_code == 413
    error = error_of(response)
    assert (error["param"], error["type"]) == ("body", "BadRequestError")
    assert "larger than 16384 bytes" in error["message"] and "MAX_BODY_KB" in error["message"]


def test_a_large_streamed_body_is_413_without_a_length(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 200

    response = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_uploads_get_their_own_bound(client: TestClient) -> None:
    small = client.post("/echo", files={"audio": ("a.wav", b"x" * 2000)})
    assert small.status_code == 200 and small.json()["bytes"] > 2000
    big = client.post("/echo", files={"audio": ("a.wav", b"x" * 5000)})
    assert big.status_code == 413 and "MAX_UPLOAD_MB" in error_of(big)["message"]

    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    streamed = client.post("/echo", content=chunks(), headers={"content-type": "audio/wav"})
    assert streamed.status_code == 413


def test_gets_pass_untouched(client: TestClient) -> None:
    assert client.get("/echo").status_code == 200


def test_parse_strict_json_returns_the_value() -> None:
    assert parse_strict_json(b'{"a": [1, 2.5, "\\u00e9"]}') == {"a": [1, 2.5, "é"]}


def test_multipart_without_a_boundary_is_400(client: TestClient) -> None:
    response = client.post("/echo", content=b"x", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 400 and "boundary" in error_of(response)["message"]
