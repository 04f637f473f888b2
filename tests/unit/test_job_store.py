"""The JobStore contract, run here against SQLite and in integration/ against a real Redis.

``JobStoreContract`` holds the tests; a store's test class inherits it and supplies
``make_store(**options)``. Stores made in one test share state (one file / one Redis prefix),
so two of them behave like two processes or replicas.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stable_audio_bento.errors import JobNotFoundError, QueueFullError
from stable_audio_bento.jobs import Job, JobStore, SQLiteJobStore, job_store_from_settings
from stable_audio_bento.settings import Settings

MakeStore = Callable[..., JobStore]


def new_job(**fields: Any) -> Job:
    return Job(model="demo", request={"prompt": "rain on a tin roof", "duration": 1.0}, **fields)


def claim_all(store: JobStore, worker_id: str, work_seconds: float = 0.0) -> list[str]:
    claimed = []
    while (job := store.claim(worker_id, lease_seconds=30)) is not None:
        claimed.append(job.id)
        time.sleep(work_seconds)  # a real worker runs the job before it claims the next
    return claimed


class JobStoreContract:
    @pytest.fixture
    def make_store(self) -> MakeStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, make_store: MakeStore) -> JobStore:
        return make_store()

    def test_create_then_get(self, store: JobStore) -> None:
        created = store.create(new_job(response_format="flac"))
        got = store.get(created.id)
        assert got == created
        assert (got.status, got.attempts, got.response_format) == ("queued", 0, "flac")
        assert len(got.id) == 32
        assert got.request == {"prompt": "rain on a tin roof", "duration": 1.0}

    def test_get_unknown(self, store: JobStore) -> None:
        with pytest.raises(JobNotFoundError, match=r"Job `nope` does not exist\."):
            store.get("nope")

    def test_list_recent_is_newest_first(self, store: JobStore) -> None:
        ids = [store.create(new_job()).id for _ in range(5)]
        assert [job.id for job in store.list_recent(3)] == ids[:1:-1]
        assert len(store.list_recent()) == 5

    def test_same_idempotency_key_returns_the_existing_job(self, store: JobStore) -> None:
        first = store.create(new_job(idempotency_key="client-42"))
        again = store.create(new_job(idempotency_key="client-42"))
        other = store.create(new_job(idempotency_key="client-43"))
        assert again == first
        assert other.id != first.id
        assert store.count_queued() == 2

    def test_queue_bound(self, make_store: MakeStore) -> None:
        store = make_store(max_queued=3)
        for _ in range(3):
            store.create(new_job(idempotency_key=f"k{_}"))
        with pytest.raises(QueueFullError, match="The job queue is full") as info:
            store.create(new_job())
        assert info.value.retry_after == store.retry_after > 0
        # Replaying a request that is already queued is not a new job: still accepted.
        assert store.create(new_job(idempotency_key="k0")).idempotency_key == "k0"
        assert store.claim("w1", lease_seconds=30) is not None
        store.create(new_job())
        assert store.count_queued() == 3

    def test_concurrent_creates_never_exceed_the_bound(self, make_store: MakeStore) -> None:
        replicas = [make_store(max_queued=5), make_store(max_queued=5)]

        def create(i: int) -> bool:
            try:
                replicas[i % 2].create(new_job())
            except QueueFullError:
                return False
            return True

        with ThreadPoolExecutor(8) as pool:
            accepted = list(pool.map(create, range(40)))
        assert sum(accepted) == 5
        assert replicas[0].count_queued() == 5

    def test_concurrent_creates_with_one_key_make_one_job(self, make_store: MakeStore) -> None:
        replicas = [make_store(), make_store()]
        with ThreadPoolExecutor(8) as pool:
            jobs = list(
                pool.map(lambda i: replicas[i % 2].create(new_job(idempotency_key="k")), range(16))
            )
        assert len({job.id for job in jobs}) == 1
        assert replicas[0].count_queued() == 1

    def test_claim_takes_the_oldest_job_under_a_lease(self, store: JobStore) -> None:
        first, second = store.create(new_job()), store.create(new_job())
        before = time.time()
        claimed = store.claim("w1", lease_seconds=30)
        assert claimed is not None and claimed.id == first.id
        assert (claimed.status, claimed.lease_owner, claimed.attempts) == ("running", "w1", 1)
        assert claimed.lease_expires_at is not None and claimed.lease_expires_at > before + 20
        assert claimed.started_at is not None
        assert store.get(first.id) == claimed
        assert store.count_queued() == 1
        assert store.claim("w2", lease_seconds=30) == store.get(second.id)
        assert store.claim("w3", lease_seconds=30) is None

    def test_concurrent_claims_never_share_a_job(self, make_store: MakeStore) -> None:
        replicas = [make_store(max_queued=100), make_store(max_queued=100)]
        ids = {replicas[0].create(new_job()).id for _ in range(60)}
        barrier = threading.Barrier(6)

        def worker(i: int) -> list[str]:
            barrier.wait()
            return claim_all(replicas[i % 2], f"w{i}")

        with ThreadPoolExecutor(6) as pool:
            claimed = list(pool.map(worker, range(6)))
        flat = [job_id for ids_ in claimed for job_id in ids_]
        assert sorted(flat) == sorted(ids)  # each job exactly once
        assert all(replicas[0].get(job_id).attempts == 1 for job_id in ids)

    def test_heartbeat_extends_the_lease_and_records_progress(self, store: JobStore) -> None:
        store.create(new_job())
        claimed = store.claim("w1", lease_seconds=5)
        assert claimed is not None and claimed.lease_expires_at is not None
        beat = store.heartbeat(claimed.id, "w1", lease_seconds=60, progress=(3, 10))
        assert beat is not None and beat.lease_expires_at is not None
        assert beat.lease_expires_at > claimed.lease_expires_at + 50
        assert (store.get(claimed.id).progress_step, beat.progress_total) == (3, 10)
        assert store.heartbeat(claimed.id, "someone-else", lease_seconds=60) is None

    def test_expired_lease_is_reclaimed_and_the_stale_owner_is_locked_out(
        self, store: JobStore
    ) -> None:
        job = store.create(new_job())
        assert store.claim("w1", lease_seconds=30) is not None
        assert store.claim("w2", lease_seconds=30) is None  # lease still live
        store.heartbeat(job.id, "w1", lease_seconds=0.2)
        time.sleep(0.3)
        reclaimed = store.claim("w2", lease_seconds=30)
        assert reclaimed is not None and reclaimed.id == job.id
        assert (reclaimed.attempts, reclaimed.lease_owner) == (2, "w2")
        assert store.heartbeat(job.id, "w1", lease_seconds=30) is None
        stale = dict(result_key="stale.wav", seed=1, sample_rate=44100, duration=1.0)
        assert not store.mark_succeeded(job.id, "w1", **stale)  # type: ignore[arg-type]
        assert not store.mark_failed(job.id, "w1", "stale")
        assert store.mark_succeeded(
            job.id, "w2", result_key="fresh.wav", seed=7, sample_rate=44100, duration=1.5
        )
        done = store.get(job.id)
        assert (done.status, done.result_key, done.seed, done.duration) == (
            "succeeded",
            "fresh.wav",
            7,
            1.5,
        )
        assert done.finished_at is not None and done.lease_owner is None
        assert not store.mark_failed(job.id, "w2", "too late")

    def test_a_job_that_keeps_killing_workers_fails(self, make_store: MakeStore) -> None:
        store = make_store(max_attempts=2)
        job = store.create(new_job())
        for _ in range(2):
            assert store.claim("w", lease_seconds=0.1) is not None
            time.sleep(0.2)
        assert store.claim("w", lease_seconds=0.1) is None
        failed = store.get(job.id)
        assert (failed.status, failed.attempts) == ("failed", 2)
        assert failed.error == "Job abandoned: its worker stopped responding 2 times (limit 2)."

    def test_mark_failed_keeps_the_reason_and_fallback(self, store: JobStore) -> None:
        job = store.create(new_job())
        store.claim("w1", lease_seconds=30)
        assert store.mark_failed(job.id, "w1", "disk full", fallback_path="/tmp/x.wav")
        failed = store.get(job.id)
        assert (failed.status, failed.error, failed.fallback_path) == (
            "failed",
            "disk full",
            "/tmp/x.wav",
        )

    def test_cancel_queued_job_is_immediate(self, store: JobStore) -> None:
        job = store.create(new_job())
        canceled = store.request_cancel(job.id)
        assert canceled.status == "canceled" and canceled.finished_at is not None
        assert store.claim("w1", lease_seconds=30) is None
        assert store.count_queued() == 0

    def test_cancel_running_job_is_seen_by_its_worker(self, store: JobStore) -> None:
        job = store.create(new_job())
        store.claim("w1", lease_seconds=30)
        flagged = store.request_cancel(job.id)
        assert (flagged.status, flagged.cancel_requested) == ("running", True)
        beat = store.heartbeat(job.id, "w1", lease_seconds=30)
        assert beat is not None and beat.cancel_requested
        assert store.mark_canceled(job.id, "w1")
        assert store.get(job.id).status == "canceled"
        assert store.request_cancel(job.id).status == "canceled"  # finished: no change
        with pytest.raises(JobNotFoundError):
            store.request_cancel("missing")

    def test_cancel_requested_job_of_a_dead_worker_is_not_rerun(self, store: JobStore) -> None:
        job = store.create(new_job())
        store.claim("w1", lease_seconds=0.1)
        store.request_cancel(job.id)
        time.sleep(0.2)
        assert store.claim("w2", lease_seconds=30) is None
        assert store.get(job.id).status == "canceled"

    def test_release_requeues_without_counting_an_attempt(self, store: JobStore) -> None:
        job = store.create(new_job())
        store.claim("w1", lease_seconds=30)
        assert not store.release(job.id, "w2")
        assert store.release(job.id, "w1")
        released = store.get(job.id)
        assert (released.status, released.attempts, released.lease_owner) == ("queued", 0, None)
        again = store.claim("w2", lease_seconds=30)
        assert again is not None and again.attempts == 1

    def test_purge_removes_only_jobs_finished_before_the_retention(self, store: JobStore) -> None:
        old, new, waiting, running = (store.create(new_job(idempotency_key=k)) for k in "abcd")

        def succeed(job: Job) -> None:
            assert store.claim("w", lease_seconds=30) == store.get(job.id)
            key = f"{job.id}.wav"
            store.mark_succeeded(job.id, "w", result_key=key, seed=1, sample_rate=8, duration=1)

        succeed(old)
        time.sleep(0.5)
        succeed(new)
        store.request_cancel(waiting.id)  # canceled: finished, without an output
        store.claim("w", lease_seconds=30)  # `running` stays running
        assert store.purge_expired(retention_seconds=0.3) == [f"{old.id}.wav"]
        assert {job.id for job in store.list_recent()} == {new.id, waiting.id, running.id}
        with pytest.raises(JobNotFoundError):
            store.get(old.id)
        assert store.create(new_job(idempotency_key="a")).id != old.id  # key freed
        assert store.purge_expired(retention_seconds=0) == [f"{new.id}.wav"]
        assert {job.status for job in store.list_recent()} == {"queued", "running"}


class TestSQLiteJobStore(JobStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        stores: list[JobStore] = []

        def make(**options: Any) -> JobStore:
            stores.append(SQLiteJobStore(tmp_path / "jobs.sqlite3", **options))
            return stores[-1]

        yield make
        for store in stores:
            store.close()

    def test_uses_wal_and_survives_reopening(self, make_store: MakeStore, tmp_path: Path) -> None:
        job = make_store().create(new_job())
        assert make_store().get(job.id) == job
        with sqlite3.connect(tmp_path / "jobs.sqlite3") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()

    def test_waits_for_a_busy_database(self, make_store: MakeStore, tmp_path: Path) -> None:
        store = make_store()
        blocker = sqlite3.connect(
            tmp_path / "jobs.sqlite3", isolation_level=None, check_same_thread=False
        )
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, lambda: blocker.execute("COMMIT")).start()
        started = time.monotonic()
        store.create(new_job())
        assert time.monotonic() - started >= 0.25
        blocker.close()

    def test_processes_claim_disjoint_jobs(self, make_store: MakeStore, tmp_path: Path) -> None:
        store = make_store(max_queued=500)
        ids = {store.create(new_job()).id for _ in range(200)}
        claimed = _in_processes(_claim_in_process, tmp_path / "jobs.sqlite3", 3)
        flat = [job_id for chunk in claimed for job_id in chunk]
        assert sorted(flat) == sorted(ids)
        assert sum(1 for chunk in claimed if chunk) >= 2, "no contention happened"

    def test_processes_respect_the_queue_bound(self, tmp_path: Path) -> None:
        accepted = _in_processes(_create_in_process, tmp_path / "jobs.sqlite3", 3)
        assert sum(len(chunk) for chunk in accepted) == 10
        assert SQLiteJobStore(tmp_path / "jobs.sqlite3").count_queued() == 10

    def test_settings_choose_sqlite(self, tmp_path: Path) -> None:
        settings = Settings(output_dir=tmp_path / "outputs", job_queue_size=7)
        store = job_store_from_settings(settings)
        assert isinstance(store, SQLiteJobStore)
        # Beside the served output directory, never inside it.
        assert (store.path, store.max_queued) == (tmp_path / "state" / "jobs.sqlite3", 7)
        store.close()


def _in_processes(target: Callable[..., None], path: Path, count: int) -> list[list[str]]:
    """Run ``target`` in ``count`` fresh interpreters that start together; collect results."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    processes = [
        ctx.Process(target=target, args=(path, f"p{i}", barrier, results)) for i in range(count)
    ]
    for process in processes:
        process.start()
    chunks: list[list[str]] = []
    deadline = time.monotonic() + 60
    try:
        while len(chunks) < count:
            with contextlib.suppress(queue.Empty):
                chunks.append(results.get(timeout=0.2))
            crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            assert not crashed and time.monotonic() < deadline, f"children failed: {crashed}"
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    return chunks


def _claim_in_process(path: Path, worker_id: str, barrier: Any, results: Any) -> None:
    store = SQLiteJobStore(path)
    barrier.wait()
    results.put(claim_all(store, worker_id, work_seconds=0.001))
    store.close()


def _create_in_process(path: Path, worker_id: str, barrier: Any, results: Any) -> None:
    store = SQLiteJobStore(path, max_queued=10)
    barrier.wait()
    accepted = []
    for _ in range(10):
        with contextlib.suppress(QueueFullError):
            accepted.append(store.create(new_job()).id)
    results.put(accepted)
    store.close()
