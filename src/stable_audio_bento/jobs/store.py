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
from .events import Event, schedule_deliveries, transition_events
from .records import FINISHED, Job, WebhookDelivery

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

    def __init__(
        self,
        max_queued: int = 64,
        max_attempts: int = 3,
        retry_after: int = 10,
        webhook_progress_seconds: float = 5.0,
    ) -> None:
        self.max_queued = max_queued
        self.max_attempts = max_attempts
        self.retry_after = retry_after
        self.webhook_progress_seconds = webhook_progress_seconds

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
        """Ids, in queue order, of queued jobs and of running jobs whose lease has expired."""

    @abc.abstractmethod
    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to run, 2 for the one after...; None unless ``job`` is queued."""

    @abc.abstractmethod
    def events_after(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        """The job's logged events after the one with id ``after`` (all: None), oldest first.

        Ids are opaque strings, increasing within a job (SSE ``id`` / ``Last-Event-ID``);
        ValueError if ``after`` is not one this store could have made.
        """

    @abc.abstractmethod
    def _overdue_candidates(self, now: float | None = None) -> list[str]:
        """Ids of queued jobs whose ``queue_deadline`` has passed."""

    @abc.abstractmethod
    def _due_delivery_candidates(self, limit: int) -> list[str]:
        """Ids of jobs with a webhook delivery due now, earliest first."""

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

    @staticmethod
    def _stamp(job: Job, now: float) -> Job:
        """``job`` as created at ``now`` (the store's clock), with its queue deadline fixed."""
        deadline = job.queue_deadline
        if job.max_queue_seconds is not None:
            relative = now + job.max_queue_seconds
            deadline = relative if deadline is None else min(deadline, relative)
        return job.model_copy(update={"created_at": now, "queue_deadline": deadline})

    def _observe(self, old: Job | None, new: Job, now: float) -> tuple[Job, list[Event]]:
        """What the store writes with a change: the events it logs, the deliveries it adds."""
        events = transition_events(old, new, now)
        return schedule_deliveries(old, new, events, now, self.webhook_progress_seconds), events

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Take the first claimable job for ``worker_id`` (None if there is none).

        The queue runs by priority, then age. A queued job past its deadline is not run: it
        ends as ``expired``.
        """
        max_attempts = self.max_attempts

        def change(job: Job, now: float) -> Job | None:
            if job.status == "queued" and _overdue(job, now):
                return _expire(job, now)
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

    def expire_overdue(self) -> list[str]:
        """End every queued job whose deadline has passed as ``expired``; return their ids."""

        def change(job: Job, now: float) -> Job | None:
            return _expire(job, now) if job.status == "queued" and _overdue(job, now) else None

        expired = []
        for job_id in self._overdue_candidates():
            job = self._update_if_exists(job_id, change)
            if job is not None:
                expired.append(job_id)
        return expired

    def claim_delivery(
        self, sender: str, lease_seconds: float
    ) -> tuple[Job, WebhookDelivery] | None:
        """Lease the next due webhook delivery to ``sender`` (None if none is due).

        Its attempt is counted now; until ``finish_delivery`` (or the lease's end, after which
        it is due again: a sender that died) no other sender takes it. A job's deliveries go
        out in order, one at a time: only its first pending one is ever leased.
        """
        taken: list[WebhookDelivery] = []

        def change(job: Job, now: float) -> Job | None:
            for i, delivery in enumerate(job.deliveries):
                if delivery.status != "pending":
                    continue
                if delivery.next_attempt_at > now:
                    return None  # the first pending one is not due (or is under way)
                leased = delivery.model_copy(
                    update={
                        "claimed_by": sender,
                        "attempts": delivery.attempts + 1,
                        "last_attempt_at": now,
                        "next_attempt_at": now + lease_seconds,
                    }
                )
                taken[:] = [leased]
                deliveries = list(job.deliveries)
                deliveries[i] = leased
                return job.model_copy(update={"deliveries": deliveries})
            return None

        for job_id in self._due_delivery_candidates(CLAIM_CANDIDATES):
            job = self._update_if_exists(job_id, change)
            if job is not None and taken:
                return job, taken[0]
        return None

    def finish_delivery(
        self,
        job_id: str,
        delivery_id: str,
        sender: str,
        *,
        ok: bool,
        response_status: int | None = None,
        error: str | None = None,
        retry_in: float | None = None,
    ) -> bool:
        """Record an attempt: delivered, retried in ``retry_in`` seconds, or failed (None).

        Only the sender holding the lease records; False if it had lost it.
        """

        def change(job: Job, now: float) -> Job | None:
            deliveries = list(job.deliveries)
            for i, d in enumerate(deliveries):
                if d.id == delivery_id and d.status == "pending" and d.claimed_by == sender:
                    update: dict[str, object] = {
                        "claimed_by": None,
                        "response_status": response_status,
                        "error": error,
                    }
                    if ok:
                        update["status"] = "delivered"
                    elif retry_in is None:
                        update["status"] = "failed"
                    else:
                        update["next_attempt_at"] = now + retry_in
                    deliveries[i] = d.model_copy(update=update)
                    return job.model_copy(update={"deliveries": deliveries})
            return None

        return self._update_if_exists(job_id, change) is not None

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


def _overdue(job: Job, now: float) -> bool:
    return job.queue_deadline is not None and job.queue_deadline <= now


def _expire(job: Job, now: float) -> Job:
    waited = now - job.created_at
    error = f"Expired: not started within its deadline (waited {waited:.1f} s in the queue)."
    return _finish(job, now, "expired", error=error)


def _finish(job: Job, now: float, status: str, **fields: object) -> Job:
    assert status in FINISHED
    update = {"status": status, "finished_at": now, "lease_owner": None, "lease_expires_at": None}
    return job.model_copy(update={**update, **fields})
