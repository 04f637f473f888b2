"""The job API: queue a generation, poll it, list, cancel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from ..jobs.models import Job
from ..runtime import Runtime
from ..schemas import GenerationsRequest
from .deps import PublicBaseDep, RuntimeDep

router = APIRouter(tags=["jobs"])


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def job_view(job: Job, runtime: Runtime, base_url: str) -> dict[str, Any]:
    """The public job record."""
    base = base_url.rstrip("/")
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "status_url": f"{base}/jobs/{job.id}",
        "model": job.model,
        "response_format": job.response_format,
        "seed": job.seed,
        "progress": {"step": job.progress_step, "total": job.progress_total},
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "attempts": job.attempts,
        "worker": job.worker,
        "request": job.request,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "download_url": None,
    }
    if job.status == "succeeded" and job.result_key:
        view["download_url"] = runtime.storage.url(job.result_key, base)
        view["sample_rate"] = job.sample_rate
        view["duration"] = job.duration
    return view


@router.post("/jobs", status_code=202, summary="Queue a generation job")
def create_job(
    body: GenerationsRequest,
    runtime: RuntimeDep,
    base: PublicBaseDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    job = runtime.submit_job(body, idempotency_key)
    view = job_view(job, runtime, base)
    return JSONResponse(view, status_code=202, headers={"Location": view["status_url"]})


@router.get("/jobs", summary="Recent jobs, newest first")
def list_jobs(
    runtime: RuntimeDep, base: PublicBaseDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> dict[str, Any]:
    return {"jobs": [job_view(j, runtime, base) for j in runtime.jobs.list_recent(limit)]}


@router.get("/jobs/{job_id}", summary="Job status and download URL")
def get_job(job_id: str, runtime: RuntimeDep, base: PublicBaseDep) -> dict[str, Any]:
    return job_view(runtime.jobs.get(job_id), runtime, base)


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(job_id: str, runtime: RuntimeDep, base: PublicBaseDep) -> dict[str, Any]:
    return job_view(runtime.jobs.request_cancel(job_id), runtime, base)
