"""Durable generation jobs: records, stores (SQLite, Redis) and the background worker.

``RedisJobStore`` is imported on first use, so importing this package does not load redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .factory import job_store_from_settings
from .records import FINISHED, Job, JobOutput, JobStatus, new_job_id
from .sqlite_store import SQLiteJobStore
from .store import JobStore
from .worker import JobWorker, RunJob

if TYPE_CHECKING:
    from .redis_store import RedisJobStore

__all__ = [
    "FINISHED",
    "Job",
    "JobOutput",
    "JobStatus",
    "JobStore",
    "JobWorker",
    "RedisJobStore",
    "RunJob",
    "SQLiteJobStore",
    "job_store_from_settings",
    "new_job_id",
]


def __getattr__(name: str) -> Any:
    if name == "RedisJobStore":
        from .redis_store import RedisJobStore

        return RedisJobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
