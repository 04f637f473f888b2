"""End-to-end hardening against a real ``bentoml serve``: crashes, shutdowns, hostile clients.

Process tests: a ``kill -9`` of the server's process group must not leave a BentoML worker
behind (it runs in a session of its own, out of the group's reach), and a SIGTERM gives the
running job back to the queue at once. Leases are 60 s here, so a job seen ``queued`` within
seconds was released, not expired.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from stable_audio_bento.jobs import Job, SQLiteJobStore
from tests.conftest import serve_env
from tests.e2e.test_jobs import submit, wait_for
from tests.servers import BentoServer, start_bento

pytestmark = pytest.mark.e2e

LONG_LEASE = {"STABLE_AUDIO_JOB_LEASE_SECONDS": "60"}
# Far longer than any check below (hundreds of steps of the demo: over ten seconds here).
LONG: dict[str, Any] = {"prompt": "a very long drone", "duration": 1.0, "steps": 500}


def job_in_store(workdir: Path, job_id: str) -> Job:
    """The job as the SQLite store on disk has it (no server needed)."""
    with SQLiteJobStore(workdir / "state" / "jobs.sqlite3") as store:
        return store.get(job_id)


def wait_until_queued(workdir: Path, job_id: str, timeout: float) -> tuple[Job, float]:
    began = time.monotonic()
    while True:
        job = job_in_store(workdir, job_id)
        if job.status == "queued" or time.monotonic() - began > timeout:
            return job, time.monotonic() - began
        time.sleep(0.1)


def start_long_job(server: BentoServer) -> dict[str, Any]:
    job = submit(server.url, LONG)
    return wait_for(
        server.url, job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] > 0
    )


def test_kill_of_the_process_group_leaves_no_worker_behind(demo_tag: str, tmp_path: Path) -> None:
    server = start_bento(serve_env(tmp_path, **LONG_LEASE), tmp_path / "server.log")
    workers: list[psutil.Process] = []
    try:
        workers = psutil.Process(server.process.pid).children(recursive=True)
        assert workers, "bentoml serve started no worker process"
        running = start_long_job(server)
        # What `kill -9 -PGID` does: the supervisor's group only. The workers are in their
        # own sessions, so this alone used to leave them serving.
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == [], f"still running 30 s after the kill: {alive}"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health", timeout=5)
        # On its way out the orphaned worker gave its job back (the lease had ~55 s to go).
        job = job_in_store(tmp_path, running["id"])
        assert (job.status, job.lease_owner, job.attempts) == ("queued", None, 0), job
    finally:
        for worker in workers:
            if worker.is_running():
                worker.kill()
        server.kill()
    assert "The supervisor (pid" in server.log()


def test_sigterm_requeues_the_running_job_at_once(demo_tag: str, tmp_path: Path) -> None:
    server = start_bento(serve_env(tmp_path, **LONG_LEASE), tmp_path / "server.log")
    try:
        running = start_long_job(server)
        step = running["progress"]["step"]
        assert step < LONG["steps"] // 2
        os.killpg(server.process.pid, signal.SIGTERM)
        job, took = wait_until_queued(tmp_path, running["id"], timeout=10)
        assert (job.status, job.lease_owner, job.attempts) == ("queued", None, 0), job
        assert took < 5.0, f"requeued {took:.1f} s after SIGTERM"
        server.process.wait(60)
    finally:
        server.kill()

    # A new server on the same store runs it to the end.
    second = start_bento(serve_env(tmp_path, **LONG_LEASE), tmp_path / "server.log")
    try:
        done = wait_for(second.url, running["id"], timeout=240)
        assert (done["status"], done["attempts"]) == ("succeeded", 1), done
    finally:
        second.stop()
