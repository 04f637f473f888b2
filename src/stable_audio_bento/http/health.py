"""``GET /health``: models, limits, queue and storage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .deps import RuntimeDep
from .errors import OPENAPI_ERRORS
from .views import health_view

router = APIRouter(tags=["health"])


@router.get("/health", summary="Models, limits and queue")
def health(runtime: RuntimeDep) -> dict[str, Any]:
    return health_view(runtime)


@router.get(
    "/v1/loras",
    summary="LoRA adapters in the model store, by base model",
    responses={404: OPENAPI_ERRORS[404]},  # ?model= names no model
)
def list_loras(runtime: RuntimeDep, model: str | None = None) -> dict[str, Any]:
    """Every LoRA (name, base, adapter type, rank, alpha, filters, size); ``model`` keeps the
    ones for that model (any of its names)."""
    by_base = runtime.generator.loras.by_base()
    if model is not None:
        base = runtime.registry.resolve(model).name
        by_base = {base: by_base.get(base, [])}
    return {"object": "list", "data": [lora for loras in by_base.values() for lora in loras]}
