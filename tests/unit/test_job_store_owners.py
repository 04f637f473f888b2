"""Job stores under hostile conditions: other API keys' jobs, a full disk, an old database.

``OwnerContract`` runs here against SQLite and in integration/ against a real Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stable_audio_bento.errors import JobNotFoundError, JobStoreUnavailableError, StorageError
from stable_audio_bento.http.middleware.auth import owner_of
from stable_audio_bento.jobs import Job, JobStore, SQLiteJobStore
from stable_audio_bento.jobs.storage import LocalStorage
from tests.unit.test_job_store import MakeStore, new_job

ALICE, BOB = owner_of("alice-key"), owner_of("bob-key")


class OwnerContract:
    @pytest.fixture
    def make_store(self) -> MakeStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, make_store: MakeStore) -> JobStore:
        return make_store()

    def test_an_owner_sees_only_their_jobs(self, store: JobStore) -> None:
        alices = [store.create(new_job(owner=ALICE)).id for _ in range(3)]
        bobs = [store.create(new_job(owner=BOB)).id for _ in range(2)]
        assert [j.id for j in store.list_recent(10, owner=ALICE)] == alices[::-1]
        assert [j.id for j in store.list_recent(10, owner=BOB)] == bobs[::-1]
        assert [j.id for j in store.list_recent(2, owner=ALICE)] == alices[:0:-1]
        assert len(store.list_recent(10)) == 5  # no owner given: every job (admin)
        assert store.list_recent(10, owner="") == []  # an anonymous caller: none
        with pytest.raises(JobNotFoundError):
            store.get(alices[0], owner="")
        assert store.get(alices[0], owner=ALICE).owner == ALICE
        with pytest.raises(JobNotFoundError, match=rf"Job `{bobs[0]}` does not exist\."):
            store.get(bobs[0], owner=ALICE)

    def test_another_owner_cannot_cancel(self, store: JobStore) -> None:
        job = store.create(new_job(owner=ALICE))
        with pytest.raises(JobNotFoundError):
            store.request_cancel(job.id, owner=BOB)
        assert store.get(job.id).status == "queued"  # unchanged
        assert store.request_cancel(job.id, owner=ALICE).status == "canceled"

    def test_idempotency_keys_are_per_owner(self, store: JobStore) -> None:
        alices = store.create(new_job(owner=ALICE, idempotency_key="retry-1"))
        bobs = store.create(new_job(owner=BOB, idempotency_key="retry-1"))
        assert bobs.id != alices.id  # Bob does not get (or learn of) Alice's job
        again = store.create(new_job(owner=ALICE, idempotency_key="retry-1"))
        assert again.id == alices.id
        assert store.count_queued() == 2

    def test_the_owner_is_a_hash_never_the_key(self, store: JobStore) -> None:
        job = store.create(new_job(owner=owner_of("s3cr3t-key")))
        assert job.owner is not None and "s3cr3t" not in job.owner
        assert len(job.owner) == 32 and owner_of("s3cr3t-key") == job.owner
        assert "s3cr3t" not in store.get(job.id).model_dump_json()

    def test_purge_forgets_owned_jobs(self, store: JobStore) -> None:
        job = store.create(new_job(owner=ALICE))
        claimed = store.claim("w", lease_seconds=30)
        assert claimed is not None and claimed.id == job.id
        store.mark_failed(job.id, "w", "boom")
        time.sleep(0.01)
        store.purge_expired(retention_seconds=0)
        assert store.list_recent(10, owner=ALICE) == []


class TestSQLiteOwners(OwnerContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        stores: list[JobStore] = []

        def make(**options: Any) -> JobStore:
            stores.append(SQLiteJobStore(tmp_path / "jobs.sqlite3", **options))
            return stores[-1]

        yield make
        for store in stores:
            store.close()


# --------------------------------------------------------------------------- migration
def test_a_database_from_before_owners_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = Job(model="demo", request={"prompt": "rain"}, idempotency_key="k")
    doc = json.loads(old.model_dump_json())
    del doc["owner"]  # as the previous release wrote it
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at REAL"
            " NOT NULL, finished_at REAL, lease_expires_at REAL, idempotency_key TEXT UNIQUE,"
            " doc TEXT NOT NULL);"
        )
        conn.execute(
            "INSERT INTO jobs VALUES (?, 'queued', ?, NULL, NULL, 'k', ?)",
            (old.id, old.created_at, json.dumps(doc)),
        )
        conn.commit()
    with SQLiteJobStore(path) as store:
        assert store.get(old.id).owner is None
        assert [j.id for j in store.list_recent()] == [old.id]
        assert store.list_recent(owner=ALICE) == []
        assert store.create(new_job(idempotency_key="k")).id == old.id  # still deduplicated
        mine = store.create(new_job(owner=ALICE, idempotency_key="k"))
        assert mine.id != old.id
    with SQLiteJobStore(path) as again:  # a second open does not migrate twice
        assert {j.id for j in again.list_recent()} == {old.id, mine.id}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(jobs)")}
    assert "owner" in columns and "jobs_by_owner" in indexes


# --------------------------------------------------------------------------- full disk
def test_a_full_database_is_unavailable_not_an_internal_error(tmp_path: Path) -> None:
    """SQLite's own "database or disk is full", made real with a page limit."""
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3", retry_after=7)
    first = store.create(new_job())
    with store._connection() as conn:  # a size cap on this connection: the file is full
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")
    big = {"prompt": "x" * 20_000, "duration": 1.0}
    with pytest.raises(JobStoreUnavailableError, match="database or disk is full") as info:
        for _ in range(50):
            store.create(Job(model="demo", request=big))
    assert info.value.retry_after == 7
    assert str(tmp_path) not in str(info.value)
    assert store.get(first.id) == first  # reads still work
    assert first.id in {j.id for j in store.list_recent()}
    with store._connection() as conn:
        conn.execute("PRAGMA max_page_count = 1073741823")
    store.create(new_job())  # space again: writes work again, nothing was left half-done
    store.close()


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str = "320k") -> Iterator[Path]:
    """A real, small tmpfs at ``path`` (needs the right to mount: root in CI)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write until the filesystem says ENOSPC; return the filler file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_a_full_filesystem_makes_job_creation_unavailable(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "disk") as disk:
        store = SQLiteJobStore(disk / "state" / "jobs.sqlite3", retry_after=3)
        storage = LocalStorage(disk / "outputs")
        job = store.create(new_job(owner=ALICE))
        filler = fill(disk)
        big = {"prompt": "x" * 4000, "duration": 1.0}
        with pytest.raises(JobStoreUnavailableError, match="retry later") as info:
            for _ in range(200):
                store.create(Job(model="demo", request=big))
        assert info.value.retry_after == 3
        assert store.get(job.id, owner=ALICE) == job  # reads still work on a full disk
        assert store.list_recent(owner=ALICE)[-1] == job
        with pytest.raises(StorageError, match="The output storage is full") as full:
            storage.save(job.id, "wav", b"\0" * 65536)
        assert full.value.public and str(disk) not in str(full.value)
        assert [p.name for p in storage.root.iterdir()] == []  # no half-written file left
        filler.unlink()
        store.create(new_job())
        store.close()


def test_a_redis_that_refuses_is_unavailable_not_an_internal_error() -> None:
    """The Redis store maps its own outages: every call is a JobStoreUnavailableError (503)
    naming the kind, with the store's Retry-After."""
    import socket

    from stable_audio_bento.errors import JobStoreUnavailableError
    from stable_audio_bento.jobs.redis_store import RedisJobStore

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisJobStore(f"redis://127.0.0.1:{port}/0", retry_after=4)
    calls = [
        lambda: store.create(Job(model="demo")),
        lambda: store.get("0" * 32),
        lambda: store.list_recent(),
        store.count_queued,
        lambda: store.request_cancel("0" * 32),
        lambda: store.claim("worker-1", 30.0),
    ]
    for call in calls:
        with pytest.raises(JobStoreUnavailableError, match=r"unavailable \(ConnectionError\)") as e:
            call()
        assert e.value.retry_after == 4
    store.close()
