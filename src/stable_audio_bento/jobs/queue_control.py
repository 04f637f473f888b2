"""What a client may ask of a job besides its audio: priority, deadline, webhook, and waiting.

``JobOptions`` is checked once, at submit (a bad one queues nothing), and then written onto
the job record, which is what every worker and sender reads. Fields of the request:

- ``priority`` (0-100, default 0): higher runs first; each API key is capped
  (``STABLE_AUDIO_MAX_PRIORITY``, ``STABLE_AUDIO_PRIORITY_CAPS``; admin keys 100; an open
  server caps every caller at ``STABLE_AUDIO_MAX_PRIORITY``).
- ``max_queue_seconds`` / ``deadline``: a job not started by then ends as ``expired``.
- ``webhook`` / ``webhook_events``: see ``webhooks``.
- ``Prefer: wait=N`` (a header, RFC 7240): hold the answer up to N seconds for the result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, BaseModel, Field, field_validator

from ..errors import InvalidRequestError
from ..limits import MAX_PRIORITY
from .records import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS, Job, WebhookEvent

if TYPE_CHECKING:
    from ..settings import Settings

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)\s*(?:$|[,;\s])", re.I)


@dataclass(frozen=True)
class JobOptions:
    """The queue-control and notification fields of a job request, as sent."""

    priority: int = 0
    max_queue_seconds: float | None = None
    deadline: datetime | None = None
    webhook: str | None = None
    webhook_events: tuple[str, ...] | None = None
    fields: dict[str, str] = field(default_factory=dict)  # option -> the request's field name

    def name(self, option: str) -> str:
        return self.fields.get(option, option)

    def checked(self, settings: Settings, cap: int) -> JobOptions:
        """These options, if a caller whose priority cap is ``cap`` may use them on this server
        (InvalidRequestError)."""
        from .webhooks import check_webhook_url

        if not 0 <= self.priority <= cap:
            raise InvalidRequestError(
                f"`{self.name('priority')}` must be from 0 to {cap} for this API key "
                f"(got {self.priority}).",
                field=self.name("priority"),
            )
        if self.max_queue_seconds is not None and not self.max_queue_seconds > 0:
            raise InvalidRequestError(
                f"`{self.name('max_queue_seconds')}` must be greater than 0.",
                field=self.name("max_queue_seconds"),
            )
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise InvalidRequestError(
                f"`{self.name('deadline')}` needs a time zone (e.g. 2030-01-01T12:00:00Z).",
                field=self.name("deadline"),
            )
        events = self.webhook_events
        if events is not None:
            unknown = [e for e in events if e not in WEBHOOK_EVENTS]
            if unknown:
                raise InvalidRequestError(
                    f"`{self.name('webhook_events')}` has unknown events {unknown}; "
                    f"allowed: {list(WEBHOOK_EVENTS)}.",
                    field=self.name("webhook_events"),
                )
            if self.webhook is None:
                raise InvalidRequestError(
                    f"`{self.name('webhook_events')}` needs a `{self.name('webhook')}`.",
                    field=self.name("webhook_events"),
                )
        if self.webhook is not None:
            if settings.webhook_secret is None:
                raise InvalidRequestError(
                    f"`{self.name('webhook')}`: this server sends no webhooks "
                    "(STABLE_AUDIO_WEBHOOK_SECRET is not set).",
                    field=self.name("webhook"),
                )
            check_webhook_url(self.webhook, settings.webhook_allow_hosts, self.name("webhook"))
        return self

    def apply(self, job: Job) -> Job:
        """``job`` carrying these options (the store fixes the deadline on its own clock)."""
        events = self.webhook_events
        if self.webhook is not None and events is None:
            events = DEFAULT_WEBHOOK_EVENTS
        return job.model_copy(
            update={
                "priority": self.priority,
                "max_queue_seconds": self.max_queue_seconds,
                "queue_deadline": None if self.deadline is None else self.deadline.timestamp(),
                "webhook": self.webhook,
                "webhook_events": list(dict.fromkeys(events or ())),
            }
        )


def prefer_wait(header: str | None, limit: float) -> float | None:
    """Seconds of a ``Prefer: wait=N`` header, at most ``limit`` (None: no wait asked)."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    if match is None:
        return None
    return min(float(match.group(1)), limit)


class JobFields(BaseModel):
    """The job request fields of ``JobOptions`` (JSON bodies and audio-in forms alike)."""

    priority: int = Field(
        default=0,
        ge=0,
        le=MAX_PRIORITY,
        description="Higher runs first (0-100; each API key has a cap, "
        "STABLE_AUDIO_MAX_PRIORITY by default). Equal priorities run oldest first.",
    )
    max_queue_seconds: float | None = Field(
        default=None,
        gt=0,
        validation_alias=AliasChoices("max_queue_seconds", "max_time_in_queue_seconds"),
        description="If no worker has started the job this many seconds after it was queued, "
        "it ends as `expired` and never runs.",
    )
    deadline: datetime | None = Field(
        default=None,
        strict=False,  # JSON has no datetime type: a string (or a number) even in strict models
        description="The same as an absolute time (ISO 8601 with a time zone, or epoch "
        "seconds); with both, the earlier wins.",
    )
    webhook: str | None = Field(
        default=None,
        min_length=1,
        description="An http(s) URL that gets a signed POST (Standard Webhooks) for each of "
        "`webhook_events`; public hosts only, unless the server allows the host.",
    )
    webhook_events: list[WebhookEvent] | None = Field(
        default=None,
        validation_alias=AliasChoices("webhook_events", "webhook_events_filter"),
        description="Which of start, progress, completed, failed, canceled, expired to send "
        "(default: all but progress). Progress is sent at most every "
        "STABLE_AUDIO_WEBHOOK_PROGRESS_SECONDS.",
    )

    @field_validator("priority", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        # JSON Schema counts 8.0 as an integer (8.5, "8" and true stay refused), as for steps.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _event_list(cls, value: Any) -> Any:
        # A form field: "start,completed" or a JSON list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    def to_options(self) -> JobOptions:
        return JobOptions(
            priority=self.priority,
            max_queue_seconds=self.max_queue_seconds,
            deadline=self.deadline,
            webhook=self.webhook,
            webhook_events=None if self.webhook_events is None else tuple(self.webhook_events),
        )
