"""The JobStore contract against a real redis-server, plus what only Redis has to get right."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stable_audio_bento.jobs import JobStore, job_store_from_settings
from stable_audio_bento.jobs.redis_store import RedisJobStore
from stable_audio_bento.settings import Settings
from tests.servers import redis_server
from tests.unit.test_job_store import JobStoreContract, MakeStore, new_job


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}"


class TestRedisJobStore(JobStoreContract):
    @pytest.fixture
    def make_store(self, redis_url: str, prefix: str) -> Iterator[MakeStore]:
        stores: list[JobStore] = []

        def make(**options: Any) -> JobStore:
            stores.append(RedisJobStore(redis_url, prefix, **options))
            return stores[-1]

        yield make
        for store in stores:
            store.close()

    def test_purging_everything_leaves_no_keys(
        self, make_store: MakeStore, redis_url: str, prefix: str
    ) -> None:
        store = make_store()
        for i in range(3):
            job = store.create(new_job(idempotency_key=f"k{i}"))
            store.request_cancel(job.id)
        store.purge_expired(retention_seconds=0)
        with redis.Redis.from_url(redis_url) as client:
            assert client.keys(f"*{prefix}*") == []

    def test_all_keys_share_one_cluster_slot(
        self, make_store: MakeStore, redis_url: str, prefix: str
    ) -> None:
        store = make_store()
        job = store.create(new_job(idempotency_key="k"))
        store.claim("w", lease_seconds=30)
        store.request_cancel(job.id)
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            keys = client.keys(f"*{prefix}*")
        assert len(keys) >= 4
        assert all(key.startswith("{" + prefix + "}:") for key in keys)

    def test_settings_choose_redis(self, redis_url: str, tmp_path: Path) -> None:
        settings = Settings(output_dir=tmp_path, job_store="redis", redis_url=redis_url)
        store = job_store_from_settings(settings)
        assert isinstance(store, RedisJobStore)
        assert store.count_queued() >= 0
        store.close()
