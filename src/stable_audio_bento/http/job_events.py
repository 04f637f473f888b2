"""A job's life as Server-Sent Events (``GET /jobs/{id}/events``), and waiting for a job.

The stream replays the job's event log from the store (so any replica serves it, and
``Last-Event-ID`` resumes it) and follows it until the job ends:

- ``event: status`` ``{"status", "at", "error"?}`` (id: the log entry)
- ``event: progress`` ``{"step", "total", "at"}`` (id: the log entry)
- ``event: queue`` ``{"position"}`` while queued, when it changes (no id: not logged)
- ``event: done``: the final job record (the same as ``GET /jobs/{id}``), then the stream ends.

Lines starting with ``:`` are keep-alives.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..errors import InvalidRequestError, JobNotFoundError
from ..jobs.records import Job
from ..jobs.store import JobStore
from ..runtime import Runtime
from .deps import CallerDep, PublicBaseDep, RuntimeDep
from .views import job_view

router = APIRouter(tags=["jobs"])

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
EVENT_STREAM = "text/event-stream"


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    """One Server-Sent Event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def wait_finished(store: JobStore, job: Job, seconds: float) -> Job:
    """``job`` once finished, or as it is after ``seconds`` (``Prefer: wait``)."""
    deadline = time.monotonic() + seconds
    while not job.finished and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        job = await run_in_threadpool(store.get, job.id)
    return job


async def job_events(
    runtime: Runtime, job: Job, after: str | None, base: str
) -> AsyncIterator[str]:
    """The SSE stream of ``job`` from after event ``after`` until it has ended."""
    store = runtime.jobs
    last, position = after, None
    quiet_since = time.monotonic()
    while True:
        finished = job.finished
        for event_id, event in await run_in_threadpool(store.events_after, job.id, last):
            yield sse(str(event.get("type", "status")), event, event_id)
            last, quiet_since = event_id, time.monotonic()
        if finished:  # every event up to its end is sent: the end is logged with it
            yield sse("done", await run_in_threadpool(job_view, job, runtime, base))
            return
        if job.status == "queued":
            now = await run_in_threadpool(store.queue_position, job)
            if now is not None and now != position:
                position, quiet_since = now, time.monotonic()
                yield sse("queue", {"position": now})
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)
        try:
            job = await run_in_threadpool(store.get, job.id)
        except JobNotFoundError:
            return  # purged while followed


@router.get(
    "/jobs/{job_id}/events",
    summary="The job's status, progress and queue position as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events until the job ends. `status`: "
            '{"status", "at", "error"?}; `progress`: {"step", "total", "at"}; `queue`: '
            '{"position"} (while queued); `done`: the final job record, then the stream '
            "closes. Logged events carry an `id` to resume from (`Last-Event-ID`).",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        }
    },
)
async def stream_job_events(
    job_id: str,
    runtime: RuntimeDep,
    base: PublicBaseDep,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    after: Annotated[
        str | None,
        Query(max_length=64, description="Resume after this event id (as Last-Event-ID)."),
    ] = None,
) -> StreamingResponse:
    job = await run_in_threadpool(runtime.jobs.get, job_id, caller.visible_owner)
    resume = last_event_id or after
    if resume is not None:
        try:
            await run_in_threadpool(runtime.jobs.events_after, job.id, resume)
        except ValueError:
            field = "Last-Event-ID" if last_event_id else "after"
            raise InvalidRequestError(
                f"`{field}` is not an event id of this server ({resume!r}).", field=field
            ) from None
    return StreamingResponse(
        job_events(runtime, job, resume, base),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
