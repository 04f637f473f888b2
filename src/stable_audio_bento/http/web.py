"""The web page: static files under ``/ui/``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(str(resources.files("stable_audio_bento") / "web"))

router = APIRouter(include_in_schema=False)


@router.get("/ui")
def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/")


def mount_web(app: FastAPI) -> None:
    """Serve the page; mounted even if the files are missing (a broken install answers 404,
    not a redirect loop)."""
    app.include_router(router)
    app.mount("/ui/", StaticFiles(directory=WEB_DIR, html=True, check_dir=False), name="ui")
