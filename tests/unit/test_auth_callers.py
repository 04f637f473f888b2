"""Who is calling: the owner a key's jobs get, admin keys, and what an open path may see."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stable_audio_bento.http.middleware.auth import (
    ANONYMOUS,
    CALLER_SCOPE_KEY,
    OPEN_CALLER,
    ApiKeyMiddleware,
    Caller,
    caller_of,
    owner_of,
)


def call(middleware: ApiKeyMiddleware, path: str, key: str | None) -> tuple[int, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["caller"] = caller_of(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware.app = app
    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    return statuses[0], seen.get("caller")


@pytest.fixture
def keys() -> ApiKeyMiddleware:
    return ApiKeyMiddleware(lambda *_: None, keys=["alice-key", "bob-key"], admin_keys=["root"])  # type: ignore[arg-type, return-value]


def test_each_key_is_its_own_owner(keys: ApiKeyMiddleware) -> None:
    assert call(keys, "/jobs", "alice-key") == (200, Caller(owner_of("alice-key"), admin=False))
    assert call(keys, "/jobs", "bob-key") == (200, Caller(owner_of("bob-key"), admin=False))
    assert owner_of("alice-key") != owner_of("bob-key")


def test_an_admin_key_is_a_key_that_sees_everything(keys: ApiKeyMiddleware) -> None:
    status, caller = call(keys, "/jobs", "root")
    assert (status, caller) == (200, Caller(owner_of("root"), admin=True))
    assert caller.visible_owner is None


def test_unknown_keys_are_401_and_open_paths_see_no_jobs(keys: ApiKeyMiddleware) -> None:
    assert call(keys, "/jobs", "mallory")[0] == 401
    status, caller = call(keys, "/health", None)
    assert status == 200 and caller is ANONYMOUS
    assert caller.visible_owner == "" and not caller.admin  # an owner no job has


def test_without_keys_everyone_sees_every_job() -> None:
    open_server = ApiKeyMiddleware(lambda *_: None)  # type: ignore[arg-type, return-value]
    assert call(open_server, "/jobs", None) == (200, OPEN_CALLER)
    assert caller_of({}) is OPEN_CALLER and OPEN_CALLER.visible_owner is None
    assert CALLER_SCOPE_KEY not in {"type": "http"}


def test_the_owner_is_a_stable_hash_not_the_key() -> None:
    owner = owner_of("s3cr3t")
    assert owner == owner_of("s3cr3t") and len(owner) == 32 and "s3cr3t" not in owner
    int(owner, 16)
