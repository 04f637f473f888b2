"""Priorities, deadlines, the event log and webhook deliveries on a real redis-server."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stable_audio_bento.jobs import JobStore
from stable_audio_bento.jobs.redis_store import RedisJobStore
from tests.servers import redis_server
from tests.unit.test_job_queue_control import HOOK, QueueControlContract
from tests.unit.test_job_store import MakeStore, new_job


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}"


class TestRedisQueueControl(QueueControlContract):
    @pytest.fixture
    def make_store(self, redis_url: str, prefix: str) -> Iterator[MakeStore]:
        stores: list[JobStore] = []

        def make(**options: Any) -> JobStore:
            stores.append(RedisJobStore(redis_url, prefix, **options))
            return stores[-1]

        yield make
        for store in stores:
            store.close()

    def test_indexes_are_cleaned_up(
        self, make_store: MakeStore, redis_url: str, prefix: str
    ) -> None:
        store = make_store()
        job = store.create(new_job(webhook=HOOK, webhook_events=["canceled"], max_queue_seconds=60))
        store.request_cancel(job.id)
        claimed = store.claim_delivery("a", 30)
        assert claimed is not None
        store.finish_delivery(job.id, claimed[1].id, "a", ok=True)
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            assert client.zcard(f"{{{prefix}}}:deadlines") == 0  # no longer queued
            assert client.zcard(f"{{{prefix}}}:webhooks") == 0  # nothing pending
        store.purge_expired(retention_seconds=0)
        with redis.Redis.from_url(redis_url) as client:
            assert client.keys(f"*{prefix}*") == []


def test_a_record_of_the_previous_release_runs(redis_url: str, prefix: str) -> None:
    """As the previous release left it: no new fields, queued under its creation time."""
    old = new_job()
    doc = {
        k: v
        for k, v in json.loads(old.model_dump_json()).items()
        if k
        not in (
            "priority",
            "max_queue_seconds",
            "queue_deadline",
            "webhook",
            "webhook_events",
            "deliveries",
            "webhook_progress_at",
        )
    }
    p = "{" + prefix + "}"
    with redis.Redis.from_url(redis_url) as client:
        client.set(f"{p}:job:{old.id}", json.dumps(doc))
        client.zadd(f"{p}:queued", {old.id: old.created_at})
        client.zadd(f"{p}:recent", {old.id: old.created_at})
    store = RedisJobStore(redis_url, prefix)
    try:
        loaded = store.get(old.id)
        assert (loaded.priority, loaded.webhook, store.events_after(old.id)) == (0, None, [])
        store.create(new_job(priority=3))
        # Its old score (creation time) sorts before every new one: it was queued first.
        assert store.queue_position(loaded) == 1
        claimed = store.claim("w", 30)
        assert claimed is not None and claimed.id == old.id
        store.mark_succeeded(old.id, "w", result_key="k", seed=1, sample_rate=1, duration=1)
        assert [e["status"] for _, e in store.events_after(old.id)] == ["running", "succeeded"]
    finally:
        store.close()
