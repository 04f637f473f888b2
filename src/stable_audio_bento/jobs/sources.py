"""Where the source audio of audio-in jobs is kept until the job expires.

The upload is written before the job is queued (so a restart, or another replica, runs the job
from it) next to where outputs go: in the bucket under ``{prefix}/sources/{job_id}`` with S3
storage, in ``{state_dir}/sources/{job_id}`` with local storage (out of the served output
directory). ``sweep`` deletes the sources of jobs that are gone (purged at retention) or
finished longer ago than the retention; the job worker runs it with its own sweep.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import JobNotFoundError, StorageError
from .storage import S3Storage

if TYPE_CHECKING:
    from ..settings import Settings
    from .storage import Storage
    from .store import JobStore

logger = logging.getLogger(__name__)

SOURCE_KEY_RE = re.compile(r"^sources/[0-9a-f]{32}$")
UPLOAD_ATTEMPTS = 4


def source_key(job_id: str) -> str:
    key = f"sources/{job_id}"
    if not SOURCE_KEY_RE.match(key):
        raise StorageError(f"Invalid job id `{job_id}` for a source file.")
    return key


class SourceStore(Protocol):
    def save(self, job_id: str, data: bytes) -> str:
        """Keep ``data`` as the job's source; return its key. Raises StorageError."""
        ...

    def load(self, key: str) -> bytes:
        """The bytes saved under ``key``. Raises StorageError."""
        ...

    def delete(self, key: str) -> None: ...

    def keys_older_than(self, cutoff: float) -> list[str]:
        """Keys written before ``cutoff`` (epoch seconds)."""
        ...


class LocalSources:
    """Sources as files under a directory of the server's own."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not SOURCE_KEY_RE.match(key):
            raise StorageError(f"Invalid source key `{key}`.")
        return self.root / key.removeprefix("sources/")

    def save(self, job_id: str, data: bytes) -> str:
        key = source_key(job_id)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self._path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise StorageError(f"Could not write the source `{key}` to {self.root}: {e}") from e
        return key

    def load(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as e:
            raise StorageError(f"The source `{key}` could not be read: {e}") from e

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"Could not delete the source `{key}`: {e}") from e

    def keys_older_than(self, cutoff: float) -> list[str]:
        keys = []
        try:
            for path in self.root.iterdir():
                if re.fullmatch(r"[0-9a-f]{32}", path.name) and path.stat().st_mtime < cutoff:
                    keys.append(f"sources/{path.name}")
        except FileNotFoundError:
            pass
        return keys


class S3Sources:
    """Sources as objects in the output bucket, beside the outputs (same client and prefix)."""

    def __init__(self, storage: S3Storage) -> None:
        self.storage = storage

    def save(self, job_id: str, data: bytes) -> str:
        key = source_key(job_id)
        name = self.storage.object_name(key)
        client, bucket = self.storage._client, self.storage.bucket
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                client.put_object(Bucket=bucket, Key=name, Body=data)
                return key
            except Exception as e:
                if attempt == UPLOAD_ATTEMPTS:
                    raise StorageError(
                        f"Upload of the source `{name}` to bucket `{bucket}` failed: {e}"
                    ) from e
                logger.warning("Upload of source %s failed (attempt %d): %s", name, attempt, e)
                time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def load(self, key: str) -> bytes:
        name = self.storage.object_name(key)
        try:
            body = self.storage._client.get_object(Bucket=self.storage.bucket, Key=name)["Body"]
            data: bytes = body.read()
        except Exception as e:
            raise StorageError(f"The source `{name}` could not be read: {e}") from e
        return data

    def delete(self, key: str) -> None:
        name = self.storage.object_name(key)
        try:
            self.storage._client.delete_object(Bucket=self.storage.bucket, Key=name)
        except Exception as e:
            raise StorageError(f"Could not delete the source `{name}`: {e}") from e

    def keys_older_than(self, cutoff: float) -> list[str]:
        prefix = self.storage.object_name("sources/")
        paginator = self.storage._client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.storage.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["LastModified"].timestamp() < cutoff:
                    keys.append("sources/" + item["Key"].rsplit("/", 1)[-1])
        return [k for k in keys if SOURCE_KEY_RE.match(k)]


def sources_from_settings(settings: Settings, storage: Storage) -> SourceStore:
    """Beside the outputs in S3; in the state directory with local storage."""
    if isinstance(storage, S3Storage):
        return S3Sources(storage)
    assert settings.state_dir is not None
    return LocalSources(settings.state_dir / "sources")


def sweep_sources(sources: SourceStore, jobs: JobStore, retention_seconds: float) -> int:
    """Delete the sources of jobs past retention (purged, or finished before the cutoff)."""
    cutoff = time.time() - retention_seconds
    deleted = 0
    for key in sources.keys_older_than(cutoff):
        job_id = key.removeprefix("sources/")
        try:
            job = jobs.get(job_id)
            expired = job.finished and (job.finished_at or 0) < cutoff
        except JobNotFoundError:
            expired = True
        if expired:
            try:
                sources.delete(key)
                deleted += 1
            except StorageError:
                logger.exception("Could not delete the expired source %s", key)
    return deleted
