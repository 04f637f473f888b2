"""``GET /outputs/{key}``: job outputs kept in local storage (S3 serves its own)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from ..errors import StorageError
from ..formats import FORMATS
from ..storage import LocalStorage
from .deps import RuntimeDep
from .errors import error_response

router = APIRouter(tags=["outputs"])


@router.get("/outputs/{key}", summary="Download a job output (local storage)")
async def output(key: str, runtime: RuntimeDep) -> Response:
    storage = runtime.storage
    if not isinstance(storage, LocalStorage):
        return error_response(404, "outputs are served by object storage", "NotFoundError")
    try:
        path = await run_in_threadpool(storage.resolve, key)
    except (StorageError, FileNotFoundError, ValueError):
        return error_response(404, f"no output named {key!r}", "NotFoundError", "key")
    fmt = FORMATS.get(path.suffix.removeprefix("."))
    media_type = fmt.media_type if fmt else "application/octet-stream"
    return FileResponse(path, media_type=media_type, filename=path.name)
