"""End-to-end: jobs outlive the processes that run them.

A ``kill -9`` of the whole server group (no shutdown hook runs, as in a crash or an OOM kill)
while a job is generating: with SQLite, a restart on the same output directory finishes it;
with two replicas on one Redis and one S3 bucket, the survivor takes the dead replica's job once
its lease expires. Leases are 3 s here, so a dead worker's job is taken again quickly.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import serve_env
from tests.e2e.test_jobs import FAST, SLOW, check_audio, get_job, submit, wait_all, wait_for
from tests.servers import BentoServer, redis_server, seaweedfs_s3, start_bento

LEASE = {"STABLE_AUDIO_JOB_LEASE_SECONDS": "3"}
# Several seconds of generation (about 7 s here): progress is recorded with each lease
# heartbeat (1 s with these leases), so a job must span several of them to be seen, and
# killed, in its first half.
MEDIUM: dict[str, Any] = {"prompt": "footsteps on gravel", "duration": 1.0, "steps": 200}


def worker_pid(view: dict[str, Any]) -> int:
    """The process id in a worker id (``{host}-{pid}-{random}/{thread}``)."""
    return int(view["worker"].split("/")[0].rsplit("-", 2)[1])


def server_pids(server: BentoServer) -> set[int]:
    """The processes of a ``bentoml serve``: the supervisor and the workers it started."""
    supervisor = psutil.Process(server.process.pid)
    return {supervisor.pid, *(p.pid for p in supervisor.children(recursive=True))}


def test_sqlite_job_survives_kill_and_restart(demo_tag: str, tmp_path: Path) -> None:
    env = serve_env(tmp_path, **LEASE)
    log = tmp_path / "server.log"
    first = start_bento(env, log)
    try:
        done = wait_for(first.url, submit(first.url, FAST)["id"])
        assert done["status"] == "succeeded"
        audio_before = httpx.get(done["download_url"], timeout=30).content
        slow = submit(first.url, SLOW)
        queued = [submit(first.url, FAST)["id"] for _ in range(3)]
        running = wait_for(
            first.url,
            slow["id"],
            lambda j: j["status"] == "running" and j["progress"]["step"] > 0,
        )
    finally:
        first.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{first.url}/health", timeout=5)

    # Same output directory and job database; a new process (and port).
    second = start_bento(env, log)
    try:
        job = wait_for(second.url, slow["id"])
        assert (job["status"], job["attempts"]) == ("succeeded", 2), job
        assert job["progress"] == {"step": 60, "total": 60}
        assert worker_pid(job) != worker_pid(running)
        check_audio(httpx.get(job["download_url"], timeout=30).content, "wav", 1.0)
        for view in wait_all(second.url, queued):
            assert (view["status"], view["attempts"]) == ("succeeded", 1), view

        # What finished before the crash is still there, with its audio.
        kept = get_job(second.url, done["id"]).json()
        assert (kept["status"], kept["finished_at"]) == ("succeeded", done["finished_at"])
        assert kept["download_url"].startswith(second.url)
        assert httpx.get(kept["download_url"], timeout=30).content == audio_before
    finally:
        second.stop()


def test_two_replicas_drain_one_queue_and_survive_a_kill(demo_tag: str, tmp_path: Path) -> None:
    with redis_server() as redis, seaweedfs_s3("replicas") as s3:

        def start(name: str) -> BentoServer:
            env = serve_env(
                tmp_path / name,
                **LEASE,
                **s3.env(),
                STABLE_AUDIO_JOB_STORE="redis",
                STABLE_AUDIO_REDIS_URL=redis.url,
                STABLE_AUDIO_STORAGE_BUCKET=s3.bucket,
                STABLE_AUDIO_STORAGE_PREFIX="shared",
                STABLE_AUDIO_STORAGE_ENDPOINT_URL=s3.endpoint_url,
            )
            (tmp_path / name).mkdir()
            return start_bento(env, tmp_path / name / "server.log")

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(start, name) for name in ("a", "b")]
            a, b = (f.result() for f in futures)
        try:
            replica = {pid: name for name, s in (("a", a), ("b", b)) for pid in server_pids(s)}
            ids = [submit((a, b)[i % 2].url, MEDIUM)["id"] for i in range(8)]

            # Kill b in the first half of a job, once it has finished one of its own.
            deadline = time.monotonic() + 240
            victim: dict[str, Any] | None = None
            while victim is None:
                assert time.monotonic() < deadline, "replica b was never caught mid-job"
                listed = httpx.get(f"{a.url}/jobs", params={"limit": 100}, timeout=30).json()
                views = [v for v in listed["jobs"] if v["id"] in ids]
                on_b = [v for v in views if v["worker"] and replica[worker_pid(v)] == "b"]
                generating = [
                    v
                    for v in on_b
                    if v["status"] == "running"
                    and 0 < v["progress"]["step"] <= v["progress"]["total"] // 2
                ]
                if generating and any(v["status"] == "succeeded" for v in on_b):
                    victim = generating[0]
                if victim is None and not any(v["status"] == "queued" for v in views):
                    # A slow poll on a busy machine can miss every job's first half: keep
                    # both replicas fed until one is caught there.
                    ids += [submit(s.url, MEDIUM)["id"] for s in (a, b)]
                time.sleep(0.1)
            b.kill()

            final = wait_all(a.url, ids, timeout=300)
            assert [v["status"] for v in final] == ["succeeded"] * len(ids), final
            retaken = next(v for v in final if v["id"] == victim["id"])
            assert retaken["attempts"] == 2 and replica[worker_pid(retaken)] == "a"
            # Both replicas finished jobs from the one queue (b's count those before the kill).
            ran = collections.Counter(replica[worker_pid(v)] for v in final)
            assert ran["a"] >= 1 and ran["b"] >= 1, ran

            names = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]}
            assert names >= {f"shared/{i}.wav" for i in ids}
            audio = httpx.get(retaken["download_url"], timeout=30)
            assert audio.status_code == 200
            check_audio(audio.content, "wav", 1.0)
        finally:
            a.stop()
            b.kill()
