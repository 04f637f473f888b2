"""Builds the FastAPI app from the routers."""

from __future__ import annotations

from fastapi import FastAPI

from ..runtime import Runtime
from . import audio_to_audio as audio_in
from . import generate, health, job_events, jobs, outputs
from .errors import install_error_handlers
from .views import bind_views
from .web import mount_web


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The compatible routes. The service sets ``app.state.runtime`` at start (or pass one)."""
    app = FastAPI(
        title="Stable Audio compatible routes",
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    if runtime is not None:
        app.state.runtime = runtime
        bind_views(runtime)
    install_error_handlers(app)
    for module in (generate, audio_in, jobs, job_events, health, outputs):
        app.include_router(module.router)
    mount_web(app)
    return app
