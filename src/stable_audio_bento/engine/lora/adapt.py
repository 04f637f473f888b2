"""The reference's adapter math (``LoRAParametrization``), one weight at a time.

Every function takes the base weight in the reference's layout (``(fan_out, fan_in)`` or a
Conv1d's ``(fan_out, fan_in, k)``), float32, and returns the adapted weight. Stacked LoRAs
apply in request order, each to the previous one's output, as the reference's parametrization
list does; a layer a LoRA has no tensors for is left unchanged by it.
"""

from __future__ import annotations

from typing import Any

from .files import LoraConfig

EPS = 1e-12  # the reference's norm guard


def svd_bases(weight: Any, rank: int) -> tuple[Any, Any]:
    """U (fan_out, r) and V (fan_in, r) of the base weight, signs fixed as the reference does
    (the largest-magnitude entry of each U column positive)."""
    import torch

    w = weight.reshape(weight.shape[0], -1).float().cpu()
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    index = u.abs().argmax(dim=0)
    signs = u[index, torch.arange(u.shape[1])].sign()
    signs[signs == 0] = 1
    u, vh = u * signs.unsqueeze(0), vh * signs.unsqueeze(1)
    return u[:, :rank].contiguous(), vh[:rank, :].T.contiguous()


def adapt(weight: Any, config: LoraConfig, params: dict[str, Any], strength: float) -> Any:
    """``weight`` with one LoRA layer applied at ``strength`` (float32, same shape)."""
    kind = config.adapter_type
    shape = weight.shape
    w = weight.reshape(shape[0], -1)
    if config.xs:
        delta = params["U"] @ params["M_xs"] @ params["V"].T
    else:
        delta = params["lora_B"] @ params["lora_A"]
    if kind in ("lora", "lora-xs"):
        return (w + config.scaling * strength * delta).reshape(shape)
    if strength == 0:  # the reference skips the renormalisation at strength 0
        return weight
    v = w + config.scaling * strength * delta
    if kind.startswith("bora"):
        rows = v / (v.norm(dim=1, keepdim=True) + EPS)
        mid = params["magnitude_r"].unsqueeze(1) * rows
        cols = mid / (mid.norm(dim=0, keepdim=True) + EPS)
        return (cols * params["magnitude_c"].unsqueeze(0)).reshape(shape)
    dim = 0 if "cols" in kind else 1
    unit = v / (v.norm(dim=dim, keepdim=True) + EPS)
    return (unit * params["magnitude"].unsqueeze(dim)).reshape(shape)
