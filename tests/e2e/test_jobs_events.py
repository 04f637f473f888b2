"""End-to-end: job event streams and webhooks with real ``bentoml serve`` processes.

A webhook whose receiver is down while the job ends, then a ``kill -9`` of the server: the
deliveries are in the job store, so the restarted server sends them, once per event id, to the
receiver that is up by then. On Redis, two replicas: a job's event stream read from one while
the other may run it, resumed on the other with ``Last-Event-ID``, and each webhook delivered
once although both replicas send.
"""

from __future__ import annotations

import collections
import concurrent.futures
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import pytest

from tests.conftest import serve_env
from tests.e2e.test_jobs import FAST, submit, wait_for
from tests.servers import BentoServer, free_ports, redis_server, start_bento
from tests.webhook_receiver import SECRET, webhook_receiver

pytestmark = pytest.mark.e2e

HOOKS = {
    "STABLE_AUDIO_JOB_LEASE_SECONDS": "3",
    "STABLE_AUDIO_WEBHOOK_SECRET": SECRET,
    "STABLE_AUDIO_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "STABLE_AUDIO_WEBHOOK_RETRY_SECONDS": "0.5",
    "STABLE_AUDIO_WEBHOOK_TIMEOUT": "2",
}
MEDIUM: dict[str, Any] = {"prompt": "footsteps on gravel", "duration": 1.0, "steps": 40}


def read_events(url: str, last_event_id: str | None = None) -> list[httpx_sse.ServerSentEvent]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=60)) as client,
        httpx_sse.connect_sse(client, "GET", url, headers=headers) as source,
    ):
        assert source.response.status_code == 200
        return list(source.iter_sse())


def statuses(events: list[httpx_sse.ServerSentEvent]) -> list[str]:
    return [e.json()["status"] for e in events if e.event == "status"]


def test_webhooks_are_delivered_after_a_kill_and_restart(demo_tag: str, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    hook = f"http://127.0.0.1:{port}/hook"
    env = serve_env(tmp_path, **HOOKS)
    log = tmp_path / "server.log"
    first = start_bento(env, log)
    try:
        body = {**FAST, "webhook": hook, "webhook_events": ["start", "completed"]}
        job = submit(first.url, body)
        events = read_events(job["events_url"])  # the whole life, as it happens
        assert statuses(events) == ["queued", "running", "succeeded"]
        assert events[-1].event == "done" and events[-1].json()["status"] == "succeeded"
        # The receiver is down: both deliveries are tried, fail, and wait for a retry.
        failing = wait_for(
            first.url,
            job["id"],
            lambda j: (
                len(j["webhook_deliveries"]) == 2
                and all(d["attempts"] >= 1 for d in j["webhook_deliveries"][:1])
            ),
        )
        log_before = failing["webhook_deliveries"]
        assert all(d["status"] == "pending" for d in log_before), log_before
        assert log_before[0]["error"], log_before
    finally:
        first.kill()

    with webhook_receiver(port) as receiver:
        second = start_bento(env, log)
        try:
            got = receiver.wait_for(2, timeout=60)
            done = wait_for(
                second.url,
                job["id"],
                lambda j: all(d["status"] == "delivered" for d in j["webhook_deliveries"]),
            )
            # Resumed on the new server after the first event: the rest, then the record.
            first_id = next(e.id for e in events if e.event == "status")
            rest = read_events(job["events_url"].replace(first.url, second.url), first_id)
        finally:
            second.stop()
    assert [r.type for r in got] == ["job.start", "job.completed"]
    assert receiver.forged == 0
    ids = [d["id"] for d in done["webhook_deliveries"]]
    assert [r.id for r in got] == ids == [d["id"] for d in log_before]  # stable across the kill
    assert collections.Counter(receiver.attempts) == {i: 1 for i in ids}  # once per event id
    assert got[1].data["status"] == "succeeded" and got[1].data["id"] == job["id"]
    logged = [e.id for e in events if e.event in ("status", "progress")]
    assert [e.id for e in rest if e.event in ("status", "progress")] == logged[1:]
    assert rest[-1].event == "done"


def test_event_stream_and_webhooks_across_two_redis_replicas(demo_tag: str, tmp_path: Path) -> None:
    with redis_server() as redis, webhook_receiver() as receiver:

        def start(name: str) -> BentoServer:
            (tmp_path / name).mkdir()
            env = serve_env(
                tmp_path / name,
                **HOOKS,
                STABLE_AUDIO_JOB_STORE="redis",
                STABLE_AUDIO_REDIS_URL=redis.url,
                STABLE_AUDIO_WEBHOOK_PROGRESS_SECONDS="0",
            )
            return start_bento(env, tmp_path / name / "server.log")

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a, b = pool.map(start, ("a", "b"))
        try:
            events_wanted = ["start", "progress", "completed"]
            jobs = [
                submit(
                    (a, b)[i % 2].url,
                    {**MEDIUM, "webhook": receiver.url, "webhook_events": events_wanted},
                )
                for i in range(3)
            ]
            # Each job's stream read from the replica that did not take the request.
            for i, job in enumerate(jobs):
                other = (b, a)[i % 2]
                events = read_events(f"{other.url}/jobs/{job['id']}/events")
                assert statuses(events) == ["queued", "running", "succeeded"], events
                steps = [e.json()["step"] for e in events if e.event == "progress"]
                assert steps and steps == sorted(steps) and steps[-1] == MEDIUM["steps"]
                assert events[-1].event == "done"
                # Resumed on the first replica after the second event.
                here = (a, b)[i % 2]
                logged = [e.id for e in events if e.event in ("status", "progress")]
                rest = read_events(f"{here.url}/jobs/{job['id']}/events", logged[1])
                assert [e.id for e in rest if e.event in ("status", "progress")] == logged[2:]
            finals = [
                wait_for(
                    a.url,
                    job["id"],
                    lambda j: (
                        j["webhook_deliveries"]
                        and all(d["status"] == "delivered" for d in j["webhook_deliveries"])
                    ),
                )
                for job in jobs
            ]
            workers = {f["worker"].split("/")[0] for f in finals}
            ids = [d["id"] for f in finals for d in f["webhook_deliveries"]]
            receiver.wait_for(len(ids))
        finally:
            a.stop()
            b.stop()
    assert receiver.forged == 0
    assert collections.Counter(receiver.attempts) == {i: 1 for i in ids}  # once, both sending
    by_job: dict[str, list[str]] = collections.defaultdict(list)
    for r in receiver.received:
        by_job[r.data["id"]].append(r.type)
    for job in jobs:
        types = by_job[job["id"]]
        assert types[0] == "job.start" and types[-1] == "job.completed", types
    assert len(workers) >= 1
