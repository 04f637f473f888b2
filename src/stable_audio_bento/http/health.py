"""``GET /health``: models, limits, queue and storage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .deps import RuntimeDep
from .views import health_view

router = APIRouter(tags=["health"])


@router.get("/health", summary="Models, limits and queue")
def health(runtime: RuntimeDep) -> dict[str, Any]:
    return health_view(runtime)
