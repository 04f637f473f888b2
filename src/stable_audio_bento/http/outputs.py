"""``GET /outputs/{key}``: job outputs kept in local storage (S3 serves its own).

Downloads are behind the same rule as the job records: with API keys configured, an output
is served only to the key whose job made it (and to admin keys); any other key gets the same
404 as for an output that does not exist. (Rather than signed, expiring URLs: a job's
``download_url`` is then only as good as the key that can read the job, it never leaks
access through logs or a forwarded link, and there is no signing secret to keep and rotate.
S3 storage keeps its presigned URLs: they expire, and S3 cannot check our keys.)
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from ..archive import media_type_of
from ..errors import JobNotFoundError, StorageError
from ..jobs.storage import LocalStorage
from .deps import CallerDep, RuntimeDep
from .errors import error_response

router = APIRouter(tags=["outputs"])


@router.get("/outputs/{key}", summary="Download a job output (local storage)")
async def output(key: str, runtime: RuntimeDep, caller: CallerDep) -> Response:
    storage = runtime.storage
    if not isinstance(storage, LocalStorage):
        return error_response(404, "outputs are served by object storage")
    missing = error_response(404, f"no output named {key!r}", "key")
    try:
        path = await run_in_threadpool(storage.resolve, key)
    except (StorageError, FileNotFoundError, ValueError):
        return missing
    if caller.visible_owner is not None:
        job_id = key.split(".", 1)[0]  # an output's key is ``{job_id}.{ext}``
        try:
            await run_in_threadpool(runtime.jobs.get, job_id, caller.visible_owner)
        except JobNotFoundError:
            return missing
    media_type = media_type_of(path.suffix.removeprefix("."))
    return FileResponse(path, media_type=media_type, filename=path.name)
