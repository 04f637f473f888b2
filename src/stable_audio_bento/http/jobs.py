"""The job API: queue a generation, poll it, fetch its audio, list, cancel.

A job record has the stable-audio-api server's fields (``mode``, ``duration``, ``steps``,
``output_count``, ``completed_at``, ``download_url``, ``download_content_type``,
``storage_backend``, ``storage_key``, ``sample_rate``, ``error``) and ours beside them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from ..archive import media_type_of
from ..audio_jobs import source_view
from ..errors import StableAudioError, StorageError
from ..jobs.models import Job
from ..jobs.queue_control import JobFields, prefer_wait
from ..runtime import Runtime
from ..schemas import GenerationsRequest, stable_api_body
from ..storage import LocalStorage
from .deps import CallerDep, PublicBaseDep, RuntimeDep
from .errors import error_response
from .fields import ignored_fields_headers
from .job_events import wait_finished

router = APIRouter(tags=["jobs"])


class JobRequest(JobFields, GenerationsRequest):
    """``POST /jobs``: a generation (stable-audio-api's fields) plus queue control and webhooks."""


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def job_view(job: Job, runtime: Runtime, base_url: str) -> dict[str, Any]:
    """The public job record."""
    base = base_url.rstrip("/")
    try:
        params = runtime.job_params(job)
        request: dict[str, Any] = stable_api_body(params)
        requested: float | None = params.seconds_total
    except (StableAudioError, KeyError, TypeError, ValueError):
        request, requested = dict(job.request), None  # a record this release cannot read
    ready = job.status == "succeeded" and job.result_key is not None
    key = job.result_key if ready else None
    return {
        "id": job.id,
        "status": job.status,
        "mode": job.mode,
        "model": job.model,
        "duration": job.duration if job.duration is not None else requested,
        "steps": job.progress_total,
        "output_count": job.output_count,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.finished_at),
        "download_url": runtime.storage.url(key, base) if key else None,
        "download_content_type": media_type_of(key.rsplit(".", 1)[-1]) if key else None,
        "error": job.error,
        "storage_backend": runtime.storage_backend,
        "storage_key": key,
        "sample_rate": job.sample_rate,
        # Ours.
        "status_url": f"{base}/jobs/{job.id}",
        "audio_url": f"{base}/jobs/{job.id}/audio",
        "response_format": job.response_format,
        "seed": job.seed,
        "seeds": job.seeds or ([job.seed] if job.seed is not None else []),
        "progress": {"step": job.progress_step, "total": job.progress_total},
        "finished_at": _iso(job.finished_at),
        "attempts": job.attempts,
        "worker": job.worker,
        "cancel_requested": job.cancel_requested,
        "request": request,
        "params": job.params or None,
        "source": source_view(job),
        "audio_in": job.audio_in or None,
        # Queue control and notifications.
        "priority": job.priority,
        "queue_position": runtime.jobs.queue_position(job) if job.status == "queued" else None,
        "max_queue_seconds": job.max_queue_seconds,
        "queue_deadline": _iso(job.queue_deadline),
        "events_url": f"{base}/jobs/{job.id}/events",
        "webhook": job.webhook,
        "webhook_events": job.webhook_events if job.webhook else None,
        "webhook_deliveries": [
            {
                "id": d.id,
                "event": d.event,
                "status": d.status,
                "attempts": d.attempts,
                "created_at": _iso(d.created_at),
                "last_attempt_at": _iso(d.last_attempt_at),
                "next_attempt_at": _iso(d.next_attempt_at) if d.status == "pending" else None,
                "response_status": d.response_status,
                "error": d.error,
            }
            for d in job.deliveries
        ],
    }


@router.post(
    "/jobs",
    status_code=202,
    summary="Queue a generation job (with `Prefer: wait=N`: the finished record if done in time)",
    responses={200: {"description": "Finished within the `Prefer: wait` time: the record"}},
)
async def create_job(
    body: JobRequest,
    runtime: RuntimeDep,
    base: PublicBaseDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    prefer: Annotated[
        str | None,
        Header(
            max_length=200,
            description="`wait=N`: hold the answer up to N seconds (at most "
            "STABLE_AUDIO_MAX_WAIT_SECONDS); 200 with the finished record (or, with an "
            "`Accept` of audio/* or application/zip, the audio of a succeeded job), else the 202.",
        ),
    ] = None,
    accept: Annotated[str | None, Header(max_length=500)] = None,
) -> Response:
    headers = ignored_fields_headers(body, runtime.settings, "/jobs")
    options = await run_in_threadpool(body.to_options().checked, runtime.settings, caller)
    job = await run_in_threadpool(
        runtime.submit_job, body.to_params(), idempotency_key, caller.owner, options
    )
    status = 202
    wait = prefer_wait(prefer, runtime.settings.max_wait_seconds)
    if wait is not None:
        job = await wait_finished(runtime.jobs, job, wait)
        headers["Preference-Applied"] = f"wait={wait:g}"
        status = 200 if job.finished else 202
        wants_audio = accept is not None and ("audio/" in accept or "application/zip" in accept)
        if wants_audio and job.status == "succeeded":
            audio = await job_audio(job.id, runtime, caller)
            audio.headers.update({**headers, "Location": f"{base}/jobs/{job.id}"})
            return audio
    view = await run_in_threadpool(job_view, job, runtime, base)
    return JSONResponse(
        view, status_code=status, headers={**headers, "Location": view["status_url"]}
    )


@router.get("/jobs", summary="Recent jobs of the caller's API key, newest first")
def list_jobs(
    runtime: RuntimeDep,
    base: PublicBaseDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    jobs = runtime.jobs.list_recent(limit, owner=caller.visible_owner)
    return {"jobs": [compact_view(job_view(j, runtime, base)) for j in jobs]}


@router.get("/jobs/{job_id}", summary="Job status and download URL")
def get_job(
    job_id: str, runtime: RuntimeDep, base: PublicBaseDep, caller: CallerDep
) -> dict[str, Any]:
    return job_view(runtime.jobs.get(job_id, caller.visible_owner), runtime, base)


@router.get(
    "/jobs/{job_id}/audio",
    summary="The job's audio (409 until it has succeeded, 404 once it is gone)",
    response_class=Response,
)
async def job_audio(job_id: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    job = await run_in_threadpool(runtime.jobs.get, job_id, caller.visible_owner)
    if job.status != "succeeded" or job.result_key is None:
        reason = "is not finished" if not job.finished else "has no audio"
        return error_response(
            409, f"Job `{job_id}` {reason} (status: {job.status}).", "ConflictError", "id"
        )
    key = job.result_key
    storage = runtime.storage
    if not isinstance(storage, LocalStorage):
        # Object storage serves its own objects: the presigned (or public) URL.
        return RedirectResponse(await run_in_threadpool(storage.url, key, ""), status_code=307)
    try:
        path = await run_in_threadpool(storage.resolve, key)
    except (StorageError, FileNotFoundError, ValueError):
        return error_response(
            404, f"The audio of job `{job_id}` is no longer kept.", "NotFoundError", "id"
        )
    media_type = media_type_of(path.suffix.removeprefix("."))
    return FileResponse(path, media_type=media_type, filename=path.name)


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(
    job_id: str, runtime: RuntimeDep, base: PublicBaseDep, caller: CallerDep
) -> dict[str, Any]:
    return job_view(runtime.jobs.request_cancel(job_id, caller.visible_owner), runtime, base)


# In a listing, prompts are cut to this many characters (the job's own record has them whole):
# 500 jobs with long prompts would otherwise be megabytes.
LISTED_TEXT_CHARS = 200


def compact_view(view: dict[str, Any]) -> dict[str, Any]:
    """``view`` for a listing: long strings of its request and params shortened."""
    cut = False
    for part in ("request", "params"):
        fields = view.get(part)
        if not isinstance(fields, dict):
            continue
        for name, value in list(fields.items()):
            if isinstance(value, str) and len(value) > LISTED_TEXT_CHARS:
                fields[name] = value[:LISTED_TEXT_CHARS] + "..."
                cut = True
    view["truncated"] = cut
    return view
