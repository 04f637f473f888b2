"""Redis job store: any number of processes and replicas share one queue, with no leader.

Layout (every key carries the ``{prefix}`` hash tag, so all live in one cluster slot):
``{p}:job:<id>`` the job as JSON; sorted sets ``{p}:queued`` (by created_at),
``{p}:running`` (by lease expiry), ``{p}:finished`` (by finished_at) and ``{p}:recent``
(every job by created_at), ``{p}:recent:<owner>`` (one owner's jobs by created_at);
``{p}:idem:<owner>:<key>`` (``{p}:idem:<key>`` for unowned jobs) -> job id;
``{p}:deadlines`` (queued jobs with a deadline, by deadline), ``{p}:webhooks`` (jobs with a
webhook delivery pending, by when it is due) and a stream ``{p}:events:<id>`` per job (its
event log; stream ids are the SSE event ids). The queue is ordered by priority, then age (the
score is ``queue_score``). Creation is one
Lua script (exact queue bound, idempotency); every other change is WATCH/MULTI on the job's
key, which makes two claims of one job impossible. Times come from the Redis server clock,
so replicas with skewed clocks still agree on when a lease expired.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from ..errors import JobNotFoundError, JobStoreUnavailableError
from ..limits import MAX_PRIORITY
from .events import Event
from .records import Job
from .store import Change, JobStore, scoped_idempotency_key

# A job's event stream keeps about this many entries (progress is about one a second).
EVENTS_KEPT = 2000
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def queue_score(job: Job) -> float:
    """Higher priorities first, then older first: one float (exact to about 0.1 ms)."""
    return (MAX_PRIORITY - job.priority) * 1e10 + job.created_at


_CREATE = """
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    local doc = redis.call('GET', ARGV[4] .. existing)
    if doc then return {'existing', doc} end
  end
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[6]) then return {'full'} end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[7], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
if ARGV[5] == '1' then redis.call('SET', KEYS[4], ARGV[1]) end
if ARGV[8] ~= '' then redis.call('ZADD', KEYS[6], ARGV[8], ARGV[1]) end
for i = 10, #ARGV do
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[9], '*', 'event', ARGV[i])
end
return {'created'}
"""


logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _outages_mapped(method: F) -> F:
    """Redis that does not answer (refused, reset, timed out) -> JobStoreUnavailableError:
    nothing was changed, the caller may retry. The message names the kind, the log the host."""

    @functools.wraps(method)
    def mapped(self: RedisJobStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as e:
            logger.warning("The job store is unavailable: %s: %s", type(e).__name__, e)
            message = f"The job store is unavailable ({type(e).__name__}); retry later."
            raise JobStoreUnavailableError(message, self.retry_after) from e

    return mapped  # type: ignore[return-value]


class RedisJobStore(JobStore):
    """Jobs in Redis under ``prefix``; one store object is safe to share between threads."""

    def __init__(
        self,
        url: str,
        prefix: str = "stable-audio",
        *,
        max_queued: int = 64,
        max_attempts: int = 3,
        retry_after: int = 10,
        webhook_progress_seconds: float = 5.0,
    ) -> None:
        super().__init__(
            max_queued=max_queued,
            max_attempts=max_attempts,
            retry_after=retry_after,
            webhook_progress_seconds=webhook_progress_seconds,
        )
        # Every command here is quick: a Redis that stops answering is an error within seconds
        # (a 503 to the client, a retry in the worker), never a request that hangs.
        self._redis: Any = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        self._p = "{" + prefix + "}"
        self._queued = f"{self._p}:queued"
        self._running = f"{self._p}:running"
        self._finished = f"{self._p}:finished"
        self._recent = f"{self._p}:recent"
        self._deadlines = f"{self._p}:deadlines"
        self._webhooks = f"{self._p}:webhooks"
        self._create_script = self._redis.register_script(_CREATE)

    def _job_key(self, job_id: str) -> str:
        return f"{self._p}:job:{job_id}"

    def _events_key(self, job_id: str) -> str:
        return f"{self._p}:events:{job_id}"

    def _idem_key(self, job: Job) -> str:
        return f"{self._p}:idem:{scoped_idempotency_key(job)}"

    def _recent_of(self, owner: str | None) -> str:
        return self._recent if owner is None else f"{self._recent}:{owner}"

    def _now(self, client: Any = None) -> float:
        seconds, micros = (client or self._redis).time()
        return float(seconds) + float(micros) / 1e6

    @_outages_mapped
    def create(self, job: Job) -> Job:
        now = self._now()
        job, events = self._observe(None, self._stamp(job, now), now)
        has_idem = job.idempotency_key is not None
        idem_key = self._idem_key(job) if job.idempotency_key else self._queued
        keys = [self._queued, self._recent, self._job_key(job.id), idem_key]
        result = self._create_script(
            keys=[*keys, self._recent_of(job.owner), self._deadlines, self._events_key(job.id)],
            args=[
                job.id,
                job.model_dump_json(),
                repr(job.created_at),
                f"{self._p}:job:",
                "1" if has_idem else "0",
                self.max_queued,
                repr(queue_score(job)),
                "" if job.queue_deadline is None else repr(job.queue_deadline),
                EVENTS_KEPT,
                *(json.dumps(event) for event in events),
            ],
        )
        if result[0] == "existing":
            return Job.model_validate_json(result[1])
        if result[0] == "full":
            raise self._queue_full()
        return job

    @_outages_mapped
    def get(self, job_id: str, owner: str | None = None) -> Job:
        raw = self._redis.get(self._job_key(job_id))
        if raw is None:
            raise JobNotFoundError(job_id)
        return self._visible(Job.model_validate_json(raw), owner)

    @_outages_mapped
    def list_recent(self, limit: int = 50, owner: str | None = None) -> list[Job]:
        ids = self._redis.zrevrange(self._recent_of(owner), 0, limit - 1)
        if not ids:
            return []
        docs = self._redis.mget([self._job_key(job_id) for job_id in ids])
        return [Job.model_validate_json(doc) for doc in docs if doc is not None]

    @_outages_mapped
    def count_queued(self) -> int:
        return int(self._redis.zcard(self._queued))

    @_outages_mapped
    def purge_expired(self, retention_seconds: float) -> list[str]:
        cutoff = self._now() - retention_seconds
        keys: list[str] = []
        for job_id in self._redis.zrangebyscore(self._finished, "-inf", f"({cutoff!r}"):
            job = self._delete_finished(job_id, cutoff)
            if job is not None and job.result_key:
                keys.append(job.result_key)
        return keys

    def _delete_finished(self, job_id: str, cutoff: float) -> Job | None:
        key = self._job_key(job_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    job = Job.model_validate_json(raw) if raw is not None else None
                    if job is not None and not (job.finished and (job.finished_at or 0) < cutoff):
                        return None  # changed since it was listed
                    idem = ""
                    if job is not None and job.idempotency_key:
                        idem = self._idem_key(job)
                        pipe.watch(idem)
                    owns_idem = bool(idem) and pipe.get(idem) == job_id
                    pipe.multi()
                    pipe.delete(key, self._events_key(job_id))
                    pipe.zrem(self._finished, job_id)
                    pipe.zrem(self._webhooks, job_id)
                    pipe.zrem(self._recent, job_id)
                    if job is not None and job.owner is not None:
                        pipe.zrem(self._recent_of(job.owner), job_id)
                    if owns_idem:
                        pipe.delete(idem)
                    pipe.execute()
                    return job
                except WatchError:
                    continue

    def close(self) -> None:
        self._redis.close()

    @_outages_mapped
    def _update(self, job_id: str, change: Change) -> Job | None:
        key = self._job_key(job_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFoundError(job_id)
                    old, now = Job.model_validate_json(raw), self._now(pipe)
                    new = change(old, now)
                    if new is None:
                        return None
                    new, events = self._observe(old, new, now)
                    pipe.multi()
                    pipe.set(key, new.model_dump_json())
                    self._reindex(pipe, old, new)
                    for event in events:
                        pipe.xadd(
                            self._events_key(job_id),
                            {"event": json.dumps(event)},
                            maxlen=EVENTS_KEPT,
                            approximate=True,
                        )
                    pipe.execute()
                    return new
                except WatchError:
                    continue

    def _reindex(self, pipe: Any, old: Job, new: Job) -> None:
        old_index, old_score = self._index(old)
        new_index, new_score = self._index(new)
        if old_index != new_index:
            pipe.zrem(old_index, old.id)
        if (old_index, old_score) != (new_index, new_score):
            pipe.zadd(new_index, {new.id: new_score})
        for index, value in (
            (self._deadlines, new.queue_deadline if new.status == "queued" else None),
            (self._webhooks, new.webhook_due),
        ):
            if value is None:
                pipe.zrem(index, new.id)
            else:
                pipe.zadd(index, {new.id: value})

    def _index(self, job: Job) -> tuple[str, float]:
        if job.status == "queued":
            return self._queued, queue_score(job)
        if job.status == "running":
            return self._running, job.lease_expires_at or 0.0
        return self._finished, job.finished_at or 0.0

    @_outages_mapped
    def _claim_candidates(self, limit: int) -> list[str]:
        expired = self._redis.zrangebyscore(self._running, "-inf", repr(self._now()), 0, limit)
        queued = self._redis.zrange(self._queued, 0, limit - 1)
        return [*expired, *queued][:limit]

    def queue_position(self, job: Job) -> int | None:
        if job.status != "queued":
            return None
        rank = self._redis.zrank(self._queued, job.id)
        return None if rank is None else int(rank) + 1

    def events_after(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        if after is not None and not _STREAM_ID.fullmatch(after):
            raise ValueError(f"not an event id: {after!r}")
        start = "-" if after is None else f"({after}"
        entries = self._redis.xrange(self._events_key(job_id), start, "+")
        return [(entry_id, json.loads(fields["event"])) for entry_id, fields in entries]

    def _overdue_candidates(self, now: float | None = None) -> list[str]:
        cutoff = self._now() if now is None else now
        return list(self._redis.zrangebyscore(self._deadlines, "-inf", repr(cutoff)))

    def _due_delivery_candidates(self, limit: int) -> list[str]:
        return list(self._redis.zrangebyscore(self._webhooks, "-inf", repr(self._now()), 0, limit))
