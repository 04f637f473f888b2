"""Priorities, deadlines, the event log and webhook deliveries: the store's part, on both stores.

``QueueControlContract`` runs here on SQLite and in integration/test_job_queue_control_redis.py
on a real Redis. Two stores made in one test share state (two processes, or two replicas).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stable_audio_bento.errors import InvalidRequestError
from stable_audio_bento.http.middleware.auth import Caller, owner_of, priority_cap
from stable_audio_bento.jobs import JobStore, SQLiteJobStore
from stable_audio_bento.jobs.queue_control import JobFields, JobOptions, prefer_wait
from stable_audio_bento.settings import Settings
from tests.unit.test_job_store import MakeStore, new_job

HOOK = "https://hooks.example.com/in"


def statuses(store: JobStore, job_id: str, after: str | None = None) -> list[Any]:
    return [
        event.get("status", (event.get("step"), event.get("total")))
        for _, event in store.events_after(job_id, after)
    ]


class QueueControlContract:
    @pytest.fixture
    def make_store(self) -> MakeStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, make_store: MakeStore) -> JobStore:
        return make_store()

    # --- priorities and queue position ----------------------------------------------------

    def test_higher_priority_runs_first_then_oldest(self, store: JobStore) -> None:
        low = store.create(new_job())
        high = store.create(new_job(priority=9))
        mid_a = store.create(new_job(priority=5))
        mid_b = store.create(new_job(priority=5))
        positions = [store.queue_position(store.get(j.id)) for j in (low, high, mid_a, mid_b)]
        assert positions == [4, 1, 2, 3]
        order = []
        while (job := store.claim("w", lease_seconds=30)) is not None:
            order.append(job.id)
            assert store.queue_position(job) is None  # running: no place in the queue
        assert order == [high.id, mid_a.id, mid_b.id, low.id]

    def test_positions_move_up_as_jobs_leave(self, store: JobStore) -> None:
        jobs = [store.create(new_job()) for _ in range(3)]
        store.claim("w", lease_seconds=30)
        store.request_cancel(jobs[1].id)
        assert store.queue_position(store.get(jobs[2].id)) == 1

    # --- deadlines ------------------------------------------------------------------------

    def test_a_job_not_started_in_time_expires_and_never_runs(self, make_store: MakeStore) -> None:
        store = make_store(max_queued=3)
        blocker = store.create(new_job())
        assert store.claim("w", lease_seconds=30) is not None  # the only worker is busy
        late = store.create(new_job(max_queue_seconds=0.3))
        patient = store.create(new_job(max_queue_seconds=60))
        assert late.queue_deadline == pytest.approx(late.created_at + 0.3)
        assert store.expire_overdue() == []
        time.sleep(0.5)
        assert store.expire_overdue() == [late.id]
        expired = store.get(late.id)
        assert (expired.status, expired.started_at, expired.attempts) == ("expired", None, 0)
        assert expired.error is not None and "not started within its deadline" in expired.error
        assert statuses(store, late.id) == ["queued", "expired"]
        store.mark_succeeded(blocker.id, "w", result_key="k", seed=1, sample_rate=1, duration=1)
        claimed = store.claim("w", lease_seconds=30)
        assert claimed is not None and claimed.id == patient.id
        assert store.claim("w", lease_seconds=30) is None
        assert store.count_queued() == 0

    def test_claim_expires_an_overdue_job_instead_of_running_it(self, store: JobStore) -> None:
        past = datetime.now(UTC) - timedelta(seconds=1)
        overdue = store.create(new_job(queue_deadline=past.timestamp()))
        fresh = store.create(new_job())
        claimed = store.claim("w", lease_seconds=30)
        assert claimed is not None and claimed.id == fresh.id
        assert store.get(overdue.id).status == "expired"

    def test_the_earlier_of_deadline_and_max_queue_seconds_wins(self, store: JobStore) -> None:
        far = time.time() + 3600
        job = store.create(new_job(queue_deadline=far, max_queue_seconds=10))
        assert job.queue_deadline == pytest.approx(job.created_at + 10)

    # --- the event log --------------------------------------------------------------------

    def test_every_change_is_logged_in_order_and_resumable(self, make_store: MakeStore) -> None:
        store, replica = make_store(), make_store()
        job = store.create(new_job())
        replica.claim("w", lease_seconds=30)
        replica.heartbeat(job.id, "w", 30, progress=(1, 4))
        replica.heartbeat(job.id, "w", 30, progress=(1, 4))  # no change: nothing logged
        replica.heartbeat(job.id, "w", 30, progress=(3, 4))
        replica.mark_succeeded(
            job.id, "w", result_key="k", seed=1, sample_rate=1, duration=1, progress=(4, 4)
        )
        log = store.events_after(job.id)
        assert statuses(store, job.id) == [
            *("queued", "running", (1, 4), (3, 4)),
            *((4, 4), "succeeded"),  # the last step, logged with the outcome
        ]
        ids = [event_id for event_id, _ in log]
        assert len(set(ids)) == len(ids)
        assert all(event["at"] >= job.created_at for _, event in log)
        # Resume after the second event: the rest, from either replica.
        assert statuses(replica, job.id, ids[1]) == [(1, 4), (3, 4), (4, 4), "succeeded"]
        assert store.events_after(job.id, ids[-1]) == []
        with pytest.raises(ValueError):
            store.events_after(job.id, "not-an-id")

    def test_failures_and_cancels_are_logged_with_the_error(self, store: JobStore) -> None:
        failing = store.create(new_job())
        store.claim("w", lease_seconds=30)
        store.mark_failed(failing.id, "w", "boom")
        canceled = store.create(new_job())
        store.request_cancel(canceled.id)
        assert store.events_after(failing.id)[-1][1]["error"] == "boom"
        assert statuses(store, canceled.id) == ["queued", "canceled"]

    def test_purge_deletes_the_log(self, store: JobStore) -> None:
        job = store.create(new_job())
        store.request_cancel(job.id)
        store.purge_expired(retention_seconds=0)
        assert store.events_after(job.id) == []

    # --- webhook deliveries ---------------------------------------------------------------

    def test_deliveries_follow_the_events_asked_for(self, make_store: MakeStore) -> None:
        store = make_store(webhook_progress_seconds=3600)
        job = store.create(new_job(webhook=HOOK, webhook_events=["start", "progress", "completed"]))
        assert store.get(job.id).deliveries == []  # "queued" is no webhook event
        store.claim("w", lease_seconds=30)
        for step in range(1, 5):
            store.heartbeat(job.id, "w", 30, progress=(step, 4))
        store.mark_succeeded(job.id, "w", result_key="k", seed=1, sample_rate=1, duration=1)
        events = [d.event for d in store.get(job.id).deliveries]
        assert events == ["start", "progress", "completed"]  # progress once per interval

    def test_unsent_progress_is_replaced_by_newer_progress(self, make_store: MakeStore) -> None:
        store = make_store(webhook_progress_seconds=0)
        job = store.create(new_job(webhook=HOOK, webhook_events=["progress", "failed"]))
        store.claim("w", lease_seconds=30)
        for step in range(1, 4):
            store.heartbeat(job.id, "w", 30, progress=(step, 3))
        pending = store.get(job.id).deliveries
        assert [d.event for d in pending] == ["progress"]
        store.mark_failed(job.id, "w", "boom")
        assert [d.event for d in store.get(job.id).deliveries] == ["progress", "failed"]

    def test_no_webhook_no_deliveries(self, store: JobStore) -> None:
        job = store.create(new_job())
        store.request_cancel(job.id)
        assert store.get(job.id).deliveries == []
        assert store.claim_delivery("s", 30) is None

    def test_a_delivery_is_leased_to_one_sender_and_recorded(self, make_store: MakeStore) -> None:
        store, replica = make_store(), make_store()
        job = store.create(new_job(webhook=HOOK, webhook_events=["canceled"]))
        store.request_cancel(job.id)
        claimed = store.claim_delivery("a", lease_seconds=30)
        assert claimed is not None
        leased_job, delivery = claimed
        assert leased_job.id == job.id
        assert (delivery.event, delivery.attempts, delivery.claimed_by) == ("canceled", 1, "a")
        assert replica.claim_delivery("b", lease_seconds=30) is None  # leased to a
        assert not replica.finish_delivery(job.id, delivery.id, "b", ok=True)  # not b's
        assert store.finish_delivery(
            job.id, delivery.id, "a", ok=False, error="HTTP 500", response_status=500, retry_in=0.2
        )
        retried = store.get(job.id).deliveries[0]
        assert (retried.status, retried.response_status, retried.claimed_by) == (
            "pending",
            500,
            None,
        )
        assert replica.claim_delivery("b", lease_seconds=30) is None  # not due yet
        time.sleep(0.3)
        again = replica.claim_delivery("b", lease_seconds=30)
        assert again is not None and again[1].id == delivery.id and again[1].attempts == 2
        assert replica.finish_delivery(job.id, delivery.id, "b", ok=True, response_status=204)
        done = store.get(job.id).deliveries[0]
        assert (done.status, done.attempts, done.response_status) == ("delivered", 2, 204)
        assert store.claim_delivery("a", lease_seconds=30) is None

    def test_a_jobs_deliveries_go_out_in_order(self, make_store: MakeStore) -> None:
        store = make_store()
        job = store.create(new_job(webhook=HOOK, webhook_events=["start", "canceled"]))
        store.claim("w", lease_seconds=30)
        store.request_cancel(job.id)
        store.mark_canceled(job.id, "w")
        first = store.claim_delivery("a", lease_seconds=30)
        assert first is not None and first[1].event == "start"
        assert store.claim_delivery("b", lease_seconds=30) is None  # "canceled" waits
        store.finish_delivery(job.id, first[1].id, "a", ok=False, retry_in=0.2)
        assert store.claim_delivery("b", lease_seconds=30) is None  # still: start is first
        time.sleep(0.3)
        again = store.claim_delivery("b", lease_seconds=30)
        assert again is not None and again[1].event == "start"
        store.finish_delivery(job.id, again[1].id, "b", ok=True)
        last = store.claim_delivery("b", lease_seconds=30)
        assert last is not None and last[1].event == "canceled"

    def test_a_dead_senders_lease_expires_and_the_same_id_is_sent_again(
        self, make_store: MakeStore
    ) -> None:
        store = make_store()
        job = store.create(new_job(webhook=HOOK, webhook_events=["canceled"]))
        store.request_cancel(job.id)
        first = store.claim_delivery("dead", lease_seconds=0.2)
        assert first is not None
        time.sleep(0.3)
        second = make_store().claim_delivery("alive", lease_seconds=30)
        assert second is not None and second[1].id == first[1].id
        assert not store.finish_delivery(job.id, first[1].id, "dead", ok=True)  # too late

    def test_giving_up_marks_the_delivery_failed(self, store: JobStore) -> None:
        job = store.create(new_job(webhook=HOOK, webhook_events=["canceled"]))
        store.request_cancel(job.id)
        claimed = store.claim_delivery("a", lease_seconds=30)
        assert claimed is not None
        store.finish_delivery(job.id, claimed[1].id, "a", ok=False, error="refused")
        delivery = store.get(job.id).deliveries[0]
        assert (delivery.status, delivery.error) == ("failed", "refused")
        assert store.get(job.id).webhook_due is None


class TestSQLiteQueueControl(QueueControlContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        stores: list[JobStore] = []

        def make(**options: Any) -> JobStore:
            stores.append(SQLiteJobStore(tmp_path / "jobs.sqlite3", **options))
            return stores[-1]

        yield make
        for store in stores:
            store.close()


# --- request options (no store) ------------------------------------------------------------


def settings(tmp_path: Path, **fields: Any) -> Settings:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return Settings(output_dir=tmp_path / "out", webhook_secret=secret, **fields)


KEY_CALLER = Caller(owner=owner_of("k1"), admin=False)


def test_priority_is_capped_per_key(tmp_path: Path) -> None:
    s = settings(tmp_path, max_priority=3, priority_caps={"vip": 50})
    assert JobOptions(priority=3).checked(s, priority_cap(s, KEY_CALLER)).priority == 3
    with pytest.raises(InvalidRequestError, match=r"`priority` must be from 0 to 3") as e:
        JobOptions(priority=4).checked(s, priority_cap(s, KEY_CALLER))
    assert e.value.field == "priority"
    assert JobOptions(priority=50).checked(
        s, priority_cap(s, Caller(owner=owner_of("vip"), admin=False))
    )
    assert JobOptions(priority=100).checked(
        s, priority_cap(s, Caller(owner=owner_of("admin"), admin=True))
    )
    with pytest.raises(InvalidRequestError):  # an open server: everyone gets max_priority
        JobOptions(priority=4).checked(s, priority_cap(s, Caller(owner=None, admin=True)))


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        (JobOptions(webhook="ftp://example.com/x"), "webhook", "http:// or https://"),
        (JobOptions(webhook="http://127.0.0.1:9/x"), "webhook", "non-public address"),
        (JobOptions(webhook="http://localhost/x"), "webhook", "non-public address"),
        (JobOptions(webhook="http://[::1]/x"), "webhook", "non-public address"),
        (JobOptions(webhook="http://10.1.2.3/x"), "webhook", "non-public address"),
        (JobOptions(webhook="http://169.254.169.254/latest"), "webhook", "non-public address"),
        (JobOptions(webhook="http://224.0.0.1/x"), "webhook", "non-public address"),
        (JobOptions(webhook="http://[::ffff:192.168.0.1]/x"), "webhook", "non-public address"),
        (JobOptions(webhook="http://0.0.0.0/x"), "webhook", "non-public address"),
        (JobOptions(webhook="http://user:pw@example.com/x"), "webhook", "credentials"),
        (JobOptions(webhook="http:///x"), "webhook", "no host"),
        (
            JobOptions(webhook=HOOK, webhook_events=("start", "finished")),
            "webhook_events",
            "unknown events ['finished']",
        ),
        (JobOptions(webhook_events=("start",)), "webhook_events", "needs a `webhook`"),
    ],
)
def test_bad_options_name_their_field(
    tmp_path: Path, options: JobOptions, field: str, message: str
) -> None:
    with pytest.raises(
        InvalidRequestError, match=message.replace("[", r"\[").replace("]", r"\]")
    ) as e:
        options.checked(settings(tmp_path), priority_cap(settings(tmp_path), KEY_CALLER))
    assert e.value.field == field


def test_allowed_hosts_may_be_private(tmp_path: Path) -> None:
    s = settings(tmp_path, webhook_allow_hosts=["127.0.0.1"])
    JobOptions(webhook="http://127.0.0.1:8080/hook").checked(s, priority_cap(s, KEY_CALLER))
    with pytest.raises(InvalidRequestError):
        JobOptions(webhook="http://10.0.0.1/hook").checked(s, priority_cap(s, KEY_CALLER))


def test_webhooks_need_the_server_secret(tmp_path: Path) -> None:
    s = Settings(output_dir=tmp_path / "out", webhook_allow_hosts=["127.0.0.1"])
    with pytest.raises(InvalidRequestError, match="STABLE_AUDIO_WEBHOOK_SECRET") as e:
        JobOptions(webhook="http://127.0.0.1/x").checked(s, priority_cap(s, KEY_CALLER))
    assert e.value.field == "webhook"


def test_the_secret_must_be_whsec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="STABLE_AUDIO_WEBHOOK_SECRET"):
        Settings(output_dir=tmp_path / "out", webhook_secret="not a secret")


def test_fields_and_defaults() -> None:
    fields = JobFields.model_validate(
        {
            "webhook": HOOK,
            "webhook_events_filter": "start, completed",
            "max_time_in_queue_seconds": 30,
            "deadline": "2030-01-01T00:00:00Z",
        }
    )
    options = fields.to_options()
    assert options.webhook_events == ("start", "completed")
    assert options.max_queue_seconds == 30
    job = options.apply(new_job())
    assert job.queue_deadline == datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    default = JobOptions(webhook=HOOK).apply(new_job())
    assert default.webhook_events == ["start", "completed", "failed", "canceled", "expired"]


def test_prefer_wait() -> None:
    assert prefer_wait("wait=5", 60) == 5
    assert prefer_wait("respond-async, wait=120", 60) == 60
    assert prefer_wait("return=minimal", 60) is None
    assert prefer_wait(None, 60) is None


def test_a_database_of_the_previous_release_is_migrated_and_its_jobs_run(tmp_path: Path) -> None:
    """The previous release's schema and record (no priority, deadline, webhook, event log)."""
    path = tmp_path / "old.sqlite3"
    old = new_job()
    new_fields = ("priority", "max_queue_seconds", "queue_deadline", "webhook", "webhook_events")
    doc = {
        k: v
        for k, v in json.loads(old.model_dump_json()).items()
        if k not in (*new_fields, "deliveries", "webhook_progress_at")
    }
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at REAL"
            " NOT NULL, finished_at REAL, lease_expires_at REAL, idempotency_key TEXT UNIQUE,"
            " doc TEXT NOT NULL, owner TEXT);"
        )
        conn.execute(
            "INSERT INTO jobs VALUES (?, 'queued', ?, NULL, NULL, NULL, ?, NULL)",
            (old.id, old.created_at, json.dumps(doc)),
        )
        conn.commit()
    with SQLiteJobStore(path) as store:
        loaded = store.get(old.id)
        assert (loaded.priority, loaded.queue_deadline, loaded.webhook) == (0, None, None)
        assert store.events_after(old.id) == []  # it has no log from before
        urgent = store.create(new_job(priority=3))
        assert store.queue_position(loaded) == 2
        first, second = store.claim("w", 30), store.claim("w", 30)
        assert first is not None and second is not None
        assert (first.id, second.id) == (urgent.id, old.id)
        store.mark_succeeded(old.id, "w", result_key="k", seed=1, sample_rate=1, duration=1)
        assert statuses(store, old.id) == ["running", "succeeded"]  # logged from now on


def test_priority_is_an_integer_as_json_schema_counts_them() -> None:
    from pydantic import ValidationError

    from stable_audio_bento.http.jobs import JobRequest

    assert JobRequest.model_validate({"prompt": "x", "priority": 9.0}).priority == 9
    for value in (8.5, "8", True):
        with pytest.raises(ValidationError):
            JobRequest.model_validate({"prompt": "x", "priority": value})
