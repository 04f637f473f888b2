"""Webhook delivery for real: a JobWorker, the WebhookSender and an HTTP receiver that verifies
every signature, on SQLite and on a real Redis.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stable_audio_bento.jobs import Job, JobStore, JobWorker, SQLiteJobStore
from stable_audio_bento.jobs.redis_store import RedisJobStore
from stable_audio_bento.jobs.storage import LocalStorage
from stable_audio_bento.jobs.webhooks import WebhookSender
from tests.integration.test_worker import FakeModel, wait_for
from tests.servers import free_ports, redis_server
from tests.webhook_receiver import SECRET, webhook_receiver

ALLOW = ["127.0.0.1"]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "jobs.sqlite3"), "")
    return ("redis", request.getfixturevalue("redis_url"), f"hooks-{secrets.token_hex(4)}")


def open_store(spec: tuple[str, str, str], **options: Any) -> JobStore:
    kind, where, prefix = spec
    if kind == "sqlite":
        return SQLiteJobStore(where, **options)
    return RedisJobStore(where, prefix, **options)


@pytest.fixture
def store(store_spec: tuple[str, str, str]) -> Iterator[JobStore]:
    made = open_store(store_spec, webhook_progress_seconds=0)
    yield made
    made.close()


def record(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "step": job.progress_step}


@pytest.fixture
def start_sender() -> Iterator[Callable[..., WebhookSender]]:
    senders: list[WebhookSender] = []

    def start(store: JobStore, **options: Any) -> WebhookSender:
        options = {
            "allow_hosts": ALLOW,
            "timeout": 2.0,
            "retry_seconds": 0.2,
            "poll_interval": 0.05,
            **options,
        }
        sender = WebhookSender(store, SECRET, record, **options)
        sender.start()
        senders.append(sender)
        return sender

    yield start
    for sender in senders:
        sender.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., JobWorker]]:
    workers: list[JobWorker] = []

    def start(store: JobStore) -> JobWorker:
        worker = JobWorker(
            store,
            LocalStorage(tmp_path / "outputs"),
            FakeModel(),
            lease_seconds=2.0,
            poll_interval=0.05,
            heartbeat_interval=0.05,
        )
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=5)


def hooked(url: str, events: list[str], **request: Any) -> Job:
    return Job(model="demo", request=request, webhook=url, webhook_events=events)


def all_delivered(job: Job) -> bool:
    return bool(job.deliveries) and all(d.status == "delivered" for d in job.deliveries)


def test_a_jobs_life_arrives_signed_in_order(
    store: JobStore,
    start_worker: Callable[..., JobWorker],
    start_sender: Callable[..., WebhookSender],
) -> None:
    with webhook_receiver() as receiver:
        events = ["start", "progress", "completed", "failed"]
        job = store.create(hooked(receiver.url, events, steps=4, step_seconds=0.15))
        start_sender(store)
        start_worker(store)
        done = wait_for(store, job.id, lambda j: j.finished and all_delivered(j), timeout=30)
        got = receiver.unique()
        types = [r.type for r in got]
        assert types[0] == "job.start" and types[-1] == "job.completed", types
        assert set(types[1:-1]) == {"job.progress"}, types  # at least one progress
        assert receiver.forged == 0
        assert all(r.data["id"] == job.id for r in got)
        assert got[-1].data["status"] == "succeeded"
        assert [d.id for d in done.deliveries] == [r.id for r in got]
        for delivery in done.deliveries:
            assert (delivery.attempts, delivery.response_status) == (1, 204)
            assert delivery.id.startswith("msg_")
        # The headers the spec names; the timestamp is now (receivers refuse old ones).
        headers = got[-1].headers
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
        assert headers["webhook-signature"].startswith("v1,")


def test_a_receiver_down_then_up_gets_it_once(
    store: JobStore, start_sender: Callable[..., WebhookSender]
) -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/hook"
    job = store.create(hooked(url, ["canceled"]))
    store.request_cancel(job.id)
    start_sender(store, retry_seconds=0.3)
    failing = wait_for(store, job.id, lambda j: j.deliveries[0].attempts >= 2, timeout=20)
    first = failing.deliveries[0]
    assert first.status == "pending" and first.error is not None, first
    with webhook_receiver(port) as receiver:
        got = receiver.wait_for(1)
        done = wait_for(store, job.id, all_delivered, timeout=20)
    assert [r.type for r in got] == ["job.canceled"]
    assert receiver.attempts == [first.id]  # delivered once, under its one id
    assert done.deliveries[0].attempts >= 3


def test_a_receiver_that_answers_500_is_retried(
    store: JobStore, start_sender: Callable[..., WebhookSender]
) -> None:
    with webhook_receiver(fail_first=2) as receiver:
        job = store.create(hooked(receiver.url, ["canceled"]))
        store.request_cancel(job.id)
        start_sender(store)
        done = wait_for(store, job.id, all_delivered, timeout=20)
    delivery = done.deliveries[0]
    assert (delivery.attempts, delivery.response_status) == (3, 204)
    assert receiver.attempts == [delivery.id] * 3


def test_a_hanging_receiver_does_not_stop_the_worker(
    store: JobStore,
    start_worker: Callable[..., JobWorker],
    start_sender: Callable[..., WebhookSender],
) -> None:
    with webhook_receiver(hang=True) as receiver:
        start_sender(store, timeout=0.5, threads=1)
        start_worker(store)
        started = time.monotonic()
        jobs = [
            store.create(hooked(receiver.url, ["start", "completed"], steps=2)) for _ in range(4)
        ]
        for job in jobs:
            assert wait_for(store, job.id, lambda j: j.finished, timeout=15).status == "succeeded"
        assert time.monotonic() - started < 15
        hung = wait_for(store, jobs[0].id, lambda j: any(d.error for d in j.deliveries), timeout=15)
        assert "no answer within 0.5 s" in str([d.error for d in hung.deliveries])
        assert receiver.received == []


def test_a_target_that_turned_private_is_refused_at_send_time(
    store: JobStore, start_sender: Callable[..., WebhookSender]
) -> None:
    with webhook_receiver() as receiver:
        job = store.create(hooked(receiver.url, ["canceled"]))
        store.request_cancel(job.id)
        start_sender(store, allow_hosts=[])  # 127.0.0.1 is not allowed by this sender
        done = wait_for(store, job.id, lambda j: j.deliveries[0].status == "failed", timeout=10)
    assert "non-public address" in str(done.deliveries[0].error)
    assert done.deliveries[0].attempts == 1  # never retried
    assert receiver.attempts == []


def _sender_process(spec: tuple[str, str, str]) -> None:
    store = open_store(spec)
    WebhookSender(store, SECRET, record, allow_hosts=ALLOW, timeout=1.0, poll_interval=0.05).start()
    time.sleep(120)


def test_a_delivery_survives_a_killed_sender(
    store_spec: tuple[str, str, str], store: JobStore, start_sender: Callable[..., WebhookSender]
) -> None:
    with webhook_receiver(hang=True) as receiver:
        job = store.create(hooked(receiver.url, ["canceled"]))
        store.request_cancel(job.id)
        process = multiprocessing.get_context("spawn").Process(
            target=_sender_process, args=(store_spec,)
        )
        process.start()
        try:
            deadline = time.monotonic() + 30
            while not receiver.attempts:  # the other process is mid-attempt
                assert time.monotonic() < deadline, "the sender process never sent"
                time.sleep(0.05)
        finally:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
            process.join(10)
        leased = store.get(job.id).deliveries[0]
        assert (leased.attempts, leased.claimed_by is not None) == (1, True)
        receiver.hang = False
        start_sender(store, timeout=1.0)  # another process's sender, after the lease ends
        got = receiver.wait_for(1, timeout=30)
        done = wait_for(store, job.id, all_delivered, timeout=10)
    assert [r.id for r in got] == [leased.id]
    assert receiver.attempts == [leased.id, leased.id]  # the same id again: at least once
    assert done.deliveries[0].attempts == 2
