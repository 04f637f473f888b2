"""``GET /outputs/{key}``: job outputs kept in local storage (S3 serves its own)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from ..archive import media_type_of
from ..errors import StorageError
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
    media_type = media_type_of(path.suffix.removeprefix("."))
    return FileResponse(path, media_type=media_type, filename=path.name)
