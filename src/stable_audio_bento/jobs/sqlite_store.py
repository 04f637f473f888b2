"""SQLite job store: the embedded default, safe for many threads and processes on one host."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import JobNotFoundError, JobStoreUnavailableError
from .events import Event
from .records import FINISHED, Job
from .store import Change, JobStore, scoped_idempotency_key

_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    lease_expires_at REAL,
    idempotency_key TEXT UNIQUE,
    doc TEXT NOT NULL
);
"""
# Each job's event log (the SSE stream); seq is the event id, increasing across all jobs.
_EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS job_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id, seq);
"""
# Added after the first release: databases made before get the columns at open (migration).
_ADDED_COLUMNS = {
    "owner": "TEXT",
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "queue_deadline": "REAL",
    "webhook_due": "REAL",
}
_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs (status, priority, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_deadline ON jobs (queue_deadline) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_by_webhook_due ON jobs (webhook_due);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at);
"""
_FINISHED_SQL = ", ".join(f"'{status}'" for status in sorted(FINISHED))
# SQLite results that say "the disk or the lock, not your request": a 503 and a retry.
# (Extended codes such as SQLITE_IOERR_WRITE share these prefixes.)
_UNAVAILABLE = (
    *("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED"),
    *("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PROTOCOL"),
)
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


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
        webhook_progress_seconds: float = 5.0,
        busy_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            max_queued=max_queued,
            max_attempts=max_attempts,
            retry_after=retry_after,
            webhook_progress_seconds=webhook_progress_seconds,
        )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = os.getpid()
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_TABLE)
            conn.executescript(_EVENTS_TABLE)
            with self._migration(conn):
                have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
                for column, kind in _ADDED_COLUMNS.items():
                    if column not in have:
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            conn.executescript(_INDEXES)

    @contextmanager
    def _migration(self, conn: sqlite3.Connection) -> Iterator[None]:
        # Several processes open one file at start: the write lock makes one of them migrate.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if os.getpid() != self._pid:
            # A forked child must not touch its parent's connection (or its lock's state).
            self._lock, self._db, self._pid = threading.Lock(), None, os.getpid()
        with self._lock, self._unavailable_as_503():
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
    def _unavailable_as_503(self) -> Iterator[None]:
        """A full or failing disk, or a lock held past ``busy_timeout``: JobStoreUnavailableError.

        Nothing was changed (the transaction rolled back), so the caller may retry; reads
        keep working on a full disk. The message names no path.
        """
        try:
            yield
        except sqlite3.Error as e:
            name = getattr(e, "sqlite_errorname", "") or ""
            if not name.startswith(_UNAVAILABLE):
                raise
            reason = str(e) or name
            raise JobStoreUnavailableError(
                f"The job store is unavailable ({reason}); retry later.", self.retry_after
            ) from e
        except OSError as e:
            if e.errno not in _NO_SPACE:
                raise
            raise JobStoreUnavailableError(
                "The job store is unavailable (no space left on its disk); retry later.",
                self.retry_after,
            ) from e

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
        idem = scoped_idempotency_key(job)
        with self._write() as conn:
            now = time.time()
            if idem is not None:
                row = conn.execute(
                    "SELECT doc FROM jobs WHERE idempotency_key = ?", (idem,)
                ).fetchone()
                if row is not None:
                    return Job.model_validate_json(row[0])
            (queued,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
            if queued >= self.max_queued:
                raise self._queue_full()
            job, events = self._observe(None, self._stamp(job, now), now)
            conn.execute(
                f"INSERT INTO jobs ({_COLUMN_NAMES}, idempotency_key, owner, doc)"
                f" VALUES ({_COLUMN_SLOTS}, ?, ?, ?)",
                (*_columns(job), idem, job.owner, job.model_dump_json()),
            )
            _log(conn, job.id, events)
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job:
        rows = self._read("SELECT doc FROM jobs WHERE id = ?", job_id)
        if not rows:
            raise JobNotFoundError(job_id)
        return self._visible(Job.model_validate_json(rows[0][0]), owner)

    def list_recent(self, limit: int = 50, owner: str | None = None) -> list[Job]:
        if owner is None:
            rows = self._read("SELECT doc FROM jobs ORDER BY created_at DESC LIMIT ?", limit)
        else:
            rows = self._read(
                "SELECT doc FROM jobs WHERE owner = ? ORDER BY created_at DESC LIMIT ?",
                owner,
                limit,
            )
        return [Job.model_validate_json(doc) for (doc,) in rows]

    def count_queued(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")[0][0])

    def purge_expired(self, retention_seconds: float) -> list[str]:
        cutoff = time.time() - retention_seconds
        where = f"status IN ({_FINISHED_SQL}) AND finished_at < ?"
        with self._write() as conn:
            docs = conn.execute(f"SELECT doc FROM jobs WHERE {where}", (cutoff,)).fetchall()
            conn.execute(
                f"DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE {where})",
                (cutoff,),
            )
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
            old, now = Job.model_validate_json(row[0]), time.time()
            new = change(old, now)
            if new is None:
                return None
            new, events = self._observe(old, new, now)
            assignments = ", ".join(f"{name} = ?" for name in _COLUMN_NAMES.split(", "))
            conn.execute(
                f"UPDATE jobs SET {assignments}, doc = ? WHERE id = ?",
                (*_columns(new), new.model_dump_json(), job_id),
            )
            _log(conn, job_id, events)
        return new

    def _claim_candidates(self, limit: int) -> list[str]:
        rows = self._read(
            "SELECT id FROM jobs WHERE status = 'queued'"
            " OR (status = 'running' AND lease_expires_at <= ?)"
            " ORDER BY status = 'running' DESC, priority DESC, created_at LIMIT ?",
            time.time(),
            limit,
        )
        return [job_id for (job_id,) in rows]

    def queue_position(self, job: Job) -> int | None:
        if job.status != "queued":
            return None
        rows = self._read(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND id != ?"
            " AND (priority > ? OR (priority = ? AND created_at <= ?))",
            job.id,
            job.priority,
            job.priority,
            job.created_at,
        )
        return int(rows[0][0]) + 1

    def events_after(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        seq = -1 if after is None else int(after)  # ValueError: not an id of ours
        rows = self._read(
            "SELECT seq, doc FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
            job_id,
            seq,
        )
        return [(str(seq), json.loads(doc)) for seq, doc in rows]

    def _overdue_candidates(self, now: float | None = None) -> list[str]:
        rows = self._read(
            "SELECT id FROM jobs WHERE status = 'queued' AND queue_deadline <= ?",
            time.time() if now is None else now,
        )
        return [job_id for (job_id,) in rows]

    def _due_delivery_candidates(self, limit: int) -> list[str]:
        rows = self._read(
            "SELECT id FROM jobs WHERE webhook_due <= ? ORDER BY webhook_due LIMIT ?",
            time.time(),
            limit,
        )
        return [job_id for (job_id,) in rows]


_COLUMN_NAMES = (
    "id, status, created_at, finished_at, lease_expires_at, priority, queue_deadline, webhook_due"
)
_COLUMN_SLOTS = ", ".join("?" for _ in _COLUMN_NAMES.split(", "))


def _columns(job: Job) -> tuple[object, ...]:
    """The indexed columns, in ``_COLUMN_NAMES`` order: copies of the record's fields."""
    return (
        *(job.id, job.status, job.created_at, job.finished_at, job.lease_expires_at),
        *(job.priority, job.queue_deadline, job.webhook_due),
    )


def _log(conn: sqlite3.Connection, job_id: str, events: list[Event]) -> None:
    conn.executemany(
        "INSERT INTO job_events (job_id, doc) VALUES (?, ?)",
        [(job_id, json.dumps(event)) for event in events],
    )
