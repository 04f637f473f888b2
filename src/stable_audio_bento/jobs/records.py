"""Job records: what a store keeps about one queued generation, and what a run produces."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


def new_job_id() -> str:
    """An unguessable job id (128 random bits, hex)."""
    return secrets.token_hex(16)


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

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class JobOutput:
    """What a job run returns: encoded audio plus what the job record should say about it."""

    data: bytes
    format: str  # an audio format name, or "zip" for several outputs
    seed: int
    sample_rate: int
    duration: float
    output_count: int = 1
