"""What routes are given: the server's ``Runtime`` and the public base URL of links."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ..limits import IDEMPOTENCY_KEY_MAX_CHARS
from ..runtime import Runtime
from .middleware.auth import Caller, caller_of


def get_runtime(request: Request) -> Runtime:
    """The ``Runtime`` the service (or a test) put on ``app.state.runtime`` at start."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_public_base(request: Request, runtime: RuntimeDep) -> str:
    """Where clients reach this server: ``STABLE_AUDIO_PUBLIC_URL``, else the request's URL."""
    return (runtime.settings.public_url or str(request.base_url)).rstrip("/")


PublicBaseDep = Annotated[str, Depends(get_public_base)]


def get_caller(request: Request) -> Caller:
    """Who is calling (the API key middleware's record): whose jobs it may see."""
    return caller_of(request.scope)


CallerDep = Annotated[Caller, Depends(get_caller)]


# The job routes' Idempotency-Key header (a retry with the same key returns the same job).
IdempotencyKeyHeader = Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX_CHARS)]
