"""Job ownership against a real redis-server (the same contract as SQLite's)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from stable_audio_bento.jobs import JobStore
from stable_audio_bento.jobs.redis_store import RedisJobStore
from tests.servers import redis_server
from tests.unit.test_job_store import MakeStore, new_job
from tests.unit.test_job_store_owners import ALICE, OwnerContract


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


class TestRedisOwners(OwnerContract):
    @pytest.fixture
    def make_store(self, redis_url: str) -> Iterator[MakeStore]:
        prefix = f"owners-{secrets.token_hex(4)}"
        stores: list[JobStore] = []

        def make(**options: Any) -> JobStore:
            stores.append(RedisJobStore(redis_url, prefix, **options))
            return stores[-1]

        yield make
        for store in stores:
            store.close()

    def test_purge_leaves_no_owner_keys(self, make_store: MakeStore, redis_url: str) -> None:
        import redis

        store = make_store()
        job = store.create(new_job(owner=ALICE, idempotency_key="k"))
        assert store.claim("w", lease_seconds=30) is not None
        store.mark_failed(job.id, "w", "boom")
        store.purge_expired(retention_seconds=-1)
        assert isinstance(store, RedisJobStore)
        with redis.Redis.from_url(redis_url) as client:
            assert client.keys(f"{store._p}*") == []
