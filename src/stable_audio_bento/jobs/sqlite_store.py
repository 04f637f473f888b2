"""SQLite job store: the embedded default, safe for many threads and processes on one host."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import JobNotFoundError
from .models import FINISHED, Job
from .store import Change, JobStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    lease_expires_at REAL,
    idempotency_key TEXT UNIQUE,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
"""
_FINISHED_SQL = ", ".join(f"'{status}'" for status in sorted(FINISHED))


class SQLiteJobStore(JobStore):
    """Jobs in one SQLite file (WAL mode).

    One connection per process, behind a lock: job operations are a few milliseconds, and a
    connection per thread would leak one for every short-lived thread. Every change runs in
    a ``BEGIN IMMEDIATE`` transaction, which takes the database's write lock up front (or
    waits up to ``busy_timeout``), so the queue bound, idempotency keys and claims hold
    across processes too. The indexed columns mirror fields of the JSON ``doc``, which is
    the record itself.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_queued: int = 64,
        max_attempts: int = 3,
        retry_after: int = 10,
        busy_timeout: float = 30.0,
    ) -> None:
        super().__init__(max_queued=max_queued, max_attempts=max_attempts, retry_after=retry_after)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = os.getpid()
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if os.getpid() != self._pid:
            # A forked child must not touch its parent's connection (or its lock's state).
            self._lock, self._db, self._pid = threading.Lock(), None, os.getpid()
        with self._lock:
            if self._db is None:
                self._db = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._db.execute("PRAGMA synchronous=NORMAL")
            yield self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # some errors have rolled back already
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def create(self, job: Job) -> Job:
        with self._write() as conn:
            if job.idempotency_key is not None:
                row = conn.execute(
                    "SELECT doc FROM jobs WHERE idempotency_key = ?", (job.idempotency_key,)
                ).fetchone()
                if row is not None:
                    return Job.model_validate_json(row[0])
            (queued,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
            if queued >= self.max_queued:
                raise self._queue_full()
            job = job.model_copy(update={"created_at": time.time()})
            conn.execute(
                "INSERT INTO jobs (id, status, created_at, finished_at, lease_expires_at,"
                " idempotency_key, doc) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*_columns(job), job.idempotency_key, job.model_dump_json()),
            )
        return job

    def get(self, job_id: str) -> Job:
        rows = self._read("SELECT doc FROM jobs WHERE id = ?", job_id)
        if not rows:
            raise JobNotFoundError(job_id)
        return Job.model_validate_json(rows[0][0])

    def list_recent(self, limit: int = 50) -> list[Job]:
        rows = self._read("SELECT doc FROM jobs ORDER BY created_at DESC LIMIT ?", limit)
        return [Job.model_validate_json(doc) for (doc,) in rows]

    def count_queued(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")[0][0])

    def purge_expired(self, retention_seconds: float) -> list[str]:
        cutoff = time.time() - retention_seconds
        where = f"status IN ({_FINISHED_SQL}) AND finished_at < ?"
        with self._write() as conn:
            docs = conn.execute(f"SELECT doc FROM jobs WHERE {where}", (cutoff,)).fetchall()
            conn.execute(f"DELETE FROM jobs WHERE {where}", (cutoff,))
        jobs = [Job.model_validate_json(doc) for (doc,) in docs]
        return [job.result_key for job in jobs if job.result_key]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _update(self, job_id: str, change: Change) -> Job | None:
        with self._write() as conn:
            row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(job_id)
            new = change(Job.model_validate_json(row[0]), time.time())
            if new is None:
                return None
            conn.execute(
                "UPDATE jobs SET id = ?, status = ?, created_at = ?, finished_at = ?,"
                " lease_expires_at = ?, doc = ? WHERE id = ?",
                (*_columns(new), new.model_dump_json(), job_id),
            )
        return new

    def _claim_candidates(self, limit: int) -> list[str]:
        rows = self._read(
            "SELECT id FROM jobs WHERE status = 'queued'"
            " OR (status = 'running' AND lease_expires_at <= ?)"
            " ORDER BY created_at LIMIT ?",
            time.time(),
            limit,
        )
        return [job_id for (job_id,) in rows]


def _columns(job: Job) -> tuple[str, str, float, float | None, float | None]:
    return (job.id, job.status, job.created_at, job.finished_at, job.lease_expires_at)
