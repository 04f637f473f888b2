"""BentoML's own error bodies on the native APIs, rewritten into the documented envelope."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from stable_audio_bento.http.middleware.native_errors import (
    Form,
    FormFile,
    NativeApiErrors,
    form_validator,
    form_values,
    task_validator,
    to_envelope,
)

OURS = {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError"}}
OURS["error"].update(param="model", code=404)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # A BentoMLException 4xx: our envelope as a JSON string in a one-item list.
        (404, [{"error": json.dumps(OURS)}], OURS),
        (
            400,
            {
                "error": "1 validation error for Input",
                "detail": [{"type": "missing", "loc": ["input"], "msg": "Field required"}],
            },
            {
                "error": {
                    "message": "input: Field required",
                    "type": "BadRequestError",
                    "param": "input",
                    "code": 400,
                }
            },
        ),
        (
            500,
            {"error": "An unexpected error has occurred, please check the server log."},
            {
                "error": {
                    "message": "An unexpected error has occurred, please check the server log.",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            },
        ),
        (
            404,
            {"error": "task_id not found"},
            {
                "error": {
                    "message": "task_id not found",
                    "type": "NotFoundError",
                    "param": "task_id",
                    "code": 404,
                }
            },
        ),
        (429, OURS, OURS),  # already ours: unchanged
    ],
)
def test_bentoml_shapes_become_the_envelope(status: int, body: Any, expected: Any) -> None:
    assert json.loads(to_envelope(status, json.dumps(body).encode())) == expected


def test_plain_text_becomes_the_envelope() -> None:
    out = json.loads(to_envelope(503, b"Service Unavailable"))
    assert out["error"] == {
        "message": "Service Unavailable",
        "type": "ServiceUnavailableError",
        "param": None,
        "code": 503,
    }


def run(
    middleware: NativeApiErrors, path: str, body: bytes, content_type: str = ""
) -> tuple[int, dict[str, str], bytes]:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [(b"content-type", content_type.encode())] if content_type else []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def bentoml_like(status: int, body: Any, content_type: bytes = b"application/json") -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(raw))]
        headers.append((b"x-request-id", b"r1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    return app


def test_errors_on_native_paths_are_rewritten_and_successes_pass() -> None:
    wrapped = NativeApiErrors(bentoml_like(404, [{"error": json.dumps(OURS)}]))
    status, headers, body = run(wrapped, "/api/generate", b"{}")
    assert (status, json.loads(body)) == (404, OURS)
    assert headers["content-length"] == str(len(body)) and headers["x-request-id"] == "r1"
    audio = NativeApiErrors(bentoml_like(200, b"RIFF....", b"audio/wav"))
    assert run(audio, "/api/generate", b"{}")[2] == b"RIFF...."
    other = NativeApiErrors(bentoml_like(404, {"detail": "Not Found"}))
    assert json.loads(run(other, "/jobs/x", b"")[2]) == {"detail": "Not Found"}  # not native


def test_a_task_is_validated_at_submit() -> None:
    from pydantic import BaseModel, ConfigDict, Field

    from stable_audio_bento.errors import InvalidRequestError

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid")
        input: str = Field(min_length=1)
        audio_length: float = 1.0

    def plan(raw: bytes) -> None:
        body = Body.model_validate_json(raw)
        if body.audio_length > 10:
            raise InvalidRequestError("audio_length must be at most 10", "audio_length")

    ran: list[bool] = []

    async def task_app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(True)
        await bentoml_like(200, {"task_id": "t", "status": "in_progress"})(scope, receive, send)

    middleware = NativeApiErrors(task_app, validate=task_validator(plan))
    status, _, body = run(middleware, "/api/generate_async/submit", b'{"audio_length": 2}')
    assert status == 400 and json.loads(body)["error"]["param"] == "input"
    status, _, body = run(
        middleware, "/api/generate_async/submit", b'{"input": "x", "audio_length": 20}'
    )
    assert status == 400 and json.loads(body)["error"] == {
        "message": "audio_length must be at most 10",
        "type": "BadRequestError",
        "param": "audio_length",
        "code": 400,
    }
    status, _, body = run(middleware, "/api/generate_async/submit", b'{"input": "x\\ud800"}')
    assert status == 400 and json.loads(body)["error"]["param"] == "input"
    assert ran == []  # none reached BentoML's task store
    status, _, body = run(middleware, "/api/generate_async/submit", b'{"input": "x"}')
    assert (status, json.loads(body)["task_id"], ran) == (200, "t", [True])


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/api/generate_async/submit", "POST"),
        ("GET", "/api/generate", "POST"),
        ("POST", "/api/generate_async/status", "GET"),
        ("GET", "/api/generate_async/cancel", "PUT"),
    ],
)
def test_undeclared_methods_on_native_paths_are_405(method: str, path: str, allowed: str) -> None:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    middleware = NativeApiErrors(bentoml_like(200, {}))
    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["status"] == 405
    assert dict(sent[0]["headers"])[b"allow"] == allowed.encode()
    assert json.loads(sent[1]["body"])["error"]["code"] == 405


def test_plain_text_errors_elsewhere_become_the_envelope() -> None:
    plain = NativeApiErrors(bentoml_like(404, b"Not Found", b"text/plain; charset=utf-8"))
    status, headers, body = run(plain, "/jobs/a\nb/cancel", b"")
    assert (status, headers["content-type"]) == (404, "application/json")
    assert json.loads(body)["error"]["type"] == "NotFoundError"
    ours = NativeApiErrors(bentoml_like(404, {"error": {"message": "m", "type": "NotFoundError"}}))
    assert json.loads(run(ours, "/jobs/x", b"")[2]) == {
        "error": {"message": "m", "type": "NotFoundError"}
    }


def multipart(
    fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
) -> tuple[bytes, str]:
    import httpx

    request = httpx.Request("POST", "http://t/", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def test_a_multipart_task_is_validated_at_submit_as_bentoml_reads_it() -> None:
    from stable_audio_bento.errors import InvalidRequestError

    seen: list[dict[str, Any]] = []

    def plan(form: Form) -> None:
        values = form_values(form, frozenset({"audio"}))
        seen.append(values)
        if "prompt" not in values:
            raise InvalidRequestError("prompt is required", "prompt")
        (audio,) = values["audio"]
        assert isinstance(audio, FormFile)
        if not audio.data.startswith(b"RIFF"):
            raise InvalidRequestError("audio could not be decoded", "audio")

    ran: list[bool] = []

    async def task_app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        ran.append(b"RIFF" in body)  # BentoML gets the whole body, as sent
        await bentoml_like(200, {"task_id": "t", "status": "in_progress"})(scope, receive, send)

    middleware = NativeApiErrors(
        task_app, validate_form=form_validator(plan), max_body_bytes=10_000
    )
    submit = "/api/audio_to_audio_async/submit"
    wav = ("a.wav", b"RIFF" + b"\0" * 100, "audio/wav")
    body, kind = multipart({"steps": "4"}, {"audio": wav})
    status, _, out = run(middleware, submit, body, kind)
    assert status == 400 and json.loads(out)["error"]["param"] == "prompt"
    body, kind = multipart({"prompt": "rain"}, {"audio": ("a.wav", b"junk", "audio/wav")})
    status, _, out = run(middleware, submit, body, kind)
    assert status == 400 and json.loads(out)["error"]["param"] == "audio"
    huge, kind = multipart({"prompt": "rain"}, {"audio": ("a.wav", b"RIFF" * 5000, "audio/wav")})
    status, _, out = run(middleware, submit, huge, kind)
    assert status == 413 and json.loads(out)["error"]["param"] == "body"
    status, _, out = run(middleware, submit, b"--nope", "multipart/form-data; boundary=x")
    assert status == 400, out  # unreadable (or read as empty, and refused): never queued
    assert ran == []
    body, kind = multipart({"prompt": "rain", "steps": "4", "seed": "abc"}, {"audio": wav})
    status, _, out = run(middleware, submit, body, kind)
    assert (status, json.loads(out)["task_id"], ran) == (200, "t", [True])
    # Text parts are JSON when they parse (BentoML's reading), else text.
    assert {k: v for k, v in seen[-1].items() if k != "audio"} == {
        "prompt": "rain",
        "steps": 4,
        "seed": "abc",
    }
