"""The job API's queue control, event stream and webhooks over a real Runtime (demo model).

One worker and a small queue, so priorities and deadlines show under a full queue; a real
receiver on 127.0.0.1 (allowed by STABLE_AUDIO_WEBHOOK_ALLOW_HOSTS) checks every signature.
Every test runs on the SQLite store and on a real Redis.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx_sse
import pytest
from starlette.testclient import TestClient

from tests.inprocess.conftest import app_client, make_settings
from tests.servers import redis_server
from tests.webhook_receiver import SECRET, webhook_receiver

FAST: dict[str, Any] = {"prompt": "rain on a tin roof", "duration": 1.0, "steps": 4}
SLOW: dict[str, Any] = {"prompt": "a long thunderstorm", "duration": 1.0, "steps": 100}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def client(
    demo_tag: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[TestClient]:
    store: dict[str, Any] = {}
    if request.param == "redis":
        store = {
            "job_store": "redis",
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": f"qc-{secrets.token_hex(4)}",
        }
    settings = make_settings(
        tmp_path_factory.mktemp("queue-control"),
        **store,
        job_queue_size=4,
        job_workers=1,
        max_priority=5,
        webhook_secret=SECRET,
        webhook_allow_hosts=["127.0.0.1"],
        webhook_retry_seconds=0.2,
        webhook_progress_seconds=0,
        max_batch_size=1,
    )
    with app_client(settings) as running:
        yield running


def wait_done(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def queued(client: TestClient) -> int:
    return int(client.get("/health").json()["jobs"]["queued"])


@pytest.mark.parametrize(
    ("extra", "field", "status"),
    [
        ({"webhook": "http://10.0.0.1/hook"}, "webhook", 400),
        ({"webhook": "file:///etc/passwd"}, "webhook", 400),
        ({"webhook": "https://example.com/h", "webhook_events": ["done"]}, "webhook_events", 422),
        ({"priority": 6}, "priority", 400),  # over the key's cap (max_priority 5)
        ({"priority": 101}, "priority", 422),  # over any cap: the schema's range
        ({"max_queue_seconds": 0}, "max_queue_seconds", 422),
        ({"deadline": "tomorrow"}, "deadline", 422),
    ],
)
def test_bad_job_options_name_the_field_and_queue_nothing(
    client: TestClient, extra: dict[str, Any], field: str, status: int
) -> None:
    before = len(client.get("/jobs", params={"limit": 500}).json()["jobs"])
    answer = client.post("/jobs", json={**FAST, **extra})
    assert answer.status_code == status, answer.text
    if status == 400:
        assert answer.json()["error"]["param"] == field, answer.json()
    else:
        assert answer.json()["detail"][0]["loc"][1] == field, answer.json()
    assert len(client.get("/jobs", params={"limit": 500}).json()["jobs"]) == before


def test_prefer_wait_answers_with_the_finished_record(client: TestClient) -> None:
    answer = client.post("/jobs", json=FAST, headers={"Prefer": "wait=60"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["preference-applied"] == "wait=60"
    assert answer.json()["status"] == "succeeded"
    assert answer.json()["download_url"]


def test_prefer_wait_with_accept_audio_answers_with_the_audio(client: TestClient) -> None:
    answer = client.post("/jobs", json=FAST, headers={"Prefer": "wait=60", "Accept": "audio/wav"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "audio/wav"
    assert answer.headers["preference-applied"] == "wait=60"
    assert answer.content[:4] == b"RIFF" and len(answer.content) > 44
    job = client.get(answer.headers["location"]).json()
    assert job["status"] == "succeeded"
    assert client.get(job["audio_url"]).content == answer.content


def test_prefer_wait_too_short_is_the_usual_202(client: TestClient) -> None:
    answer = client.post("/jobs", json=SLOW, headers={"Prefer": "wait=0.2"})
    assert answer.status_code == 202
    assert answer.json()["status"] in ("queued", "running")
    wait_done(client, answer.json()["id"])


def test_priorities_and_deadlines_under_a_full_queue(client: TestClient) -> None:
    busy = client.post("/jobs", json=SLOW).json()
    while client.get(f"/jobs/{busy['id']}").json()["status"] == "queued":
        time.sleep(0.02)
    low = client.post("/jobs", json=FAST).json()
    doomed = client.post("/jobs", json={**FAST, "max_queue_seconds": 0.5}).json()
    high = client.post("/jobs", json={**FAST, "priority": 5}).json()
    mid = client.post("/jobs", json={**FAST, "priority": 2}).json()
    assert client.post("/jobs", json=FAST).status_code == 429  # four queued: full
    positions = {
        j["id"]: client.get(f"/jobs/{j['id']}").json()["queue_position"]
        for j in (low, doomed, high, mid)
    }
    assert positions == {high["id"]: 1, mid["id"]: 2, low["id"]: 3, doomed["id"]: 4}
    final = {j["id"]: wait_done(client, j["id"]) for j in (busy, low, doomed, high, mid)}
    expired = final[doomed["id"]]
    assert (expired["status"], expired["started_at"], expired["attempts"]) == ("expired", None, 0)
    assert "deadline" in expired["error"]
    ran = sorted((final[j["id"]]["started_at"], j["id"]) for j in (low, high, mid))
    assert [job_id for _, job_id in ran] == [high["id"], mid["id"], low["id"]]


def test_the_event_stream_follows_a_job_to_its_end(client: TestClient) -> None:
    job = client.post("/jobs", json=FAST).json()
    with httpx_sse.connect_sse(client, "GET", job["events_url"]) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = list(source.iter_sse())
    kinds = [e.event for e in events]
    statuses = [e.json()["status"] for e in events if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"], kinds
    steps = [e.json()["step"] for e in events if e.event == "progress"]
    assert steps == sorted(steps) and steps[-1] == 4, kinds
    assert kinds[-1] == "done"
    record = events[-1].json()
    assert (record["id"], record["status"]) == (job["id"], "succeeded")
    # Resume after the first event: the rest, without it.
    first_id = next(e.id for e in events if e.event == "status")
    with httpx_sse.connect_sse(
        client, "GET", job["events_url"], headers={"Last-Event-ID": first_id}
    ) as source:
        resumed = list(source.iter_sse())
    logged = [e.id for e in events if e.event in ("status", "progress")]
    assert [e.id for e in resumed if e.event in ("status", "progress")] == logged[1:]
    assert resumed[-1].event == "done"
    bad = client.get(job["events_url"], headers={"Last-Event-ID": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"
    assert client.get("/jobs/nope/events").status_code == 404


def test_webhooks_carry_the_job_record_signed(client: TestClient) -> None:
    with webhook_receiver() as receiver:
        body = {**FAST, "webhook": receiver.url, "webhook_events": ["start", "completed"]}
        job = client.post("/jobs", json=body).json()
        assert job["webhook_events"] == ["start", "completed"]
        got = receiver.wait_for(2, timeout=60)
        deadline = time.monotonic() + 20
        while True:
            record = client.get(f"/jobs/{job['id']}").json()
            if all(d["status"] == "delivered" for d in record["webhook_deliveries"]):
                break
            assert time.monotonic() < deadline, record["webhook_deliveries"]
            time.sleep(0.05)
    assert [r.type for r in got] == ["job.start", "job.completed"]
    assert receiver.forged == 0
    assert got[1].data["status"] == "succeeded" and got[1].data["id"] == job["id"]
    assert got[1].data["download_url"]
    log = record["webhook_deliveries"]
    assert [(d["event"], d["attempts"], d["response_status"]) for d in log] == [
        ("start", 1, 204),
        ("completed", 1, 204),
    ]
    assert [d["id"] for d in log] == [r.id for r in got]


def test_audio_in_jobs_take_the_same_fields(client: TestClient) -> None:
    from tests.inprocess.test_audio_in_routes import clip, wav

    files = {"audio": ("take.wav", wav(clip(1.0)), "audio/wav")}
    form = {"prompt": "a brighter take", "steps": "4", "init_noise_level": "0.5"}
    bad = client.post("/jobs/variations", data={**form, "priority": "9"}, files=files)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "priority"
    refused = client.post(
        "/jobs/variations", data={**form, "webhook": "http://192.168.1.1/x"}, files=files
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "webhook"
    with webhook_receiver() as receiver:
        fields = {
            **form,
            "priority": "2",
            "webhook": receiver.url,
            "webhook_events": "start,completed",
            "max_queue_seconds": "600",
        }
        job = client.post("/jobs/variations", data=fields, files=files).json()
        assert (job["priority"], job["webhook_events"]) == (2, ["start", "completed"])
        assert job["queue_deadline"] is not None
        with httpx_sse.connect_sse(client, "GET", job["events_url"]) as source:
            events = list(source.iter_sse())
        got = receiver.wait_for(2, timeout=60)
    assert events[-1].event == "done" and events[-1].json()["status"] == "succeeded"
    assert events[-1].json()["mode"] == "audio-to-audio"
    assert [r.type for r in got] == ["job.start", "job.completed"]
    assert receiver.forged == 0


def test_a_deadline_already_past_expires_the_job_unrun(client: TestClient) -> None:
    answer = client.post("/jobs", json={**FAST, "deadline": "2000-01-01T00:00:00Z"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["queue_deadline"] == "2000-01-01T00:00:00+00:00"
    job = wait_done(client, answer.json()["id"], timeout=30)
    assert (job["status"], job["attempts"], job["started_at"]) == ("expired", 0, None)
    naive = client.post("/jobs", json={**FAST, "deadline": "2030-01-01T00:00:00"})
    assert naive.status_code == 400 and naive.json()["error"]["param"] == "deadline"


def test_priority_caps_and_event_streams_follow_the_api_key(
    demo_tag: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from stable_audio_bento.http import create_app
    from stable_audio_bento.http.middleware.auth import ApiKeyMiddleware
    from stable_audio_bento.runtime import Runtime

    keys = ["alice-key", "bob-key"]
    settings = make_settings(
        tmp_path_factory.mktemp("caps"),
        api_keys=keys,
        max_priority=1,
        priority_caps={"alice-key": 7},
    )
    runtime = Runtime(settings)
    runtime.start()
    app = ApiKeyMiddleware(create_app(runtime), keys=keys, admin_keys=["root-key"])
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in keys)
    root = {"Authorization": "Bearer root-key"}
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            mine = client.post("/jobs", json={**FAST, "priority": 7}, headers=alice)
            assert mine.status_code == 202, mine.text
            over = client.post("/jobs", json={**FAST, "priority": 2}, headers=bob)
            assert over.status_code == 400
            assert over.json()["error"]["param"] == "priority"
            assert "from 0 to 1" in over.json()["error"]["message"]
            assert client.post("/jobs", json={**FAST, "priority": 100}, headers=root).is_success
            events = f"/jobs/{mine.json()['id']}/events"
            assert client.get(events, headers=bob).status_code == 404  # not bob's job
            assert client.get(events).status_code == 401
            with httpx_sse.connect_sse(client, "GET", events, headers=alice) as source:
                assert [e.event for e in source.iter_sse()][-1] == "done"
    finally:
        runtime.stop()
