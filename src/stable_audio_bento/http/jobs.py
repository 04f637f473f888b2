"""The job API: queue a generation, poll it, fetch its audio, list, cancel.

A job record has the stable-audio-api server's fields (``mode``, ``duration``, ``steps``,
``output_count``, ``completed_at``, ``download_url``, ``download_content_type``,
``storage_backend``, ``storage_key``, ``sample_rate``, ``error``) and ours beside them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from ..archive import media_type_of
from ..errors import StorageError
from ..jobs.queue_control import JobFields, prefer_wait
from ..jobs.storage import LocalStorage
from ..schemas import GenerationsRequest
from .deps import CallerDep, IdempotencyKeyHeader, PublicBaseDep, RuntimeDep
from .errors import error_response
from .fields import IGNORED_HEADER, ignored_fields_headers, joined_ignored
from .job_events import wait_finished
from .middleware.auth import priority_cap
from .views import compact_view, job_view

router = APIRouter(tags=["jobs"])


class JobRequest(JobFields, GenerationsRequest):
    """``POST /jobs``: a generation (stable-audio-api's fields) plus queue control and webhooks."""


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
    idempotency_key: IdempotencyKeyHeader = None,
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
    cap = priority_cap(runtime.settings, caller)
    options = await run_in_threadpool(body.to_options().checked, runtime.settings, cap)
    params = body.to_params()
    job = await run_in_threadpool(
        runtime.submit_job, params, idempotency_key, caller.owner, options
    )
    # Peer fields the model cannot honour at their defaults (planning loads nothing).
    peer = runtime.generator.plan(params).ignored
    if peer:
        headers = {**headers, **joined_ignored(headers, {IGNORED_HEADER: ",".join(peer)})}
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
        return error_response(409, f"Job `{job_id}` {reason} (status: {job.status}).", "id")
    key = job.result_key
    storage = runtime.storage
    if not isinstance(storage, LocalStorage):
        # Object storage serves its own objects: the presigned (or public) URL.
        return RedirectResponse(await run_in_threadpool(storage.url, key, ""), status_code=307)
    try:
        path = await run_in_threadpool(storage.resolve, key)
    except (StorageError, FileNotFoundError, ValueError):
        return error_response(404, f"The audio of job `{job_id}` is no longer kept.", "id")
    media_type = media_type_of(path.suffix.removeprefix("."))
    return FileResponse(path, media_type=media_type, filename=path.name)


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(
    job_id: str, runtime: RuntimeDep, base: PublicBaseDep, caller: CallerDep
) -> dict[str, Any]:
    return job_view(runtime.jobs.request_cancel(job_id, caller.visible_owner), runtime, base)
