"""The job store a server's settings name: the one place that knows every implementation.

Apart from the contract (``store.py``), so that the implementations import the contract and
nothing imports them back. ``RedisJobStore`` is imported only when chosen (it loads redis).
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from .sqlite_store import SQLiteJobStore
from .store import JobStore


def job_store_from_settings(settings: Settings) -> JobStore:
    """SQLite at ``job_db_path`` (one host) or Redis at ``redis_url`` (shared by replicas)."""
    limits: dict[str, Any] = {
        "max_queued": settings.job_queue_size,
        "max_attempts": settings.job_max_attempts,
        "retry_after": settings.job_retry_after,
        "webhook_progress_seconds": settings.webhook_progress_seconds,
    }
    if settings.job_store == "redis":
        from .redis_store import RedisJobStore

        return RedisJobStore(settings.redis_url, settings.redis_prefix, **limits)
    assert settings.job_db_path is not None  # filled in by Settings' validator
    return SQLiteJobStore(settings.job_db_path, **limits)
