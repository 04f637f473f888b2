"""End-to-end hardening against a real ``bentoml serve``: crashes, shutdowns, hostile clients.

Process tests: a ``kill -9`` of the server's process group must not leave a BentoML worker
behind (it runs in a session of its own, out of the group's reach), and a SIGTERM gives the
running job back to the queue at once. Leases are 60 s here, so a job seen ``queued`` within
seconds was released, not expired.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from stable_audio_bento.jobs import Job, SQLiteJobStore
from tests.conftest import serve_env
from tests.e2e.test_jobs import submit, wait_for
from tests.servers import BentoServer, start_bento

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


# ------------------------------------------------------------------ hostile clients
JSON_TYPE = {"content-type": "application/json"}
GUARDED = {"STABLE_AUDIO_MAX_CONCURRENCY": "4", "STABLE_AUDIO_MAX_PROMPT_CHARS": "100"}


@pytest.fixture(scope="module")
def guarded(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("guarded")
    server = start_bento(serve_env(workdir, **GUARDED), workdir / "server.log")
    try:
        yield server
    finally:
        server.stop()


def envelope_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == response.status_code
    return error


@pytest.mark.parametrize(
    "path", ["/v1/audio/generate", "/api/generate", "/api/generate_async/submit"]
)
@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"input":"rain","audio_length":NaN}', "audio_length"),
        ('{"input":"rain","audio_length":Infinity}', "audio_length"),
        ('{"input":"rain\\ud800","audio_length":1}', "input"),
        ('{"input": "rain", ', None),
    ],
)
def test_bad_json_is_a_400_envelope_on_every_route(
    guarded: BentoServer, path: str, raw: str, param: str | None
) -> None:
    response = httpx.post(
        f"{guarded.url}{path}",
        content=raw.encode(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = envelope_of(response)
    assert (error["type"], error["param"]) == ("BadRequestError", param)


def test_bodies_and_prompts_are_bounded(guarded: BentoServer) -> None:
    big = httpx.post(f"{guarded.url}/jobs", json={"prompt": "x" * 100_000}, timeout=30)
    assert big.status_code == 413 and envelope_of(big)["param"] == "body"
    long = httpx.post(f"{guarded.url}/generate", json={"prompt": "x" * 101}, timeout=30)
    assert long.status_code == 422
    assert long.json()["detail"][0]["loc"] == ["body", "prompt"]
    native = httpx.post(f"{guarded.url}/api/generate", json={"input": "x" * 101}, timeout=30)
    assert native.status_code == 422 and envelope_of(native)["param"] == "input"


def test_native_errors_are_the_envelope_and_tasks_are_checked_at_submit(
    guarded: BentoServer,
) -> None:
    unknown = httpx.post(
        f"{guarded.url}/api/generate", json={"input": "rain", "model": "nope"}, timeout=30
    )
    assert unknown.status_code == 404
    assert envelope_of(unknown) == {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    missing = httpx.post(f"{guarded.url}/api/generate", json={"audio_length": 1}, timeout=30)
    assert missing.status_code == 400 and envelope_of(missing)["param"] == "input"
    submit = f"{guarded.url}/api/generate_async/submit"
    too_long = httpx.post(submit, json={"input": "rain", "audio_length": 1000}, timeout=30)
    assert too_long.status_code == 400 and envelope_of(too_long)["param"] == "audio_length"
    no_model = httpx.post(submit, json={"input": "rain", "model": "nope"}, timeout=30)
    assert no_model.status_code == 404 and envelope_of(no_model)["param"] == "model"
    good = httpx.post(submit, json={"input": "rain", "audio_length": 1}, timeout=30)
    assert good.status_code == 200 and good.json()["task_id"]
    status = httpx.get(f"{guarded.url}/api/generate_async/status", timeout=30)
    assert status.status_code == 400 and envelope_of(status)["param"] == "task_id"
    # BentoML runs a task as its submit's background: it holds an in-flight slot until it is
    # done, so it is waited for here (the next test counts the slots).
    deadline = time.monotonic() + 120
    while True:
        answer = httpx.get(
            f"{guarded.url}/api/generate_async/status",
            params={"task_id": good.json()["task_id"]},
            timeout=30,
        ).json()
        if answer["status"] not in ("pending", "in_progress"):
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    assert answer["status"] == "completed", answer


class HeldRequest:
    """A generation request on a socket of its own, held open before its body.

    ``Expect: 100-continue``: the server answers ``100 Continue`` when the app first reads the
    body, which the request guard does inside the in-flight bound, so once it has answered the
    request is counted, however loaded the machine; ``finish`` sends the body.
    """

    def __init__(self, url: str, body: bytes) -> None:
        address = httpx.URL(url)
        self.body = body
        self.sock = socket.create_connection((address.host, address.port), timeout=60)
        head = (
            f"POST /v1/audio/generate HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        self.interim = self._head()

    def _head(self) -> bytes:
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            chunk = self.sock.recv(1)
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    def finish(self) -> int:
        """Send the body; the final status (the response is read whole)."""
        self.sock.sendall(self.body)
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        response.read()
        self.sock.close()
        return response.status


def test_over_the_concurrency_limit_is_our_429(guarded: BentoServer) -> None:
    # Four requests in flight, held before their bodies, so the bound is reached however fast
    # the model generates and however loaded the machine: the fifth is refused, not raced.
    body = json.dumps({"input": "rain", "audio_length": 1, "num_inference_steps": 8}).encode()
    held = [HeldRequest(guarded.url, body) for _ in range(4)]
    try:
        assert all(h.interim.startswith(b"HTTP/1.1 100") for h in held), [h.interim for h in held]
        refused = httpx.post(
            f"{guarded.url}/v1/audio/generate", content=body, headers=JSON_TYPE, timeout=30
        )
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"].isdigit()
        assert envelope_of(refused)["type"] == "RateLimitError"
        assert httpx.get(f"{guarded.url}/readyz", timeout=30).status_code == 200
    finally:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(HeldRequest.finish, held))
    assert statuses == [200] * 4
    again = httpx.post(
        f"{guarded.url}/v1/audio/generate", content=body, headers=JSON_TYPE, timeout=120
    )
    assert again.status_code == 200, again.text  # the slots were given back


def test_requests_whose_clients_left_are_not_generated(guarded: BentoServer) -> None:
    long = {"input": "a long drone", "audio_length": 1, "num_inference_steps": 200}
    short = {"input": "rain", "audio_length": 1, "num_inference_steps": 8}
    before = guarded.log().count("generated a batch of")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            httpx.post, f"{guarded.url}/v1/audio/generate", json=long, timeout=120
        )
        time.sleep(1.5)  # the long one is generating: the next ones queue behind it
        for _ in range(2):
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{guarded.url}/v1/audio/generate", json=short, timeout=1.0)
        assert running.result().status_code == 200
    began = time.monotonic()
    assert httpx.post(f"{guarded.url}/v1/audio/generate", json=short, timeout=60).status_code == 200
    assert time.monotonic() - began < 30
    log = guarded.log()
    # The long request's batch and the last one's: the abandoned two never ran.
    assert log.count("generated a batch of") - before == 2, log[-3000:]
    assert log.count("status=499") >= 2


def test_the_load_bench_runs_bounded_and_counts_everything(
    guarded: BentoServer, tmp_path: Path
) -> None:
    from bench.load import HEADERS, row, run, update_markdown

    result = run(guarded.url, guarded.process.pid, clients=2, seconds=3, key=None, drain=60)
    assert result["requests"] == sum(result["statuses"].values()) > 0
    assert set(result["statuses"]) <= {200, 202, 429}
    assert result["jobs_accepted"] == result["jobs_succeeded"] > 0
    assert result["rss_mib_before"] > 100 and result["rss_mib_after"] > 100
    assert result["sync_p50_s"] is not None and result["sync_p95_s"] >= result["sync_p50_s"]
    markdown = tmp_path / "RESULTS.md"
    markdown.write_text("# Results\n\nprose stays\n")
    update_markdown(markdown, "first", row("first", result))
    update_markdown(markdown, "second", row("second", result))
    update_markdown(markdown, "first", row("first", result))  # replaces its own row
    text = markdown.read_text()
    assert text.startswith("# Results\n\nprose stays\n")
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines] == [HEADERS[0], "second", "first"]
