"""Job records: what a store keeps about one queued generation, and what a run produces."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]
# "expired": the job was not started before its deadline (``max_queue_seconds``) and never ran.
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "expired"})
# The events a webhook may ask for (``Job.webhook_events``).
WebhookEvent = Literal["start", "progress", "completed", "failed", "canceled", "expired"]
WEBHOOK_EVENTS: tuple[str, ...] = (
    "start",
    "progress",
    "completed",
    "failed",
    "canceled",
    "expired",
)
# What a webhook gets when it names no events: every change of status (progress is opt-in).
DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = ("start", "completed", "failed", "canceled", "expired")


def new_job_id() -> str:
    """An unguessable job id (128 random bits, hex)."""
    return secrets.token_hex(16)


class WebhookDelivery(BaseModel):
    """One event to deliver to the job's webhook, and how its delivery went.

    ``id`` is the ``webhook-id`` of every attempt, so a receiver can drop repeats (delivery is
    at least once). While an attempt is under way ``claimed_by`` holds the sender and
    ``next_attempt_at`` the end of its lease: a sender that dies leaves it due again.
    """

    id: str = Field(default_factory=lambda: "msg_" + secrets.token_hex(12))
    event: str
    created_at: float
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    next_attempt_at: float
    claimed_by: str | None = None
    last_attempt_at: float | None = None
    response_status: int | None = None
    error: str | None = None


class Job(BaseModel):
    """One generation job. Timestamps are UTC epoch seconds (floats) throughout."""

    id: str = Field(default_factory=new_job_id)
    status: JobStatus = "queued"
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The normalised generation parameters, versioned "
        "(GenerationParams.to_record), whatever API queued the job.",
    )
    request: dict[str, Any] = Field(
        default_factory=dict,
        description="Jobs queued by older releases: the stable-audio-api body (no params).",
    )
    mode: str = "text-to-audio"
    output_count: int = Field(default=1, description="Outputs (batch_size); >1 is a zip.")
    seeds: list[int] = Field(default_factory=list, description="One seed per output.")
    model: str
    response_format: str = "wav"
    seed: int | None = Field(default=None, description="The seed used, once known.")
    progress_step: int = 0
    progress_total: int = 0
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_key: str | None = Field(default=None, description="Storage key of the output.")
    fallback_path: str | None = Field(
        default=None, description="Local copy of the output when the upload failed."
    )
    sample_rate: int | None = None
    duration: float | None = Field(default=None, description="Output length in seconds.")
    attempts: int = Field(default=0, description="How many times a worker claimed the job.")
    lease_owner: str | None = None
    worker: str | None = Field(
        default=None, description="The worker that claimed the job last (kept once finished)."
    )
    lease_expires_at: float | None = None
    idempotency_key: str | None = None
    owner: str | None = Field(
        default=None,
        description="Who may see the job: a hash of the API key that created it (never the "
        "key); None on an open server.",
    )
    cancel_requested: bool = False
    audio_in: dict[str, Any] = Field(
        default_factory=dict,
        description="Audio-in jobs: the mode's own fields (AudioInParams.to_record).",
    )
    source: dict[str, Any] | None = Field(
        default=None,
        description="Audio-in jobs: the stored source (key, filename, bytes, sha256, seconds).",
    )

    # Queue control and notifications (absent from records of older releases: the defaults).
    priority: int = Field(default=0, description="Higher runs first; equal ones oldest first.")
    max_queue_seconds: float | None = Field(
        default=None, description="The longest the job may wait for a worker."
    )
    queue_deadline: float | None = Field(
        default=None,
        description="If still queued at this time (store clock) the job ends as expired: the "
        "request's deadline, or creation plus max_queue_seconds, whichever comes first.",
    )
    webhook: str | None = Field(default=None, description="Where deliveries are POSTed.")
    webhook_events: list[str] = Field(default_factory=list)
    deliveries: list[WebhookDelivery] = Field(
        default_factory=list, description="The webhook delivery log, oldest first."
    )
    webhook_progress_at: float | None = Field(
        default=None, description="When the last progress delivery was scheduled."
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def webhook_due(self) -> float | None:
        """When the next delivery may be attempted (None: none pending).

        A job's deliveries go out one at a time, in order: the first pending one is next.
        """
        pending = [d.next_attempt_at for d in self.deliveries if d.status == "pending"]
        return pending[0] if pending else None


@dataclass(frozen=True)
class JobOutput:
    """What a job run returns: encoded audio plus what the job record should say about it."""

    data: bytes
    format: str  # an audio format name, or "zip" for several outputs
    seed: int
    sample_rate: int
    duration: float
    output_count: int = 1
