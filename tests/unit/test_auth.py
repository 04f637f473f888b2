"""API keys: ``ApiKeyMiddleware`` in front of a small Starlette app, driven over ASGI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from stable_audio_bento.http.middleware.auth import ApiKeyMiddleware, bearer_token, is_open
from stable_audio_bento.settings import Settings

KEYS = ["first-key", "second-key"]
OPEN = [
    "/",
    "/health",
    "/healthz",
    "/livez",
    "/readyz",
    "/metrics",
    "/ui",
    "/ui/",
    "/ui/app.js",
    "/docs.json",
    "/schema.json",
    "/v1/openapi.json",  # both API documents alike
]
PROTECTED = [
    ("POST", "/v1/audio/generate"),
    ("POST", "/v1/audio/generations"),
    ("POST", "/generate"),
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/0123"),
    ("GET", "/outputs/0123.wav"),
    ("POST", "/api/generate"),
    ("GET", "/health/"),  # only the exact probe paths are open
    ("GET", "/healthcheck"),
    ("GET", "/uix"),
]
UNAUTHORIZED = {
    "error": {
        "message": "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
        "type": "AuthenticationError",
        "param": None,
        "code": 401,
    }
}


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.method} {request.url.path}")


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def make_app(keys: list[str]) -> ApiKeyMiddleware:
    paths = sorted({*OPEN, *(p for _, p in PROTECTED)})
    routes = [Route(p, echo, methods=["GET", "POST", "OPTIONS"]) for p in paths]
    app = Starlette(routes=[*routes, WebSocketRoute("/ws", socket)])
    return ApiKeyMiddleware(app, keys=keys)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app(KEYS)) as test_client:
        yield test_client


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_paths_need_a_key(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_paths_with_a_key(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, headers={"Authorization": "Bearer first-key"})
    assert response.status_code == 200
    assert response.text == f"{method} {path}"


@pytest.mark.parametrize("path", OPEN)
def test_open_paths_need_no_key(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.text == f"GET {path}"


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_is_accepted(client: TestClient, key: str) -> None:
    assert client.get("/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-key",
        "Bearer first-ke",
        "Bearer first-key-and-more",
        "Bearer FIRST-KEY",
        "Bearer ",
        "Bearer",
        "first-key",
        "Basic first-key",
        "Token first-key",
        "Bearer first-key,second-key",
    ],
)
def test_wrong_or_malformed_credentials_are_refused(client: TestClient, header: str) -> None:
    response = client.get("/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(
    "header", ["Bearer first-key", "bearer first-key", "BEARER first-key", "Bearer  first-key "]
)
def test_bearer_scheme_is_case_insensitive_and_spaces_are_trimmed(
    client: TestClient, header: str
) -> None:
    assert client.get("/jobs", headers={"Authorization": header}).status_code == 200


def test_key_in_another_header_is_refused(client: TestClient) -> None:
    assert client.get("/jobs", headers={"X-API-Key": "first-key"}).status_code == 401


def test_cors_preflight_passes(client: TestClient) -> None:
    response = client.options("/v1/audio/generate")
    assert response.status_code == 200


def test_websockets_pass_through(client: TestClient) -> None:
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hello"


@pytest.mark.parametrize("keys", [[], [""], ["", ""]])
def test_no_keys_means_open(keys: list[str]) -> None:
    with TestClient(make_app(keys)) as client:
        for method, path in PROTECTED:
            assert client.request(method, path).status_code == 200
        assert client.get("/jobs", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_keys_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLE_AUDIO_API_KEYS", "alpha, beta")
    with TestClient(make_app(Settings().api_keys)) as client:
        assert client.get("/jobs").status_code == 401
        assert client.get("/jobs", headers={"Authorization": "Bearer beta"}).status_code == 200
        assert client.get("/jobs", headers={"Authorization": "Bearer alpha, beta"}).status_code == (
            401
        )


def test_bearer_token_parsing() -> None:
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"Authorization", b"bearer abc ")]) == "abc"
    assert bearer_token([(b"content-type", b"text/plain")]) is None
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer ")]) is None
    assert bearer_token([]) is None


def test_open_path_rules() -> None:
    assert all(is_open(path) for path in OPEN)
    assert not any(is_open(path) for _, path in PROTECTED)
    assert is_open("/ui/index.html")
    assert not is_open("/jobs/ui/")
