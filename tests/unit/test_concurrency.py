"""The in-flight bound: past it a 429 with Retry-After in our envelope; probes never refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from stable_audio_bento.http.middleware.concurrency import ConcurrencyLimit


def test_past_the_limit_is_429_with_retry_after_and_probes_still_answer() -> None:
    release = asyncio.Event()
    entered = 0

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = ConcurrencyLimit(slow_app, limit=2, retry_after=3)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
            while entered < 2:
                await asyncio.sleep(0.01)
            refused = await client.post("/v1/audio/generate", json={"input": "x"})
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "3"
            assert refused.json() == {
                "error": {
                    "message": "The server is handling 2 requests at once, its limit "
                    "(STABLE_AUDIO_MAX_CONCURRENCY); retry after 3 s.",
                    "type": "RateLimitError",
                    "param": None,
                    "code": 429,
                }
            }
            for probe in ("/readyz", "/livez", "/health", "/metrics", "/docs.json"):
                assert (await client.get(probe)).status_code == 200, probe
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert limited.in_flight == 0
            assert (await client.get("/slow")).status_code == 200

    asyncio.run(scenario())
