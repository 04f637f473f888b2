"""What a change of a job tells the world: its event log (the SSE stream) and its webhooks.

Both stores call ``observe`` inside the transaction that changes a job, so a change, the
events it logs and the deliveries it schedules are written together or not at all: a client
reading ``GET /jobs/{id}/events`` and a webhook receiver see every change exactly once in the
log, whichever replica made it, and a server killed after the change still delivers.

Logged events (``type``): ``status`` (``status``, and ``error`` once failed) and ``progress``
(``step``, ``total``); each carries ``at`` (store clock, epoch seconds).
"""

from __future__ import annotations

from typing import Any

from .records import FINISHED, Job, WebhookDelivery

Event = dict[str, Any]

# A job's status -> the webhook event that announces it.
WEBHOOK_EVENT_OF = {
    "running": "start",
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "expired": "expired",
}


def transition_events(old: Job | None, new: Job, now: float) -> list[Event]:
    """The log entries for ``old`` becoming ``new`` (``old`` None: the job was created)."""
    events: list[Event] = []
    moved = old is not None and (old.progress_step, old.progress_total) != (
        new.progress_step,
        new.progress_total,
    )
    # Progress while running, and the last steps that arrive with the outcome (before it).
    if moved and old is not None and old.status == "running" and new.progress_step > 0:
        events.append(
            {"type": "progress", "step": new.progress_step, "total": new.progress_total, "at": now}
        )
    if old is None or old.status != new.status:
        event: Event = {"type": "status", "status": new.status, "at": now}
        if new.status == "failed" and new.error:
            event["error"] = new.error
        events.append(event)
    return events


def schedule_deliveries(
    old: Job | None, new: Job, events: list[Event], now: float, progress_interval: float
) -> Job:
    """``new`` with a delivery for each of ``events`` its webhook asked for.

    Progress is delivered at most every ``progress_interval`` seconds, and a progress delivery
    not yet attempted is replaced by a newer one (a slow receiver gets the latest, not a
    backlog); a change of status is always delivered.
    """
    if new.webhook is None or not events:
        return new
    wanted = set(new.webhook_events)
    deliveries = list(new.deliveries)
    progress_at = new.webhook_progress_at
    for event in events:
        if event["type"] == "status":
            name = WEBHOOK_EVENT_OF.get(event["status"])
            if name is None or name not in wanted:
                continue
        else:
            name = "progress"
            if name not in wanted or new.status in FINISHED:
                continue
            if progress_at is not None and now - progress_at < progress_interval:
                continue
            progress_at = now
            deliveries = [
                d
                for d in deliveries
                if not (d.event == "progress" and d.status == "pending" and d.attempts == 0)
            ]
        deliveries.append(WebhookDelivery(event=name, created_at=now, next_attempt_at=now))
    if deliveries == new.deliveries:
        return new
    return new.model_copy(update={"deliveries": deliveries, "webhook_progress_at": progress_at})
