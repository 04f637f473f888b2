"""Where the weight a LoRA layer adapts lives in a loaded engine (and in a base entry's files,
``stable_audio_bento.lora.layout``).

LoRA layers are named as in the reference's model (stable-audio-tools). A Stable Audio Open
entry keeps that model and its names. A Stable Audio 3 entry is converted to diffusers'
components: the family's layout (``engine.sa3.layout``, which registers itself here with
``use_sa3_plan``: this package never imports a family) says which component and key each
reference weight became and how (``qkv_reorder``: the fused differential q/k/v rows are
reordered), so the adapter is applied in the reference's layout and the result is converted
the same way as the base weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import GenerationError


@dataclass(frozen=True)
class Place:
    """A reference weight's home: component (``""``: the stable-audio-tools model), key, and
    the transform from the reference's layout to ours."""

    component: str
    key: str
    transform: str = "copy"


def to_ours(weight: Any, transform: str) -> Any:
    if transform == "qkv_reorder":
        import torch

        q, k, v, q2, k2 = weight.chunk(5, dim=0)
        return torch.cat([q, q2, k, k2, v], dim=0)
    return weight


def to_reference(weight: Any, transform: str) -> Any:
    if transform == "qkv_reorder":
        import torch

        q, q2, k, k2, v = weight.chunk(5, dim=0)
        return torch.cat([q, k, v, q2, k2], dim=0)
    return weight


def sa3_differential(transformer_config: dict[str, Any]) -> bool:
    return bool(transformer_config.get("use_differential_attention", False))


# Stable Audio 3's plan: (reference weight name, differential DiT) -> its Place or None.
SA3Plan = Callable[[str, bool], "Place | None"]
_sa3_plan: list[SA3Plan] = []


def use_sa3_plan(plan: SA3Plan) -> None:
    """Stable Audio 3's layout registers how its reference weights map to our components."""
    _sa3_plan[:] = [plan]


def place(hub_name: str, sa3: bool, differential: bool = False) -> Place | None:
    """Where the base weight ``hub_name`` is in our model (None: it is not)."""
    if not sa3:
        return Place("", hub_name)
    if not _sa3_plan:
        raise GenerationError("Stable Audio 3's layout is not loaded: no LoRA plan for it")
    return _sa3_plan[0](hub_name, differential)


def engine_modules(engine: Any) -> tuple[dict[str, Any], bool, bool]:
    """The modules a loaded engine runs, by component; whether it is SA3 (and differential)."""
    parts = getattr(engine, "parts", None)
    if parts is not None:
        components = {
            "transformer": parts.transformer,
            "duration_embedder": parts.duration_embedder,
            "text_encoder": parts.text_encoder,
        }
        differential = sa3_differential(dict(parts.transformer.config))
        return components, True, differential
    model = getattr(engine, "model", None)
    if model is None:
        raise GenerationError(f"{type(engine).__name__} has no loaded modules to adapt")
    return {"": model}, False, False


def engine_layer(
    components: dict[str, Any], hub_name: str, sa3: bool, differential: bool
) -> tuple[Any, str]:
    """The module whose ``weight`` parameter holds ``hub_name`` in a loaded engine, and the
    transform to our layout."""
    where = place(hub_name, sa3, differential)
    if where is None:
        raise KeyError(hub_name)
    root = components[where.component]
    module = root.get_submodule(where.key.removesuffix(".weight"))
    return module, where.transform
