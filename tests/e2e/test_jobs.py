"""End-to-end: the durable job API against real servers.

Three ``bentoml serve`` set-ups cover both job stores and both storages: the shared ``server``
(SQLite, local directory), ``redis_s3_server`` (Redis, SeaweedFS S3 with presigned URLs) and
``small_server`` (SQLite, S3 behind a public base URL, a two-job queue, five seconds of
retention and a two-second S3 timeout, so that full queues, retention and a stalled S3 show
within a test). Audio is downloaded from ``download_url`` and checked with ffprobe / ffmpeg.

Idempotency: a retried ``POST /jobs`` with the same ``Idempotency-Key`` and the same body
returns the same job; the same key with a different body is a 409, never a silent replay.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from stable_audio_bento.formats import FORMATS
from tests.conftest import serve_env
from tests.servers import (
    BentoServer,
    RedisServer,
    S3Server,
    bento_serve,
    redis_server,
    seaweedfs_s3,
)

pytestmark = pytest.mark.skipif(
    shutil.which("ffprobe") is None, reason="needs ffprobe (apt-get ffmpeg)"
)

FINISHED = ("succeeded", "failed", "canceled")
RATE = 44100
# Expected stream of each format: (codec, sample rate). Opus is always 48 kHz.
STREAMS = {
    "wav": ("pcm_s16le", RATE),
    "pcm": ("pcm_s16le", RATE),
    "flac": ("flac", RATE),
    "mp3": ("mp3", RATE),
    "aac": ("aac", RATE),
    "opus": ("opus", 48000),
}
# A job of about a second on the demo model; SLOW runs for several seconds (every step
# denoises the model's whole window), long enough to see it running and act on it.
FAST: dict[str, Any] = {"prompt": "rain on a tin roof", "duration": 1.0, "steps": 4}
SLOW: dict[str, Any] = {"prompt": "a long thunderstorm", "duration": 1.0, "steps": 60}
BUCKET = "jobs-e2e"
PUBLIC_PREFIX = "public-jobs"  # readable without credentials, as behind a CDN
SMALL_RETENTION = 5.0


# ------------------------------------------------------------------------------- helpers
def submit(base_url: str, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """``POST /jobs``; asserts the 202 and returns the job view."""
    r = httpx.post(f"{base_url}/jobs", json=body or FAST, headers=headers, timeout=30)
    assert r.status_code == 202, r.text
    view: dict[str, Any] = r.json()
    assert r.headers["location"] == view["status_url"]
    return view


def get_job(base_url: str, job_id: str) -> httpx.Response:
    return httpx.get(f"{base_url}/jobs/{job_id}", timeout=30)


def wait_for(
    base_url: str,
    job_id: str,
    until: Any = lambda job: job["status"] in FINISHED,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until ``until(view)``; fails on a timeout or a 404."""
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = get_job(base_url, job_id)
        assert r.status_code == 200, r.text
        view = r.json()
        if until(view):
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {view}")


def wait_all(base_url: str, job_ids: list[str], timeout: float = 240.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    return [wait_for(base_url, i, timeout=max(1.0, deadline - time.monotonic())) for i in job_ids]


def probe_audio(data: bytes, fmt: str) -> dict[str, Any]:
    """Codec, sample rate, channels (ffprobe) and the decoded length in seconds (ffmpeg)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"audio.{FORMATS[fmt].extension}"
        path.write_bytes(data)
        raw = ["-f", "s16le", "-sample_rate", str(RATE), "-ch_layout", "stereo"]
        raw = raw if fmt == "pcm" else []
        probe = subprocess.run(
            ["ffprobe", "-v", "error", *raw, "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            check=True,
        )
        (stream,) = json.loads(probe.stdout)["streams"]
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", *raw, "-i", str(path), "-f", "f32le", "-ac", "1", "-"],
            capture_output=True,
            check=True,
        ).stdout
    rate = int(stream["sample_rate"])
    return {
        "codec": stream["codec_name"],
        "sample_rate": rate,
        "channels": int(stream["channels"]),
        "seconds": len(decoded) / 4 / rate,
    }


def check_audio(data: bytes, fmt: str, seconds: float) -> None:
    audio = probe_audio(data, fmt)
    codec, rate = STREAMS[fmt]
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == (codec, rate, 2)
    # Lossy codecs pad to whole frames (and AAC adds priming): allow a few frames.
    assert seconds - 0.01 <= audio["seconds"] <= seconds + 0.1, audio


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value} has no time zone"
    return parsed


def raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..`` or ``%2F``)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def output_dir(server: BentoServer) -> Path:
    return Path(server.env["STABLE_AUDIO_OUTPUT_DIR"])


# ------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """One SeaweedFS for the module; its bucket is private except under ``PUBLIC_PREFIX``."""
    with seaweedfs_s3(BUCKET) as server:
        public_read = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{BUCKET}/{PUBLIC_PREFIX}/*"],
                }
            ],
        }
        server.client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read))
        yield server


def s3_env(s3: S3Server, prefix: str) -> dict[str, str]:
    return {
        **s3.env(),
        "STABLE_AUDIO_STORAGE_BUCKET": s3.bucket,
        "STABLE_AUDIO_STORAGE_PREFIX": prefix,
        "STABLE_AUDIO_STORAGE_ENDPOINT_URL": s3.endpoint_url,
        "STABLE_AUDIO_STORAGE_REGION": s3.region,
    }


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture(scope="module")
def redis_s3_server(
    demo_tag: str, s3: S3Server, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    """Jobs in Redis, outputs in S3, downloads by presigned URL."""
    workdir = tmp_path_factory.mktemp("redis-s3")
    env = serve_env(
        workdir,
        STABLE_AUDIO_JOB_STORE="redis",
        STABLE_AUDIO_REDIS_URL=redis.url,
        STABLE_AUDIO_PRESIGNED_URL_EXPIRES="600",
        STABLE_AUDIO_JOB_RETRY_AFTER="3",
        **s3_env(s3, "redis-jobs"),
    )
    with bento_serve(env, workdir / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def small_server(
    demo_tag: str, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    """SQLite jobs, S3 outputs behind a public base URL, tight limits."""
    workdir = tmp_path_factory.mktemp("small")
    env = serve_env(
        workdir,
        STABLE_AUDIO_JOB_QUEUE_SIZE="2",
        STABLE_AUDIO_JOB_RETRY_AFTER="7",
        STABLE_AUDIO_JOB_RETENTION_SECONDS=str(SMALL_RETENTION),
        STABLE_AUDIO_STORAGE_PUBLIC_BASE_URL=f"{s3.endpoint_url}/{s3.bucket}",
        STABLE_AUDIO_STORAGE_TIMEOUT="2",
        STABLE_AUDIO_STORAGE_UPLOAD_ATTEMPTS="2",
        **s3_env(s3, PUBLIC_PREFIX),
    )
    with bento_serve(env, workdir / "server.log") as running:
        yield running


@pytest.fixture(params=["server", "redis_s3_server"], ids=["sqlite-local", "redis-s3"])
def any_server(request: pytest.FixtureRequest) -> BentoServer:
    """Both job stores and both storages (and, where a test asks, the SA3 demo's server)."""
    server: BentoServer = request.getfixturevalue(request.param)
    return server


# ------------------------------------------------------------------------------ the flow
@pytest.mark.parametrize(
    "any_server",
    ["server", "redis_s3_server", "sa3_server"],
    ids=["sqlite-local", "redis-s3", "sa3-demo"],
    indirect=True,
)
def test_job_lifecycle(any_server: BentoServer) -> None:
    base = any_server.url
    default_model = httpx.get(f"{base}/health", timeout=30).json()["default_model"]
    body = {**FAST, "seed": 1234, "prompt": "a dog barks twice"}
    created = submit(base, body)
    assert created["status"] == "queued"
    assert created["status_url"] == f"{base}/jobs/{created['id']}"
    assert created["download_url"] is None

    job = wait_for(base, created["id"])
    assert job["status"] == "succeeded", job
    assert job["id"] == created["id"] and job["error"] is None
    assert job["progress"] == {"step": 4, "total": 4}
    assert (job["seed"], job["request"]["seed"]) == (1234, 1234)
    assert job["request"]["prompt"] == "a dog barks twice"
    assert (job["model"], job["response_format"]) == (default_model, "wav")
    assert (job["sample_rate"], job["duration"], job["attempts"]) == (RATE, 1.0, 1)
    assert job["worker"]
    created_at, started_at, finished_at = (
        parse_time(job[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created_at <= started_at <= finished_at
    assert (finished_at - created_at).total_seconds() < 180

    audio = httpx.get(job["download_url"], timeout=30)
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    check_audio(audio.content, "wav", 1.0)

    # The worker runs the same pipeline as the sync API: same request and seed, same bytes.
    sync = httpx.post(f"{base}/v1/audio/generations", json=body, timeout=120)
    assert sync.status_code == 200, sync.text
    assert sync.content == audio.content


def test_random_seed_is_fixed_at_submit(any_server: BentoServer) -> None:
    created = submit(any_server.url, {**FAST, "seed": -1})
    assert isinstance(created["seed"], int) and created["seed"] >= 0
    assert created["request"]["seed"] == created["seed"]
    job = wait_for(any_server.url, created["id"])
    assert (job["status"], job["seed"]) == ("succeeded", created["seed"])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_through_jobs(any_server: BentoServer, fmt: str) -> None:
    created = submit(any_server.url, {**FAST, "duration": 1.5, "response_format": fmt})
    job = wait_for(any_server.url, created["id"])
    assert job["status"] == "succeeded", job
    assert urlsplit(job["download_url"]).path.endswith(f"/{job['id']}.{FORMATS[fmt].extension}")
    audio = httpx.get(job["download_url"], timeout=30)
    assert audio.status_code == 200, audio.text
    assert audio.headers["content-type"] == FORMATS[fmt].media_type
    assert job["sample_rate"] == STREAMS[fmt][1]
    check_audio(audio.content, fmt, 1.5)


def test_presigned_download_url(redis_s3_server: BentoServer, s3: S3Server) -> None:
    job = wait_for(redis_s3_server.url, submit(redis_s3_server.url, FAST)["id"])
    url = urlsplit(job["download_url"])
    assert f"{url.scheme}://{url.netloc}" == s3.endpoint_url
    assert url.path == f"/{s3.bucket}/redis-jobs/{job['id']}.wav"
    assert "X-Amz-Expires=600" in url.query and "X-Amz-Signature=" in url.query
    assert httpx.get(job["download_url"], timeout=30).status_code == 200
    # The bucket is private: the signature is what opens it.
    unsigned = f"{url.scheme}://{url.netloc}{url.path}"
    assert httpx.get(unsigned, timeout=30).status_code == 403


def test_public_base_url_download(small_server: BentoServer, s3: S3Server) -> None:
    job = wait_for(
        small_server.url, submit(small_server.url, {**FAST, "response_format": "mp3"})["id"]
    )
    assert job["status"] == "succeeded", job["error"]
    expected = f"{s3.endpoint_url}/{s3.bucket}/{PUBLIC_PREFIX}/{job['id']}.mp3"
    assert job["download_url"] == expected
    audio = httpx.get(expected, timeout=30)  # anonymous, as through a CDN
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/mpeg"
    check_audio(audio.content, "mp3", 1.0)


def test_list_recent_jobs(any_server: BentoServer) -> None:
    ids = [submit(any_server.url, FAST)["id"] for _ in range(3)]
    r = httpx.get(f"{any_server.url}/jobs", params={"limit": 3}, timeout=30)
    assert r.status_code == 200
    listed = r.json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    assert all(j["status_url"] == f"{any_server.url}/jobs/{j['id']}" for j in listed)
    assert httpx.get(f"{any_server.url}/jobs", params={"limit": 0}, timeout=30).status_code == 422
    wait_all(any_server.url, ids)


# ------------------------------------------------------------------------------- cancel
def test_cancel_queued_and_running_jobs(any_server: BentoServer) -> None:
    base = any_server.url
    running = submit(base, SLOW)
    wait_for(base, running["id"], lambda j: j["status"] == "running")
    queued = submit(base, FAST)  # one worker thread: waits behind the slow job
    assert get_job(base, queued["id"]).json()["status"] == "queued"

    r = httpx.post(f"{base}/jobs/{queued['id']}/cancel", timeout=30)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["attempts"]) == ("canceled", 0)
    assert r.json()["finished_at"] is not None

    r = httpx.post(f"{base}/jobs/{running['id']}/cancel", timeout=30)
    assert r.status_code == 200
    assert r.json()["cancel_requested"] is True
    assert r.json()["status"] in ("running", "canceled")
    job = wait_for(base, running["id"])
    # A diffusion batch is not interrupted: the cancel takes effect when it ends, and the
    # audio is discarded.
    assert (job["status"], job["download_url"]) == ("canceled", None)
    assert get_job(base, queued["id"]).json()["status"] == "canceled"  # and it never ran
    assert get_job(base, queued["id"]).json()["started_at"] is None

    # Cancel is idempotent on finished jobs and never changes their outcome.
    again = httpx.post(f"{base}/jobs/{running['id']}/cancel", timeout=30).json()
    assert again["status"] == "canceled"
    done = wait_for(base, submit(base, FAST)["id"])
    after = httpx.post(f"{base}/jobs/{done['id']}/cancel", timeout=30).json()
    assert (after["status"], after["download_url"] is not None) == ("succeeded", True)

    missing = httpx.post(f"{base}/jobs/{'0' * 32}/cancel", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFoundError"


# -------------------------------------------------------------------------- idempotency
def test_idempotency_key(any_server: BentoServer) -> None:
    base = any_server.url
    key = f"order-{os.urandom(8).hex()}"
    first = submit(base, FAST, **{"Idempotency-Key": key})
    retry = submit(base, FAST, **{"Idempotency-Key": key})
    assert retry["id"] == first["id"]
    assert submit(base, FAST)["id"] != first["id"]  # no key: a new job every time

    # Same key, different body: refused, naming the job the key belongs to.
    r = httpx.post(
        f"{base}/jobs", json={**FAST, "prompt": "other"}, headers={"Idempotency-Key": key}
    )
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "ConflictError",
        "Idempotency-Key",
        409,
    )
    assert first["id"] in error["message"]

    # A random-seed request can be retried as is, or with the seed it was given.
    key = f"random-{os.urandom(8).hex()}"
    job = submit(base, {**FAST, "seed": -1}, **{"Idempotency-Key": key})
    assert submit(base, {**FAST, "seed": -1}, **{"Idempotency-Key": key})["id"] == job["id"]
    same_seed = {**FAST, "seed": job["seed"]}
    assert submit(base, same_seed, **{"Idempotency-Key": key})["id"] == job["id"]
    other_seed = {**FAST, "seed": (job["seed"] + 1) % 2**32}
    r = httpx.post(f"{base}/jobs", json=other_seed, headers={"Idempotency-Key": key})
    assert r.status_code == 409

    # Concurrent retries (a client that timed out and retried at once) still make one job.
    key = f"burst-{os.urandom(8).hex()}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        views = list(pool.map(lambda _: submit(base, FAST, **{"Idempotency-Key": key}), range(8)))
    assert len({v["id"] for v in views}) == 1
    ids = [first["id"], job["id"], views[0]["id"]]
    assert {j["status"] for j in wait_all(base, ids)} == {"succeeded"}


def test_job_ids_are_unguessable(server: BentoServer) -> None:
    ids = [submit(server.url, FAST)["id"] for _ in range(16)]
    assert len(set(ids)) == 16
    for job_id in ids:
        assert len(job_id) == 32 and int(job_id, 16) >= 0 and job_id == job_id.lower()
    # 128 random bits each: every hex digit shows up, and ids made in a burst share no
    # prefix (a counter or a timestamp would).
    assert set("".join(ids)) == set("0123456789abcdef")
    assert len({job_id[:6] for job_id in ids}) == 16
    neighbour = ids[0][:-1] + ("0" if ids[0][-1] != "0" else "1")
    assert get_job(server.url, neighbour).status_code == 404
    wait_all(server.url, ids)


# ------------------------------------------------------------------------ local outputs
def test_outputs_refuse_path_traversal(server: BentoServer) -> None:
    job = wait_for(server.url, submit(server.url, FAST)["id"])
    key = f"{job['id']}.wav"
    assert job["download_url"] == f"{server.url}/outputs/{key}"
    status, body = raw_get(server.url, f"/outputs/{key}")
    assert status == 200 and body[:4] == b"RIFF"

    outputs = output_dir(server)
    # The job database is kept out of the served directory (it is in the state directory).
    assert not (outputs / "jobs.sqlite3").exists()
    assert (outputs.parent / "state" / "jobs.sqlite3").is_file()
    (outputs / "jobs.sqlite3").write_bytes(b"SQLite format 3\0 planted")
    link = outputs / f"{'e' * 32}.wav"
    link.symlink_to("/etc/passwd")
    inner = outputs / f"{'d' * 32}.wav"
    inner.symlink_to(outputs / key)  # inside the directory, to a real output: refused too
    (outputs / "failed-uploads").mkdir(exist_ok=True)
    (outputs / "failed-uploads" / key).write_bytes(b"RIFF kept")
    try:
        for path in [
            "/outputs/jobs.sqlite3",
            "/outputs/../jobs.sqlite3",
            "/outputs/..%2Fjobs.sqlite3",
            "/outputs/%2e%2e%2fjobs.sqlite3",
            "/outputs/%2e%2e/%2e%2e/etc/passwd",
            "/outputs/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
            "/outputs/%2Fetc%2Fpasswd",
            f"/outputs/failed-uploads%2F{key}",
            f"/outputs/{key}%00.txt",
            f"/outputs/{key.upper()}",
            f"/outputs/{link.name}",  # a symlink out of the directory
            f"/outputs/{inner.name}",  # a symlink within it
            f"/outputs/{'f' * 32}.wav",  # well-formed, but no such output
        ]:
            status, body = raw_get(server.url, path)
            assert status == 404, (path, status, body[:200])
            assert b"SQLite format" not in body and b"root:" not in body, path
    finally:
        link.unlink()
        inner.unlink()
        (outputs / "jobs.sqlite3").unlink()


# ---------------------------------------------------------- limits, retention, S3 trouble
def test_full_queue_answers_429_and_keeps_every_accepted_job(small_server: BentoServer) -> None:
    base = small_server.url
    running = submit(base, SLOW)
    wait_for(base, running["id"], lambda j: j["status"] == "running")
    accepted = [running["id"], submit(base, FAST)["id"], submit(base, FAST)["id"]]

    for _ in range(3):
        r = httpx.post(f"{base}/jobs", json=FAST, timeout=30)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "7"
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("RateLimitError", 429)
        assert "queue is full" in error["message"]

    outcomes = {}
    for job_id in accepted:
        job = wait_for(base, job_id)
        outcomes[job_id] = job["status"]
    assert set(outcomes.values()) == {"succeeded"}
    # Room again once the queue drains.
    later = submit(base, FAST)
    assert wait_for(base, later["id"])["status"] == "succeeded"


def gone(base_url: str, job_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get_job(base_url, job_id).status_code == 404:
            return True
        time.sleep(0.2)
    return False


def test_retention_deletes_jobs_and_their_files(small_server: BentoServer, s3: S3Server) -> None:
    base = small_server.url
    job = wait_for(base, submit(base, FAST)["id"])
    assert job["status"] == "succeeded"
    name = f"{PUBLIC_PREFIX}/{job['id']}.wav"
    assert s3.client.head_object(Bucket=s3.bucket, Key=name)["ContentLength"] > 0

    # Swept every quarter of the retention: gone within 1.25 x retention, plus slack.
    assert gone(base, job["id"], timeout=SMALL_RETENTION * 1.25 + 10)
    r = get_job(base, job["id"])
    assert r.json()["error"]["type"] == "NotFoundError"
    listed = httpx.get(f"{base}/jobs", params={"limit": 500}, timeout=30).json()["jobs"]
    assert job["id"] not in {j["id"] for j in listed}
    objects = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=name).get("Contents", [])
    assert objects == []
    assert httpx.get(job["download_url"], timeout=30).status_code == 404


def test_stalled_s3_fails_the_job_and_keeps_the_audio_until_retention(
    small_server: BentoServer, s3: S3Server
) -> None:
    base = small_server.url
    kept_dir = output_dir(small_server) / "failed-uploads"
    with s3.paused():
        created = submit(base, {**FAST, "response_format": "flac"})
        job = wait_for(base, created["id"], timeout=120)
        kept = kept_dir / f"{job['id']}.flac"
        data = kept.read_bytes()  # read at once: retention is short on this server
    assert job["status"] == "failed", job
    assert job["download_url"] is None
    # The client is told what happened; the bucket, the path and the host are in the log,
    # under the error id the message quotes.
    assert job["error"].startswith("Storing the output failed: The upload failed on the server")
    assert job["error"].endswith("A copy of the audio is kept on the server until the job expires.")
    assert PUBLIC_PREFIX not in job["error"] and str(kept) not in job["error"]
    error_id = job["error"].split("error id ")[1].split(")")[0]
    logged = [line for line in small_server.log().splitlines() if error_id in line]
    assert logged and "ReadTimeoutError" in logged[0] and str(kept) in logged[0], logged
    check_audio(data, "flac", 1.0)

    # Local copies of failed uploads expire with their job.
    assert gone(base, job["id"], timeout=SMALL_RETENTION * 1.25 + 10)
    deadline = time.monotonic() + 5
    while kept.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not kept.exists()


def test_short_s3_stall_is_retried(small_server: BentoServer, s3: S3Server) -> None:
    base = small_server.url
    with s3.paused():
        created = submit(base, FAST)
        # The first upload attempt times out (2 s) against the frozen server; S3 comes back
        # before the second one gives up.
        retrying = f"Upload of {PUBLIC_PREFIX}/{created['id']}.wav failed (attempt 1/2)"
        deadline = time.monotonic() + 60
        while retrying not in small_server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert retrying in small_server.log()
    job = wait_for(base, created["id"], timeout=60)
    assert job["status"] == "succeeded", job["error"]
    audio = httpx.get(job["download_url"], timeout=30)
    assert audio.status_code == 200
    check_audio(audio.content, "wav", 1.0)


def test_redis_outage_is_a_503_that_changes_nothing(
    redis_s3_server: BentoServer, redis: RedisServer
) -> None:
    base = redis_s3_server.url
    before = wait_for(base, submit(base, FAST)["id"])
    assert before["status"] == "succeeded"
    os.kill(redis.process.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        response = httpx.post(
            f"{base}/jobs", json=FAST, headers={"Idempotency-Key": "outage-1"}, timeout=60
        )
        assert time.monotonic() - started < 20, "a silent Redis must not hang the request"
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "3"
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("ServiceUnavailableError", 503)
        assert error["message"].startswith("The job store is unavailable (TimeoutError")
        assert get_job(base, before["id"]).status_code == 503
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)

    # Nothing was created by the refused POST: the same key now makes one new job, which runs.
    job = submit(base, FAST, **{"Idempotency-Key": "outage-1"})
    assert job["status"] == "queued"
    assert wait_for(base, job["id"])["status"] == "succeeded"
    after = get_job(base, before["id"]).json()
    keys = ("status", "seed", "finished_at", "attempts", "worker")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
