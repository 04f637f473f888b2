"""The job store contract, shared by the SQLite (one host) and Redis (many replicas) stores.

State changes are read-modify-write of one job under the store's atomic primitive
(``_update``); the rules for who may change what live here, once, for both stores.

Jobs belong to an ``owner`` (a hash of the API key that created them, ``Job.owner``): ``get``,
``list_recent`` and ``request_cancel`` take the caller's owner and treat other owners' jobs as
absent; ``owner=None`` means "every job" (an open server, an admin key, the worker).
Idempotency keys are scoped by owner, so two clients cannot collide on (or probe) each other's.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from ..errors import JobNotFoundError, QueueFullError
from .records import FINISHED, Job

# A state change: (current job, store clock now) -> the new job, or None for "leave it".
Change = Callable[[Job, float], Job | None]

# How many claim candidates one claim() looks at before giving up until the next poll.
CLAIM_CANDIDATES = 16


class JobStore(abc.ABC):
    """Durable job records plus a bounded FIFO queue with leases.

    A worker ``claim``s a job under a lease and must ``heartbeat`` before the lease expires;
    a job whose lease expired while ``running`` is claimable again (its worker died), and
    after ``max_attempts`` claims it fails instead, so a job that kills workers cannot loop.
    Only the lease owner can finish a job, so a worker that lost its lease cannot overwrite.
    """

    def __init__(self, max_queued: int = 64, max_attempts: int = 3, retry_after: int = 10) -> None:
        self.max_queued = max_queued
        self.max_attempts = max_attempts
        self.retry_after = retry_after

    # --- store-specific primitives -------------------------------------------------------

    @abc.abstractmethod
    def create(self, job: Job) -> Job:
        """Queue ``job`` atomically and return it.

        If a job with the same ``idempotency_key`` exists, return that one instead. Raises
        QueueFullError when ``max_queued`` jobs are already queued; the count and the insert
        are one atomic step, so concurrent creates never exceed the bound.
        """

    @abc.abstractmethod
    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job (JobNotFoundError if unknown, purged, or another ``owner``'s)."""

    @abc.abstractmethod
    def list_recent(self, limit: int = 50, owner: str | None = None) -> list[Job]:
        """The newest jobs first (only ``owner``'s, when given)."""

    @abc.abstractmethod
    def count_queued(self) -> int:
        """How many jobs wait for a worker."""

    @abc.abstractmethod
    def purge_expired(self, retention_seconds: float) -> list[str]:
        """Delete jobs finished more than ``retention_seconds`` ago; return their result keys."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    def _update(self, job_id: str, change: Change) -> Job | None:
        """Apply ``change`` to one job atomically; return the new job, or None if unchanged."""

    @abc.abstractmethod
    def _claim_candidates(self, limit: int) -> list[str]:
        """Ids, oldest first, of queued jobs and of running jobs whose lease has expired."""

    # --- shared rules ----------------------------------------------------------------------

    @staticmethod
    def _visible(job: Job, owner: str | None) -> Job:
        """``job`` if ``owner`` may see it; otherwise it does not exist for them."""
        if owner is not None and job.owner != owner:
            raise JobNotFoundError(job.id)
        return job

    def _queue_full(self) -> QueueFullError:
        return QueueFullError(
            f"The job queue is full ({self.max_queued} jobs waiting); retry later.",
            retry_after=self.retry_after,
        )

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Take the oldest claimable job for ``worker_id`` (None if there is none)."""
        max_attempts = self.max_attempts

        def change(job: Job, now: float) -> Job | None:
            if job.status == "running":
                if job.lease_expires_at is None or job.lease_expires_at > now:
                    return None
                if job.cancel_requested:
                    return _finish(job, now, "canceled")
                if job.attempts >= max_attempts:
                    error = (
                        f"Job abandoned: its worker stopped responding {job.attempts} times "
                        f"(limit {max_attempts})."
                    )
                    return _finish(job, now, "failed", error=error)
            elif job.status != "queued":
                return None
            return job.model_copy(
                update={
                    "status": "running",
                    "lease_owner": worker_id,
                    "worker": worker_id,
                    "lease_expires_at": now + lease_seconds,
                    "attempts": job.attempts + 1,
                    "started_at": now,
                    "progress_step": 0,
                }
            )

        for job_id in self._claim_candidates(CLAIM_CANDIDATES):
            claimed = self._update_if_exists(job_id, change)
            if claimed is not None and claimed.status == "running":
                return claimed
        return None

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        lease_seconds: float,
        progress: tuple[int, int] | None = None,
    ) -> Job | None:
        """Extend the lease (and record progress) if ``worker_id`` still owns the job.

        Returns the job, whose ``cancel_requested`` the worker should honour, or None when
        the lease was lost to another worker.
        """

        def change(job: Job, now: float) -> Job | None:
            if not _owns(job, worker_id):
                return None
            update: dict[str, object] = {"lease_expires_at": now + lease_seconds}
            if progress is not None:
                update["progress_step"], update["progress_total"] = progress
            return job.model_copy(update=update)

        return self._update_if_exists(job_id, change)

    def mark_succeeded(
        self,
        job_id: str,
        worker_id: str,
        *,
        result_key: str,
        seed: int,
        sample_rate: int,
        duration: float,
        progress: tuple[int, int] | None = None,
    ) -> bool:
        """Record the output (only by the lease owner). False if the lease was lost.

        ``progress`` is the last (step, total), which heartbeats may not have written yet.
        """
        fields = {"result_key": result_key, "seed": seed, "sample_rate": sample_rate}
        return self._finish_owned(
            job_id, worker_id, "succeeded", progress, **fields, duration=duration
        )

    def mark_failed(
        self,
        job_id: str,
        worker_id: str,
        error: str,
        *,
        fallback_path: str | None = None,
        progress: tuple[int, int] | None = None,
    ) -> bool:
        """Record a failure (only by the lease owner). False if the lease was lost."""
        return self._finish_owned(
            job_id, worker_id, "failed", progress, error=error, fallback_path=fallback_path
        )

    def mark_canceled(
        self, job_id: str, worker_id: str, *, progress: tuple[int, int] | None = None
    ) -> bool:
        """The owner stopped the job because cancel was requested."""
        return self._finish_owned(job_id, worker_id, "canceled", progress)

    def release(self, job_id: str, worker_id: str) -> bool:
        """Give a running job back to the queue (worker shutdown); the attempt is not counted."""

        def change(job: Job, now: float) -> Job | None:
            if not _owns(job, worker_id):
                return None
            return job.model_copy(
                update={
                    "status": "queued",
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "started_at": None,
                    "progress_step": 0,
                    "attempts": max(0, job.attempts - 1),
                }
            )

        return self._update_if_exists(job_id, change) is not None

    def request_cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a job: a queued one at once, a running one when its worker sees the flag.

        Another ``owner``'s job is JobNotFoundError, and stays as it was.
        """

        def change(job: Job, now: float) -> Job | None:
            self._visible(job, owner)
            if job.status == "queued":
                return _finish(job, now, "canceled")
            if job.status == "running" and not job.cancel_requested:
                return job.model_copy(update={"cancel_requested": True})
            return None

        return self._update(job_id, change) or self.get(job_id, owner)

    def _finish_owned(
        self,
        job_id: str,
        worker_id: str,
        status: str,
        progress: tuple[int, int] | None,
        **fields: object,
    ) -> bool:
        if progress is not None:
            fields["progress_step"], fields["progress_total"] = progress

        def change(job: Job, now: float) -> Job | None:
            return _finish(job, now, status, **fields) if _owns(job, worker_id) else None

        return self._update_if_exists(job_id, change) is not None

    def _update_if_exists(self, job_id: str, change: Change) -> Job | None:
        try:
            return self._update(job_id, change)
        except JobNotFoundError:
            return None

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scoped_idempotency_key(job: Job) -> str | None:
    """The job's ``Idempotency-Key`` as the store indexes it: within its owner's namespace.

    Jobs without an owner keep the bare key (as stored before owners existed).
    """
    if job.idempotency_key is None:
        return None
    return job.idempotency_key if job.owner is None else f"{job.owner}:{job.idempotency_key}"


def _owns(job: Job, worker_id: str) -> bool:
    return job.status == "running" and job.lease_owner == worker_id


def _finish(job: Job, now: float, status: str, **fields: object) -> Job:
    assert status in FINISHED
    update = {"status": status, "finished_at": now, "lease_owner": None, "lease_expires_at": None}
    return job.model_copy(update={**update, **fields})
