"""Background job worker: claims jobs, runs them, stores the audio, records the outcome."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import StableAudioError, new_error_id, public_message
from ..formats import FORMATS
from .records import Job, JobOutput
from .storage import LocalStorage, Storage
from .store import JobStore

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
IsCanceled = Callable[[], bool]
RunJob = Callable[[Job, Progress, IsCanceled], JobOutput]


class _Run:
    """What the thread running a job and its lease keeper share."""

    def __init__(self) -> None:
        self.done = threading.Event()
        # Set by a new progress step and by the end: the lease keeper wakes to report it.
        self.wake = threading.Event()
        self.canceled = threading.Event()  # the user asked to cancel
        self.lost = threading.Event()  # another worker owns the job now
        self._lock = threading.Lock()
        self._progress: tuple[int, int] | None = None
        self._reported: tuple[int, int] | None = None

    def set_progress(self, step: int, total: int) -> None:
        with self._lock:
            self._progress = (step, total)
        self.wake.set()

    def finish(self) -> None:
        self.done.set()
        self.wake.set()

    @property
    def progress(self) -> tuple[int, int] | None:
        with self._lock:
            return self._progress

    def unreported_progress(self) -> tuple[int, int] | None:
        with self._lock:
            if self._progress == self._reported:
                return None
            self._reported = self._progress
            return self._progress


class JobWorker:
    """Runs queued jobs on ``threads`` threads until ``stop()``.

    ``run_job(job, progress, is_canceled)`` does the work; it should call ``progress(step,
    total)`` as it goes and stop by raising once ``is_canceled()`` turns true. While it
    runs, a keeper thread extends the lease, reports each progress step (at
    most one store write per ``progress_interval``) and watches for cancel. If
    storing the output fails, the bytes are kept under ``fallback_dir`` and the job fails.
    A job's ``error`` is written for its client: server paths, hosts and buckets go to the
    log only, under an error id that the client's message quotes. With ``retention_seconds``
    set, finished jobs and their files are purged every ``sweep_interval`` seconds.
    """

    def __init__(
        self,
        store: JobStore,
        storage: Storage,
        run_job: RunJob,
        worker_id: str | None = None,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.5,
        *,
        threads: int = 1,
        fallback_dir: Path | str | None = None,
        retention_seconds: float | None = None,
        sweep_interval: float = 600.0,
        heartbeat_interval: float | None = None,
        progress_interval: float = 0.1,
        also_sweep: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.run_job = run_job
        self.worker_id = worker_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.threads = threads
        if fallback_dir is None:
            base = storage.root if isinstance(storage, LocalStorage) else tempfile.gettempdir()
            fallback_dir = Path(base) / "failed-uploads"
        self.fallback_dir = Path(fallback_dir)
        self.retention_seconds = retention_seconds
        self.sweep_interval = sweep_interval
        # More files that expire with their jobs (the sources of audio-in jobs).
        self.also_sweep = also_sweep
        # Often enough that a cancel is seen within a second, and a lease survives two misses.
        self.heartbeat_interval = heartbeat_interval or min(1.0, lease_seconds / 3)
        self.progress_interval = progress_interval
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, str] = {}  # job id -> lease owner, while a thread runs it
        self._running_lock = threading.Lock()

    def start(self) -> None:
        """Start the worker threads (and the retention sweep)."""
        if self._threads:
            raise RuntimeError("JobWorker already started")
        self._stopping.clear()
        self._abort.clear()
        for i in range(self.threads):
            owner = f"{self.worker_id}/{i}"
            self._spawn(f"job-worker-{i}", self._loop, owner)
        # Jobs past their queue deadline end on time even while every thread is busy.
        self._spawn("job-deadlines", self._expire_loop)
        if self.retention_seconds is not None:
            self._spawn("job-retention", self._sweep_loop)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; give running ones back to the queue at once.

        A shutdown (SIGTERM, a parent gone) may be followed by a kill at any moment, so the
        running jobs are released first, before anything else: another worker can claim
        them right away instead of after their lease expires. Their runs are then asked to
        stop (``is_canceled()`` turns true) and get up to ``timeout`` seconds to return;
        what they produce is dropped (the lease is gone).
        """
        self.begin_shutdown()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("%s did not stop within %.0f s", thread.name, timeout)
        self._threads = []

    def begin_shutdown(self) -> list[str]:
        """Take no more jobs, requeue the running ones and ask their runs to stop; no waiting.

        Safe to call from any thread, any number of times (a signal, a watchdog, ``stop``).
        """
        self._stopping.set()
        self._abort.set()
        return self.release_running()

    def release_running(self) -> list[str]:
        """Requeue every job this worker is running (their attempt is not counted)."""
        with self._running_lock:
            running = list(self._running.items())
        released = []
        for job_id, owner in running:
            try:
                if self.store.release(job_id, owner):
                    released.append(job_id)
            except Exception:
                logger.exception("Releasing job %s failed; its lease will expire", job_id)
        if released:
            logger.info("Released %d running job(s) to the queue: %s", len(released), released)
        return released

    def sweep(self) -> int:
        """Purge jobs past retention and delete their outputs; return how many files.

        Local copies of outputs whose upload failed (``fallback_dir``) go at the same age.
        """
        if self.retention_seconds is None:
            return 0
        keys = self.store.purge_expired(self.retention_seconds)
        for key in keys:
            try:
                self.storage.delete(key)
            except Exception:
                logger.exception("Could not delete expired output %s", key)
        extra = self.also_sweep() if self.also_sweep is not None else 0
        return len(keys) + extra + self._purge_fallbacks(time.time() - self.retention_seconds)

    def _purge_fallbacks(self, cutoff: float) -> int:
        deleted = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.fallback_dir.iterdir():
                try:
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        deleted += 1
                except OSError:
                    logger.exception("Could not delete expired local copy %s", path)
        return deleted

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _loop(self, owner: str) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.claim(owner, self.lease_seconds)
            except Exception:
                logger.exception("Claiming a job failed")
                job = None
            if job is None:
                self._stopping.wait(self.poll_interval)
                continue
            try:
                self._process(job, owner)
            except Exception:
                # Only the store can fail here; the lease expires and the job is retried.
                logger.exception("Recording the outcome of job %s failed", job.id)

    def _expire_loop(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            try:
                expired = self.store.expire_overdue()
            except Exception:
                logger.exception("Expiring overdue jobs failed")
                continue
            if expired:
                logger.info("Expired %d job(s) not started in time: %s", len(expired), expired)

    def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sweep()
            except Exception:
                logger.exception("Retention sweep failed")
            self._stopping.wait(self.sweep_interval)

    def _process(self, job: Job, owner: str) -> None:
        run = _Run()
        keeper = threading.Thread(
            target=self._keep_lease, args=(job.id, owner, run), name=f"lease-{job.id[:8]}"
        )
        with self._running_lock:
            self._running[job.id] = owner
        if self._abort.is_set():  # stop() began between the claim and here
            self.release_running()
        keeper.start()
        try:
            self._run_and_record(job, owner, run)
        finally:
            with self._running_lock:
                self._running.pop(job.id, None)
            run.finish()
            keeper.join()

    def _run_and_record(self, job: Job, owner: str, run: _Run) -> None:
        def is_canceled() -> bool:
            return run.canceled.is_set() or run.lost.is_set() or self._abort.is_set()

        started = time.monotonic()
        try:
            output: JobOutput | None = self.run_job(job, run.set_progress, is_canceled)
            error: Exception | None = None
        except Exception as e:
            output, error = None, e
        if run.lost.is_set():
            logger.warning("Lost the lease on job %s; dropping its result", job.id)
        elif run.canceled.is_set():
            self.store.mark_canceled(job.id, owner, progress=run.progress)
        elif output is not None:
            self._store_output(job, owner, output, run.progress)
            logger.info("Job %s finished in %.2f s", job.id, time.monotonic() - started)
        elif self._abort.is_set():
            self.store.release(job.id, owner)  # it stopped because we are shutting down
        else:
            assert error is not None
            error_id = new_error_id()
            logger.warning(
                "Job %s failed (error id %s): %s: %s",
                job.id,
                error_id,
                type(error).__name__,
                error,
                exc_info=not _is_expected(error),
            )
            message = public_message(error, "The generation", error_id)
            self.store.mark_failed(job.id, owner, message, progress=run.progress)

    def _store_output(
        self, job: Job, owner: str, output: JobOutput, progress: tuple[int, int] | None
    ) -> None:
        try:
            key = self.storage.save(job.id, output.format, output.data)
        except Exception as e:
            error_id = new_error_id()
            fallback = self._keep_locally(job, output)
            logger.error(
                "Storing the output of job %s failed (error id %s): %s; local copy: %s on %s",
                job.id,
                error_id,
                e,
                fallback or "none (it failed too)",
                socket.gethostname(),
            )
            error = f"Storing the output failed: {public_message(e, 'The upload', error_id)}"
            if fallback is None:
                error += " No copy of the audio could be kept."
            else:
                error += " A copy of the audio is kept on the server until the job expires."
            self.store.mark_failed(job.id, owner, error, fallback_path=fallback, progress=progress)
            return
        if not self.store.mark_succeeded(
            job.id,
            owner,
            result_key=key,
            seed=output.seed,
            sample_rate=output.sample_rate,
            duration=output.duration,
            progress=progress,
        ):
            logger.warning("Lost the lease on job %s after storing %s", job.id, key)

    def _keep_locally(self, job: Job, output: JobOutput) -> str | None:
        extension = FORMATS[output.format].extension if output.format in FORMATS else "bin"
        path = self.fallback_dir / f"{job.id}.{extension}"
        try:
            self.fallback_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(output.data)
        except OSError:
            logger.exception("Could not keep the output of job %s at %s", job.id, path)
            return None
        return str(path)

    def _keep_lease(self, job_id: str, owner: str, run: _Run) -> None:
        """A heartbeat every ``heartbeat_interval``, and one as soon as a step is reported (the
        job's event stream and webhooks see every step a client could see)."""
        next_beat = time.monotonic() + self.heartbeat_interval
        while True:
            run.wake.wait(max(0.0, next_beat - time.monotonic()))
            run.wake.clear()
            if run.done.is_set():
                return
            progress = run.unreported_progress()
            if progress is None and time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.heartbeat_interval
            try:
                job = self.store.heartbeat(job_id, owner, self.lease_seconds, progress=progress)
            except Exception:
                # A store hiccup: keep trying; the lease outlives a few missed beats.
                logger.exception("Heartbeat for job %s failed", job_id)
                continue
            if job is None:
                run.lost.set()
                return
            if job.cancel_requested:
                run.canceled.set()
            if run.done.wait(self.progress_interval):  # bounds the store writes
                return


def _is_expected(error: Exception) -> bool:
    """Errors that need no traceback in the log: the request's or the model's own."""
    return isinstance(error, StableAudioError)
