"""Where job outputs live: a local directory or an S3-compatible bucket (AWS S3, R2, MinIO...).

Keys are always ``{job_id}.{extension}``; the S3 object name adds the configured prefix.
boto3 is imported only when an ``S3Storage`` is built, so this module imports in milliseconds.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ..archive import OUTPUT_FILE_TYPES
from ..errors import StorageError

if TYPE_CHECKING:
    from ..settings import Settings

logger = logging.getLogger(__name__)

_EXTENSIONS = "|".join(sorted({ext for ext, _ in OUTPUT_FILE_TYPES.values()}))
# Job ids are ``secrets.token_hex(16)``; nothing else is ever a valid output name.
OUTPUT_KEY_RE = re.compile(rf"^[0-9a-f]{{32}}\.(?:{_EXTENSIONS})$")

# S3 error codes that mean "try again later" rather than "this request is wrong".
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)


def output_key(job_id: str, format_name: str) -> str:
    """The storage key of a job's output: ``{job_id}.{ext}`` (StorageError if either is invalid)."""
    kind = OUTPUT_FILE_TYPES.get(format_name)
    key = f"{job_id}.{kind[0]}" if kind else ""
    if not OUTPUT_KEY_RE.match(key):
        raise StorageError(f"Invalid output name for job `{job_id}` and format `{format_name}`.")
    return key


class Storage(Protocol):
    """Saves job outputs and says where to download them."""

    def save(self, job_id: str, format_name: str, data: bytes) -> str:
        """Store ``data`` as the job's output and return its key. Raises StorageError."""
        ...

    def url(self, key: str, base_url: str) -> str:
        """A URL a client can download ``key`` from; ``base_url`` is this server's root URL."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists (retention). Raises StorageError."""
        ...


class LocalStorage:
    """Outputs in a local directory, served by the API under ``/outputs/{key}``."""

    def __init__(self, output_dir: Path | str) -> None:
        self.root = Path(output_dir).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, job_id: str, format_name: str, data: bytes) -> str:
        key = output_key(job_id, format_name)
        # Write then rename, so a reader never sees half a file.
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    os.fchmod(f.fileno(), 0o644)  # mkstemp makes it private to this user
                os.replace(tmp, self.root / key)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(
                    "The output storage is full; nothing was written. Retry later.", public=True
                ) from e
            raise StorageError(f"Could not write `{key}` to {self.root}: {e}") from e
        return key

    def url(self, key: str, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/outputs/{quote(key)}"

    def resolve(self, key: str) -> Path:
        """The file for ``key``, safe to serve.

        Raises StorageError for anything that is not a job output name, for anything that is
        not a regular file (a symlink, wherever it points: this server never writes one), and
        for missing files; the HTTP layer answers 404 to all of them.
        """
        if not OUTPUT_KEY_RE.match(key):
            raise StorageError(f"Invalid output name `{key}`.")
        path = self.root / key
        try:
            mode = path.lstat().st_mode  # lstat: the link itself, never its target
        except OSError as e:
            raise StorageError(f"Output `{key}` does not exist.") from e
        if stat.S_ISLNK(mode):
            raise StorageError(f"Output `{key}` is a symlink; only files written here are served.")
        if not stat.S_ISREG(mode):
            raise StorageError(f"Output `{key}` does not exist.")
        return path

    def delete(self, key: str) -> None:
        if not OUTPUT_KEY_RE.match(key):
            raise StorageError(f"Invalid output name `{key}`.")
        try:
            (self.root / key).unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"Could not delete `{key}`: {e}") from e


class S3Storage:
    """Outputs in an S3-compatible bucket.

    Credentials come from the standard AWS chain: ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` and ``~/.aws/``
    files, or an instance / container role. The client is built once and shared by threads.
    Download URLs are presigned GETs, or ``{public_base_url}/{prefix}/{key}`` when a public
    (CDN) base URL is set.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        public_base_url: str | None = None,
        presigned_expires: int = 3600,
        upload_attempts: int = 4,
        *,
        backoff_seconds: float = 0.5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.presigned_expires = presigned_expires
        self.upload_attempts = max(1, upload_attempts)
        self.backoff_seconds = backoff_seconds
        config = Config(
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Retries are ours (counted, logged, with backoff); botocore's would multiply them.
            retries={"total_max_attempts": 1, "mode": "standard"},
            # Path style works on every S3-compatible server; AWS itself picks its own default.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def object_name(self, key: str) -> str:
        """The object's name in the bucket: ``{prefix}/{key}``."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def save(self, job_id: str, format_name: str, data: bytes) -> str:
        key = output_key(job_id, format_name)
        name = self.object_name(key)
        content_type = OUTPUT_FILE_TYPES[format_name][1]
        attempt = 0
        while True:
            attempt += 1
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=name, Body=data, ContentType=content_type
                )
                return key
            except Exception as e:
                reason = _describe(e)
                if attempt >= self.upload_attempts or not _is_transient(e):
                    raise StorageError(
                        f"Upload of `{name}` to bucket `{self.bucket}` failed after "
                        f"{attempt} attempt(s): {reason}"
                    ) from e
                delay = self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
                logger.warning(
                    "Upload of %s failed (attempt %d/%d): %s; retrying in %.2f s",
                    name,
                    attempt,
                    self.upload_attempts,
                    reason,
                    delay,
                )
                time.sleep(delay)

    def url(self, key: str, base_url: str) -> str:
        name = self.object_name(key)
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(name)}"
        try:
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=self.presigned_expires,
            )
        except Exception as e:
            raise StorageError(f"Could not presign `{name}`: {_describe(e)}") from e
        return url

    def delete(self, key: str) -> None:
        name = self.object_name(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        except Exception as e:
            raise StorageError(f"Could not delete `{name}`: {_describe(e)}") from e


def _is_transient(error: Exception) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, ConnectionError | HTTPClientError):
        return True
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or status == 429 or code in _TRANSIENT_CODES
    return False


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def storage_from_settings(settings: Settings) -> Storage:
    """S3 when ``storage_bucket`` is set, else the local output directory."""
    if settings.storage_bucket:
        return S3Storage(
            bucket=settings.storage_bucket,
            prefix=settings.storage_prefix,
            endpoint_url=settings.storage_endpoint_url,
            region=settings.storage_region,
            public_base_url=settings.storage_public_base_url,
            presigned_expires=settings.presigned_url_expires,
            upload_attempts=settings.storage_upload_attempts,
            connect_timeout=min(5.0, settings.storage_timeout),
            read_timeout=settings.storage_timeout,
        )
    return LocalStorage(settings.output_dir)
