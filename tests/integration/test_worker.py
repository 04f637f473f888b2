"""JobWorker end to end: real stores (SQLite, Redis), real storage (local, SeaweedFS S3)."""

from __future__ import annotations

import io
import secrets
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stable_audio_bento.errors import JobNotFoundError, StorageError
from stable_audio_bento.jobs import Job, JobOutput, JobStore, JobWorker, SQLiteJobStore
from stable_audio_bento.jobs.redis_store import RedisJobStore
from stable_audio_bento.jobs.storage import LocalStorage, S3Storage, Storage
from tests.servers import S3Server, free_ports, redis_server, seaweedfs_s3

SAMPLE_RATE = 8000


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as env, seaweedfs_s3() as server:
        for name, value in server.env().items():
            env.setenv(name, value)
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        made: JobStore = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisJobStore(url, prefix=f"worker-{secrets.token_hex(4)}")
    yield made
    made.close()


@pytest.fixture
def local_storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "outputs")


class FakeModel:
    """A real little ``run_job``: a WAV of noise, made step by step like a diffusion run.

    The request says how: ``duration``, ``steps``, ``step_seconds``, ``fail`` (raise this).
    """

    def __init__(self) -> None:
        self.saw_cancel = threading.Event()

    def __call__(
        self, job: Job, progress: Callable[[int, int], None], is_canceled: Callable[[], bool]
    ) -> JobOutput:
        steps = int(job.request.get("steps", 3))
        for step in range(steps):
            if is_canceled():
                self.saw_cancel.set()
                raise RuntimeError("canceled")
            time.sleep(float(job.request.get("step_seconds", 0.0)))
            progress(step + 1, steps)
        if "fail" in job.request:
            raise ValueError(job.request["fail"])
        duration = float(job.request.get("duration", 0.5))
        seed = int(job.request.get("seed", 1234))
        noise = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(SAMPLE_RATE * duration), 2))
        buffer = io.BytesIO()
        sf.write(buffer, noise.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return JobOutput(buffer.getvalue(), "wav", seed, SAMPLE_RATE, duration)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., JobWorker]]:
    workers: list[JobWorker] = []

    def start(store: JobStore, storage: Storage, **options: Any) -> JobWorker:
        options = {
            "run_job": FakeModel(),
            "lease_seconds": 2.0,
            "poll_interval": 0.05,
            "heartbeat_interval": 0.05,
            "fallback_dir": tmp_path / "failed-uploads",
            **options,
        }
        worker = JobWorker(store, storage, **options)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=5)


def submit(store: JobStore, **request: Any) -> Job:
    return store.create(Job(model="demo", request=request))


def wait_for(
    store: JobStore, job_id: str, check: Callable[[Job], bool], timeout: float = 10
) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = store.get(job_id)
        if check(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last state: {job!r}")
        time.sleep(0.02)


def finished(job: Job) -> bool:
    return job.finished


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
def test_jobs_run_end_to_end(
    store: JobStore,
    storage_kind: str,
    local_storage: LocalStorage,
    start_worker: Callable[..., JobWorker],
    request: pytest.FixtureRequest,
) -> None:
    if storage_kind == "s3":
        s3: S3Server = request.getfixturevalue("s3")
        storage: Storage = S3Storage(s3.bucket, "jobs", s3.endpoint_url, s3.region)
    else:
        storage = local_storage
    start_worker(store, storage, threads=2)
    jobs = [submit(store, duration=0.25 * (i + 1), seed=i, steps=4) for i in range(3)]
    for submitted in jobs:
        done = wait_for(store, submitted.id, finished)
        assert done.status == "succeeded", done.error
        assert (done.seed, done.sample_rate, done.attempts) == (submitted.request["seed"], 8000, 1)
        assert (done.progress_total, done.duration) == (4, submitted.request["duration"])
        assert done.result_key == f"{done.id}.wav"
        if isinstance(storage, LocalStorage):
            data = storage.resolve(done.result_key).read_bytes()
        else:
            with urllib.request.urlopen(storage.url(done.result_key, "http://x"), timeout=10) as r:
                data = r.read()
        audio, rate = sf.read(io.BytesIO(data))
        assert (rate, audio.shape) == (8000, (int(8000 * done.duration), 2))


def test_run_job_exception_fails_the_job(
    store: JobStore,
    local_storage: LocalStorage,
    start_worker: Callable[..., JobWorker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_worker(store, local_storage)
    job = wait_for(store, submit(store, fail="model exploded at /srv/secret").id, finished)
    # Not one of the package's own errors: the client gets an error id, the log the details.
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error is not None and "/srv/secret" not in job.error
    error_id = job.error.split("error id ")[1].split(")")[0]
    assert job.error == (
        f"The generation failed on the server (error id {error_id}); the details are in its log."
    )
    assert any(
        error_id in r.getMessage() and "model exploded at /srv/secret" in r.getMessage()
        for r in caplog.records
    )
    assert job.lease_owner is None and job.result_key is None
    assert list(local_storage.root.iterdir()) == []


def test_cancel_while_running(
    store: JobStore, local_storage: LocalStorage, start_worker: Callable[..., JobWorker]
) -> None:
    model = FakeModel()
    start_worker(store, local_storage, run_job=model)
    job = submit(store, steps=200, step_seconds=0.02)
    wait_for(store, job.id, lambda j: j.status == "running" and j.progress_step > 0)
    asked = time.monotonic()
    assert store.request_cancel(job.id).cancel_requested
    canceled = wait_for(store, job.id, finished)
    assert canceled.status == "canceled"
    assert model.saw_cancel.is_set()
    assert time.monotonic() - asked < 1.0
    assert 0 < canceled.progress_step < 200
    assert list(local_storage.root.iterdir()) == []


def test_storage_down_fails_the_job_and_keeps_the_audio(
    store: JobStore, start_worker: Callable[..., JobWorker], tmp_path: Path, s3: S3Server
) -> None:
    (dead_port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{dead_port}"
    down = S3Storage(s3.bucket, "jobs", endpoint, upload_attempts=2, backoff_seconds=0.01)
    start_worker(store, down)
    job = wait_for(store, submit(store, duration=0.5).id, finished)
    assert job.status == "failed"
    assert job.error is not None
    # The client reads what happened and an error id; the bucket, the endpoint, the path of
    # the kept copy and the host are in the log only, under that id.
    assert job.error.startswith("Storing the output failed: The upload failed on the server")
    assert job.error.endswith("A copy of the audio is kept on the server until the job expires.")
    for secret in (s3.bucket, "127.0.0.1", str(tmp_path), socket.gethostname()):
        assert secret not in job.error
    assert job.fallback_path == str(tmp_path / "failed-uploads" / f"{job.id}.wav")
    audio, rate = sf.read(job.fallback_path)
    assert (rate, audio.shape) == (8000, (4000, 2))


def test_stop_gives_the_running_job_back(
    store: JobStore, local_storage: LocalStorage, start_worker: Callable[..., JobWorker]
) -> None:
    worker = start_worker(store, local_storage)
    job = submit(store, steps=100, step_seconds=0.01)
    wait_for(store, job.id, lambda j: j.status == "running")
    worker.stop(timeout=0.1)
    released = store.get(job.id)
    assert (released.status, released.attempts, released.lease_owner) == ("queued", 0, None)
    start_worker(store, local_storage, worker_id="second")
    done = wait_for(store, job.id, finished)
    assert (done.status, done.attempts) == ("succeeded", 1)


def test_job_of_a_dead_worker_is_run_again(
    store: JobStore, local_storage: LocalStorage, start_worker: Callable[..., JobWorker]
) -> None:
    job = submit(store)
    assert store.claim("crashed-worker", lease_seconds=0.3) is not None
    start_worker(store, local_storage)
    done = wait_for(store, job.id, finished)
    assert (done.status, done.attempts) == ("succeeded", 2)


def test_retention_sweep_deletes_jobs_and_files(
    store: JobStore, local_storage: LocalStorage, start_worker: Callable[..., JobWorker]
) -> None:
    start_worker(store, local_storage, retention_seconds=0.3, sweep_interval=0.1)
    job = wait_for(store, submit(store).id, finished)
    assert job.result_key is not None
    assert local_storage.resolve(job.result_key).is_file()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            store.get(job.id)
        except JobNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("job was not purged")
    with pytest.raises(StorageError, match="does not exist"):
        local_storage.resolve(job.result_key)


def test_every_step_reaches_the_event_log_between_heartbeats(
    store: JobStore, local_storage: LocalStorage, start_worker: Callable[..., JobWorker]
) -> None:
    """Steps slower than the progress interval are each logged, although the heartbeat is far
    apart: an event stream shows every step as it happens, not one a second."""
    start_worker(store, local_storage, heartbeat_interval=5.0, progress_interval=0.02)
    job = submit(store, steps=6, step_seconds=0.15)
    wait_for(store, job.id, lambda j: j.status == "succeeded")
    steps = [e["step"] for _, e in store.events_after(job.id) if e["type"] == "progress"]
    assert steps == [1, 2, 3, 4, 5, 6]
