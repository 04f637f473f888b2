"""The web page: static files under ``/ui/``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(str(resources.files("stable_audio_bento") / "web"))

router = APIRouter(include_in_schema=False)


@router.get("/ui")
def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The page's icon where a browser looks for one unasked: a page served from this origin
    without an icon of its own (a client's dev build, the API docs) gets it, not a 404."""
    return FileResponse(WEB_DIR / "favicon.ico", media_type="image/x-icon")


def mount_web(app: FastAPI) -> None:
    """Serve the page; mounted even if the files are missing (a broken install answers 404,
    not a redirect loop)."""
    app.include_router(router)
    app.mount("/ui/", StaticFiles(directory=WEB_DIR, html=True, check_dir=False), name="ui")
