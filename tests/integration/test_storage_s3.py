"""S3Storage against a real SeaweedFS S3 gateway (started once for the module)."""

from __future__ import annotations

import logging
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from stable_audio_bento.errors import StorageError
from stable_audio_bento.formats import FORMATS
from stable_audio_bento.jobs.records import new_job_id
from stable_audio_bento.jobs.storage import S3Storage
from tests.servers import S3Server, free_ports, seaweedfs_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as env, seaweedfs_s3() as server:
        # S3Storage takes no keys: it reads the standard AWS variables, as in production.
        for name, value in server.env().items():
            env.setenv(name, value)
        yield server


@pytest.fixture(scope="module")
def storage(s3: S3Server) -> S3Storage:
    return make_storage(s3)


def make_storage(s3: S3Server, **options: Any) -> S3Storage:
    options = {"prefix": "stable-audio/jobs", "upload_attempts": 3, **options}
    return S3Storage(s3.bucket, endpoint_url=s3.endpoint_url, region=s3.region, **options)


def download(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), response.headers["Content-Type"]


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_save_sets_content_type_and_presigned_url_downloads(
    s3: S3Server, storage: S3Storage, format_name: str
) -> None:
    job_id = new_job_id()
    data = f"{format_name} bytes".encode()
    key = storage.save(job_id, format_name, data)
    assert key == f"{job_id}.{FORMATS[format_name].extension}"
    head = s3.client.head_object(Bucket=s3.bucket, Key=f"stable-audio/jobs/{key}")
    assert head["ContentType"] == FORMATS[format_name].media_type
    url = storage.url(key, "http://ignored")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    assert download(url) == (data, FORMATS[format_name].media_type)


def test_presigned_url_expires(s3: S3Server) -> None:
    storage = make_storage(s3, presigned_expires=1)
    url = storage.url(storage.save(new_job_id(), "wav", b"RIFF"), "http://ignored")
    assert download(url)[0] == b"RIFF"
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as info:
        download(url)
    assert info.value.code == 403


def test_public_base_url_form(s3: S3Server) -> None:
    # SeaweedFS serves a bucket path-style, so endpoint/bucket stands in for a CDN origin.
    public = f"{s3.endpoint_url}/{s3.bucket}/"
    storage = make_storage(s3, public_base_url=public)
    key = storage.save(new_job_id(), "mp3", b"ID3")
    url = storage.url(key, "http://ignored")
    assert url == f"{s3.endpoint_url}/{s3.bucket}/stable-audio/jobs/{key}"
    client = s3.client
    name = f"stable-audio/jobs/{key}"
    assert client.get_object(Bucket=s3.bucket, Key=name)["Body"].read() == b"ID3"


def test_delete(s3: S3Server) -> None:
    storage = make_storage(s3, prefix="")
    key = storage.save(new_job_id(), "flac", b"fLaC")
    storage.delete(key)
    storage.delete(key)  # already gone: S3 deletes are idempotent
    listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=key)
    assert listing.get("KeyCount", 0) == 0


def test_server_down_retries_then_storage_error(
    s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    (dead_port,) = free_ports(1)
    storage = S3Storage(
        s3.bucket,
        endpoint_url=f"http://127.0.0.1:{dead_port}",
        upload_attempts=3,
        backoff_seconds=0.05,
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StorageError) as info:
        storage.save(new_job_id(), "wav", b"RIFF")
    assert "failed after 3 attempt(s): EndpointConnectionError" in str(info.value)
    assert type(info.value.__cause__).__name__ == "EndpointConnectionError"
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert [r.getMessage().split("(attempt ")[1][:3] for r in retries] == ["1/3", "2/3"]
    assert time.monotonic() - started >= 0.05 + 0.1 * 0.8  # backoff doubled between tries


def test_frozen_server_times_out_and_retries_until_it_is_back(s3: S3Server) -> None:
    impatient = make_storage(s3, upload_attempts=2, backoff_seconds=0.05, read_timeout=0.3)
    patient = make_storage(s3, upload_attempts=5, backoff_seconds=0.1, read_timeout=0.5)
    with s3.paused():
        with pytest.raises(StorageError, match=r"failed after 2 attempt\(s\): ReadTimeoutError"):
            impatient.save(new_job_id(), "wav", b"lost")
        # Resume the server while the next upload is retrying: that upload must succeed.
        timer = threading.Timer(0.8, s3.process.send_signal, args=(signal.SIGCONT,))
        timer.start()
        key = patient.save(new_job_id(), "wav", b"kept")
        timer.join()
    body = s3.client.get_object(Bucket=s3.bucket, Key=f"stable-audio/jobs/{key}")["Body"]
    assert body.read() == b"kept"


def test_client_errors_are_not_retried(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    storage = make_storage(s3, backoff_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"failed after 1 attempt\(s\): ClientError"):
        storage.save(new_job_id(), "wav", b"RIFF")
    assert time.monotonic() - started < 1
