"""LoRAs applied per batch item, unmerged: each request its own set in one shared batch.

A plain ``lora`` or ``lora-xs`` layer adds ``alpha / rank * strength * B A x`` to the base
layer's output: linear in the input, so it can be added item by item after the shared base
layer runs, and a stack adds its deltas (the reference applies a stack in order, each to the
previous weight, which for these types is the same sum). DoRA and BoRA renormalise the adapted
weight, so they are merged instead (``merge``).

Forward hooks on the adapted modules add, for the rows of the items whose set has the layer,
``B (A x)`` times the item's strength; rows of items without it are not touched (a request
without LoRAs gets exactly the base model's output). The engines call their adapted layers
with the batch's items as rows, or twice the items with classifier-free guidance (the
unconditional half first or second, the items in order in each): row ``r`` is item
``r % items``. The text encoder is not one of them (it encodes only the negative prompts some
items have), so a LoRA with text encoder layers is merged too. The CPU fast path's int8 linear
layers hold no float weight to merge into, but take their deltas this way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ...errors import GenerationError
from .files import LoraConfig
from .layout import to_ours
from .merge import Loader, LoraSet, adapted_modules

LINEAR_TYPES = ("lora", "lora-xs")
ITEM_COMPONENTS = ("", "transformer", "duration_embedder")


@dataclass(frozen=True)
class Factors:
    """One layer's delta as ``B @ A`` in our layout and the module's dtype (scaling in B)."""

    a: Any  # (rank, fan_in * kernel)
    b: Any  # (fan_out, rank)


def factors(config: LoraConfig, params: dict[str, Any], transform: str, module: Any) -> Factors:
    if config.xs:
        b, a = params["U"] @ params["M_xs"], params["V"].T
    else:
        b, a = params["lora_B"], params["lora_A"]
    b = to_ours(b.float() * config.scaling, transform)
    like = computes_in(module)
    return Factors(a.to(**like).contiguous(), b.to(**like).contiguous())


def quantized(module: Any) -> bool:
    """An int8 linear layer (the CPU fast path's): float in and out, no float weight."""
    import torch

    return isinstance(module, torch.ao.nn.quantized.dynamic.Linear)


def computes_in(module: Any) -> dict[str, Any]:
    """The device and dtype of the layer's input and output."""
    import torch

    if quantized(module):
        return {"device": torch.device("cpu"), "dtype": torch.float32}
    return {"device": module.weight.device, "dtype": module.weight.dtype}


def supports(module: Any) -> bool:
    """A plain or int8 Linear, or a Conv1d with one group and zero padding."""
    import torch

    if type(module) is torch.nn.Linear or quantized(module):
        return True
    return type(module) is torch.nn.Conv1d and module.groups == 1 and module.padding_mode == "zeros"


def _delta(module: Any, x: Any, f: Factors) -> Any:
    import torch
    import torch.nn.functional as F

    if not isinstance(module, torch.nn.Conv1d):
        return F.linear(F.linear(x, f.a), f.b)
    rank, kernel = f.a.shape[0], module.kernel_size[0]
    a = f.a.view(rank, module.in_channels, kernel)
    low = F.conv1d(x, a, None, module.stride, module.padding, module.dilation)
    return F.conv1d(low, f.b[:, :, None])


@dataclass
class _Term:
    """One LoRA's delta on one layer, and each item's strength of it."""

    factors: Factors
    strengths: list[float]
    device: Any
    # Per multiple of the batch a call has: the rows that take the delta (None: all) and
    # their scales, made once on the host (no device sync in the forward pass).
    _rows: dict[int, tuple[Any, Any]] = field(default_factory=dict)

    def rows(self, copies: int) -> tuple[Any, Any]:
        found = self._rows.get(copies)
        if found is None:
            import torch

            per_row = self.strengths * copies
            chosen = [r for r, strength in enumerate(per_row) if strength]
            scale = torch.tensor([per_row[r] for r in chosen], device=self.device)
            index = None
            if len(chosen) < len(per_row):
                index = torch.tensor(chosen, dtype=torch.long, device=self.device)
            found = self._rows[copies] = (index, scale)
        return found


def _hook(terms: list[_Term], items: int) -> Any:
    """A forward hook adding ``terms`` to the rows of the items that have them."""

    def add(module: Any, args: tuple[Any, ...], output: Any) -> Any:
        x = args[0]
        rows = x.shape[0]
        if rows % items:
            raise GenerationError(f"a LoRA layer got {rows} rows for a batch of {items}")
        for term in terms:
            index, scale = term.rows(rows // items)
            if scale.numel() == 0:
                continue
            delta = _delta(module, x if index is None else x.index_select(0, index), term.factors)
            delta = delta * scale.view((-1,) + (1,) * (delta.dim() - 1)).to(delta.dtype)
            output = output + delta if index is None else output.index_add(0, index, delta)
        return output

    return add


@contextmanager
def per_item(
    engine: Any, sets: Sequence[LoraSet], load: Loader, cached: dict[str, Any]
) -> Iterator[None]:
    """The engine's adapted layers add each item's LoRAs inside the block (run lock held).

    ``cached``: per LoRA tag, its ``Factors`` by module (filled here, kept by the caller)."""
    items = len(sets)
    tags = list(dict.fromkeys(tag for loras in sets for tag, _ in loras))
    terms: dict[Any, list[_Term]] = {}
    for tag in tags:
        strengths = [sum(s for t, s in loras if t == tag) for loras in sets]
        by_module = cached.get(tag)
        if by_module is None:
            adapter = load(tag)
            if adapter.config.adapter_type not in LINEAR_TYPES:
                raise GenerationError(f"{tag}: a {adapter.config.adapter_type} LoRA is merged")
            by_module = {}
            for name, module, transform in adapted_modules(engine, set(adapter.layers)):
                by_module[module] = factors(adapter.config, adapter.layers[name], transform, module)
            cached[tag] = by_module
        for module, f in by_module.items():
            device = computes_in(module)["device"]
            terms.setdefault(module, []).append(_Term(f, strengths, device))
    handles = [m.register_forward_hook(_hook(t, items)) for m, t in terms.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
