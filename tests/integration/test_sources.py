"""Where audio-in jobs keep their uploads: local state directory, and S3 beside the outputs
(a real SeaweedFS S3 gateway); swept with their jobs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stable_audio_bento.errors import StorageError
from stable_audio_bento.jobs.records import Job, new_job_id
from stable_audio_bento.jobs.sources import LocalSources, S3Sources, SourceStore, sweep_sources
from stable_audio_bento.jobs.sqlite_store import SQLiteJobStore
from stable_audio_bento.jobs.storage import S3Storage
from tests.servers import S3Server, seaweedfs_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as env, seaweedfs_s3() as server:
        for name, value in server.env().items():
            env.setenv(name, value)
        yield server


@pytest.fixture(params=["local", "s3"])
def sources(request: pytest.FixtureRequest, tmp_path: Path) -> SourceStore:
    if request.param == "local":
        return LocalSources(tmp_path / "sources")
    s3: S3Server = request.getfixturevalue("s3")
    storage = S3Storage(
        s3.bucket, prefix=f"t-{new_job_id()[:8]}", endpoint_url=s3.endpoint_url, region=s3.region
    )
    return S3Sources(storage)


def test_save_load_delete(sources: SourceStore) -> None:
    job_id = new_job_id()
    data = os.urandom(300_000)
    key = sources.save(job_id, data)
    assert key == f"sources/{job_id}"
    assert sources.load(key) == data
    assert sources.keys_older_than(time.time() + 60) == [key]
    assert sources.keys_older_than(time.time() - 3600) == []
    sources.delete(key)
    with pytest.raises(StorageError, match="could not be read"):
        sources.load(key)


def test_keys_are_job_ids_only(sources: SourceStore) -> None:
    with pytest.raises(StorageError):
        sources.save("../../etc/passwd", b"x")
    with pytest.raises(StorageError):
        sources.load("sources/../x")


def test_sweep_deletes_the_sources_of_expired_or_purged_jobs(
    sources: SourceStore, tmp_path: Path
) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    try:
        finished = store.create(Job(model="demo", mode="inpainting"))
        queued = store.create(Job(model="demo", mode="audio-to-audio"))
        gone = new_job_id()  # a job already purged
        for job_id in (finished.id, queued.id, gone):
            sources.save(job_id, b"audio")
        claimed = store.claim("w", 60)
        assert claimed is not None and claimed.id == finished.id  # the oldest first
        store.mark_failed(finished.id, "w", "x")
        time.sleep(1.1)
        # Retention 1 s: the finished job's and the purged one's go; the queued one's stays.
        assert sweep_sources(sources, store, retention_seconds=1.0) == 2
        left = sources.keys_older_than(time.time() + 60)
        assert left == [f"sources/{queued.id}"]
    finally:
        store.close()
