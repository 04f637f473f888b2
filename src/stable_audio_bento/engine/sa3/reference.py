"""What Stable Audio 3's reference ``generate()`` does around the DiT, in one place.

The reference (``stable_audio_3/model.py`` ``StableAudioModel.generate`` with
``inference/sampling.py`` ``sample_diffusion`` and ``models/dit.py``
``DiffusionTransformer.forward``) differs from diffusers' pipeline in ways that change the
audio of the released weights; each is here:

- the latent length: ``int((seconds + padding) * rate)`` samples, rounded up to the
  downsampling ratio, then to the encoder's chunk alignment (``chunk_size // stride`` latent
  frames, 2 for SAME), so the same seed draws the same noise shape (``latent_align``, used
  by ``ModelInfo.latent_frames``);
- the valid length (``mask_padding_attention``): the request's own frames
  (``ceil(int(seconds * rate) / ratio)``) plus ``int(padding * rate / ratio)``; frames past it
  are padding, whose values the DiT's self-attention zeroes (``valid_frames``,
  ``PaddedSelfAttention``: the reference's path without flash-attn's varlen kernels, the one
  it takes on a CPU);
- the zero inpainting input: ``inpaint_mask`` and ``inpaint_masked_input`` are always fed to
  the DiT (zeros for text-to-audio), whose ``to_local_embed`` has a bias (``zero_local``);
- classifier-free guidance in the clean-estimate space, the unconditional branch a zeroed
  context (or the negative prompt with its padding zeroed), adaptive projected guidance over
  the valid frames only, ``apg_scale`` 1 by default (``guide``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# The reference's default APG scale (``generate(apg_scale=1.0)``): full projection.
DEFAULT_APG_SCALE = 1.0
# SAME's encoder chunk in audio-rate frames when its config names none (the reference's default).
DEFAULT_CHUNK_SIZE = 32


def latent_align(vae_config: dict[str, Any]) -> int:
    """Latent frames a length is aligned to: the encoder's ``chunk_size // stride`` (recorded at
    import; entries from before that: from the vae config)."""
    extras = vae_config.get("sa3_bento", {})
    if "latent_align" in extras:
        return max(1, int(extras["latent_align"]))
    strides = vae_config.get("encoder_strides") or [16]
    chunk = int(extras.get("chunk_size", DEFAULT_CHUNK_SIZE))
    return max(1, chunk // int(strides[0]))


def valid_frames(seconds: float, padding: float, rate: int, ratio: int, frames: int) -> int:
    """Frames the DiT attends to: the request's own plus the padding's (at most ``frames``)."""
    own = math.ceil(int(seconds * rate) / ratio)
    return min(frames, own + int(padding * rate / ratio))


def padding_mask(valid: Sequence[int], frames: int, device: Any) -> Any:
    """(batch, frames) booleans, True on each item's valid frames; None when all are valid."""
    import torch

    if all(v >= frames for v in valid):
        return None
    lengths = torch.tensor(list(valid), device=device)
    return torch.arange(frames, device=device)[None] < lengths[:, None]


def zero_local(batch: int, latent_dim: int, frames: int, device: Any, dtype: Any) -> Any:
    """The inpainting input of a request without source audio: zero mask, zero latent."""
    import torch

    return torch.zeros((batch, 1 + latent_dim, frames), device=device, dtype=dtype)


def apg_project(diff: Any, direction: Any, mask: Any) -> tuple[Any, Any]:
    """``diff``'s parts parallel and orthogonal to ``direction``, over the valid frames only
    (``mask``: (batch, frames) or None); padding frames get no guidance."""
    dtype = diff.dtype
    diff, direction = diff.float(), direction.float()
    if mask is None:
        unit = direction / direction.norm(dim=(-1, -2), keepdim=True).clamp_min(1e-12)
        parallel = (diff * unit).sum(dim=(-1, -2), keepdim=True) * unit
        return parallel.to(dtype), (diff - parallel).to(dtype)
    keep = mask[:, None].float()
    masked = direction * keep
    unit = masked / masked.norm(dim=(-1, -2), keepdim=True).clamp_min(1e-8)
    parallel = (diff * keep * unit).sum(dim=(-1, -2), keepdim=True) * unit
    orthogonal = (diff - (diff * unit).sum(dim=(-1, -2), keepdim=True) * unit) * keep
    return parallel.to(dtype), orthogonal.to(dtype)


def guide(
    x: Any,
    sigma: float,
    conditioned: Any,
    unconditioned: Any,
    cfg_scale: float,
    apg_scale: float,
    mask: Any = None,
) -> Any:
    """The guided velocity from the two branches' velocities, as the reference's DiT.

    Guidance happens on the clean estimates (``x - sigma * v``); with ``apg_scale`` > 0 the
    guidance direction keeps only (in proportion) its part orthogonal to the conditioned
    estimate, measured over the valid frames.
    """
    cond_x0 = x - sigma * conditioned
    diff = cond_x0 - (x - sigma * unconditioned)
    if apg_scale == 1.0:
        diff = apg_project(diff, cond_x0, mask)[1]
    elif apg_scale != 0.0:
        diff = apg_scale * apg_project(diff, cond_x0, mask)[1] + (1 - apg_scale) * diff
    return (x - (cond_x0 + (cfg_scale - 1) * diff)) / sigma


class PaddedSelfAttention:
    """The DiT's self-attention with the reference's padding mask: the values of padding
    frames are zeroed before attention (memory tokens always count as valid).

    ``mask`` is set for each forward pass (None: every frame is valid); a diffusers attention
    processor, installed with ``set_processor``.
    """

    def __init__(self, memory_tokens: int) -> None:
        self.memory_tokens = memory_tokens
        self.mask: Any = None

    def __call__(self, attn: Any, hidden_states: Any, rope: Any) -> Any:
        import torch
        import torch.nn.functional as F
        from diffusers.models.transformers.transformer_stable_audio3 import (
            _apply_rotary_partial,
        )

        def heads(x: Any) -> Any:  # (batch, seq, heads, head_dim), as diffusers' processor
            return x.unflatten(-1, (attn.heads, attn.dim_heads))

        keep = None
        if self.mask is not None:
            batch = hidden_states.shape[0]
            memory = self.mask.new_ones((batch, self.memory_tokens))
            keep = torch.cat([memory, self.mask], dim=1)[:, :, None, None]

        def attend(q: Any, k: Any, v: Any) -> Any:
            q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = _apply_rotary_partial(q, rope), _apply_rotary_partial(k, rope)
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
            return out.transpose(1, 2)

        if attn.use_differential:
            q1, q2, k1, k2, v = map(heads, attn.to_qkv(hidden_states).chunk(5, dim=-1))
            if keep is not None:
                v = v * keep.to(v.dtype)
            out = attend(q1, k1, v) - attend(q2, k2, v)
        else:
            q, k, v = map(heads, attn.to_qkv(hidden_states).chunk(3, dim=-1))
            if keep is not None:
                v = v * keep.to(v.dtype)
            out = attend(q, k, v)
        return attn.to_out(out.flatten(2, 3))


def install_padding_mask(transformer: Any) -> PaddedSelfAttention:
    """Give every DiT block the padding-mask self-attention; returns the shared processor."""
    processor = PaddedSelfAttention(int(transformer.config.num_memory_tokens))
    for block in transformer.transformer_blocks:
        block.self_attn.set_processor(processor)
    return processor


def keep_mask(
    regions: Sequence[tuple[float, float]], seconds: float, rate: int, ratio: int, frames: int
) -> Any:
    """float (1, frames): 1 where the inpainting follows the source, as the reference builds it.

    In samples: ones, zero inside each region (``int(start * rate)`` to ``int(end * rate)``)
    and from ``int(seconds * rate)`` on; a latent frame takes the value of its first sample
    (nearest-neighbour resampling to the latent length).
    """
    import torch

    samples = torch.arange(frames) * ratio
    keep = samples < int(seconds * rate)
    for start, end in regions:
        keep &= ~((samples >= int(start * rate)) & (samples < int(end * rate)))
    return keep.float()[None]
