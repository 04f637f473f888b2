"""The job API: queue a generation, poll it, fetch its audio, list, cancel.

A job record has the stable-audio-api server's fields (``mode``, ``duration``, ``steps``,
``output_count``, ``completed_at``, ``download_url``, ``download_content_type``,
``storage_backend``, ``storage_key``, ``sample_rate``, ``error``) and ours beside them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from ..archive import media_type_of
from ..errors import StorageError
from ..jobs.storage import LocalStorage
from ..schemas import GenerationsRequest
from .deps import CallerDep, IdempotencyKeyHeader, PublicBaseDep, RuntimeDep
from .errors import error_response
from .fields import IGNORED_HEADER, ignored_fields_headers, joined_ignored
from .views import compact_view, job_view

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=202, summary="Queue a generation job")
def create_job(
    body: GenerationsRequest,
    runtime: RuntimeDep,
    base: PublicBaseDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    headers = ignored_fields_headers(body, runtime.settings, "/jobs")
    params = body.to_params()
    job = runtime.submit_job(params, idempotency_key, owner=caller.owner)
    # Peer fields the model cannot honour at their defaults (planning loads nothing).
    peer = runtime.generator.plan(params).ignored
    if peer:
        headers = {**headers, **joined_ignored(headers, {IGNORED_HEADER: ",".join(peer)})}
    view = job_view(job, runtime, base)
    return JSONResponse(view, status_code=202, headers={**headers, "Location": view["status_url"]})


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
