"""The job worker at shutdown and on a full disk: real stores, real files, a tmpfs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from stable_audio_bento.jobs import JobStore, JobWorker, SQLiteJobStore
from stable_audio_bento.jobs.storage import LocalStorage
from tests.integration import test_worker as base
from tests.unit.test_job_store_owners import fill, tiny_filesystem

# The worker tests' fixtures (real SQLite and Redis stores, local storage, started workers).
redis_url, store, local_storage, start_worker = (
    base.redis_url,
    base.store,
    base.local_storage,
    base.start_worker,
)
finished, submit, wait_for = base.finished, base.submit, base.wait_for


def test_stop_requeues_a_running_job_at_once_not_after_its_lease(
    store: JobStore, local_storage: LocalStorage, start_worker: Callable[..., JobWorker]
) -> None:
    worker = start_worker(store, local_storage, lease_seconds=60.0)
    job = submit(store, steps=2000, step_seconds=0.01)  # 20 s of work
    wait_for(store, job.id, lambda j: j.status == "running" and j.progress_step > 0)
    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 10})
    asked = time.monotonic()
    stopper.start()
    released = wait_for(store, job.id, lambda j: j.status == "queued", timeout=5)
    took = time.monotonic() - asked
    stopper.join(10)
    assert took < 1.0, f"released after {took:.2f} s"
    assert (released.lease_owner, released.lease_expires_at, released.attempts) == (None, None, 0)
    assert not stopper.is_alive()  # the run saw is_canceled() and returned
    assert store.get(job.id).status == "queued"  # its late result did not overwrite the queue
    assert list(local_storage.root.iterdir()) == []


def test_a_full_output_disk_fails_the_job_with_a_clean_message(
    tmp_path: Path, start_worker: Callable[..., JobWorker]
) -> None:
    with tiny_filesystem(tmp_path / "disk", size="256k") as disk:
        store = SQLiteJobStore(tmp_path / "jobs.sqlite3")  # the job store has room
        storage = LocalStorage(disk / "outputs")
        filler = fill(disk)
        worker = start_worker(store, storage, fallback_dir=disk / "failed-uploads")
        job = wait_for(store, submit(store, duration=0.5).id, finished)
        worker.stop(timeout=5)
        assert job.status == "failed"
        assert job.error == (
            "Storing the output failed: The output storage is full; nothing was written. "
            "Retry later. No copy of the audio could be kept."
        )
        assert [p.name for p in storage.root.iterdir()] == []
        filler.unlink()
        store.close()
