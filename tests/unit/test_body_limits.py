"""The body bounds at the ASGI level: what is read, what is answered, in which order.

A real Starlette app behind ``BodyLimits``, driven by hand-made ASGI messages, so the test sees
exactly which messages the middleware asks for (uvicorn sends the 100 Continue on the first
``receive``) and what it sends. The e2e tier checks the same with httpx and curl against
``bentoml serve`` (``tests/e2e/test_body_limits.py``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stable_audio_bento.http.middleware.body_limits import BodyLimits


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


APP = Starlette(routes=[Route("/echo", echo, methods=["POST"])])


def scope(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }


def run(
    headers: dict[str, str],
    chunks: list[bytes],
    delay: float = 0.0,
    **options: Any,
) -> tuple[list[dict[str, Any]], int]:
    """Send ``chunks`` (``delay`` s apart); the messages sent back and the chunks read."""
    sent: list[dict[str, Any]] = []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= len(chunks):
            await asyncio.sleep(3600)  # nothing more from this client
        await asyncio.sleep(delay)
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    limits = BodyLimits(APP, max_body_bytes=100, max_upload_bytes=1000, **options)
    asyncio.run(asyncio.wait_for(limits(scope(headers), receive, send), 10))
    return sent, read


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    start, *bodies = sent
    body = b"".join(m.get("body", b"") for m in bodies)
    assert not bodies[-1].get("more_body", False)
    return start["status"], dict(start["headers"]), json.loads(body)


JSON = {"content-type": "application/json"}


def test_a_body_within_the_limit_passes() -> None:
    sent, read = run({**JSON, "content-length": "50"}, [b"x" * 50])
    assert answer(sent)[2] == {"bytes": 50} and read == 1


def test_expect_100_continue_gets_the_413_and_no_read() -> None:
    headers = {**JSON, "content-length": "5000", "expect": "100-continue"}
    sent, read = run(headers, [b"x" * 1000] * 5)
    status, head, body = answer(sent)
    assert (status, read) == (413, 0)  # never asked for the body: no 100 goes out
    assert head[b"connection"] == b"close"
    assert "STABLE_AUDIO_MAX_BODY_KB" in body["error"]["message"]


def test_without_expect_the_rest_is_drained_after_the_413_starts() -> None:
    sent, read = run({**JSON, "content-length": "5000"}, [b"x" * 1000] * 5)
    assert (sent[0]["status"], read) == (413, 5)
    assert sent[1]["more_body"] is True  # the answer is out before the drain


def test_the_drain_is_bounded() -> None:
    headers = {**JSON, "content-length": "500000"}
    sent, read = run(headers, [b"x" * 1000] * 500, drain_max_bytes=10_000)
    assert answer(sent)[0] == 413 and read == 11  # just past the bound, then closed


def test_a_streamed_body_past_the_limit_is_cut_off() -> None:
    upload = {"content-type": "application/octet-stream"}
    sent, read = run(upload, [b"x" * 400] * 10)
    status, _, body = answer(sent)
    assert status == 413 and "STABLE_AUDIO_MAX_UPLOAD_MB" in body["error"]["message"]
    assert read == 10  # 3 read by the route, the rest drained


def test_a_slow_body_is_a_408_at_the_deadline() -> None:
    sent, read = run({**JSON, "content-length": "90"}, [b"x"] * 90, delay=0.05, body_timeout=0.5)
    status, head, body = answer(sent)
    assert status == 408 and head[b"connection"] == b"close"
    assert "STABLE_AUDIO_BODY_TIMEOUT" in body["error"]["message"]
    assert 5 <= read <= 12
