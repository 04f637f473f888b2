"""The SAME decoder of Stable Audio 3, exact and linear in the length.

diffusers' ``AutoencoderSAME`` runs each decoder transformer over the whole flattened segment
sequence (``latents x (stride + 1)`` tokens) with a dense ``seq x seq`` band mask, so its time
and memory grow with the square of the length (380 s on SAME-L: a ~19 GB mask per layer). The
band is narrow: token ``i`` attends to tokens ``j`` with ``|j - i| <= sliding_window x
(stride + 1)``. Here each block of queries attends only to the keys its band can reach (its
own block and ``window`` keys either side), the layers run chunk by chunk along the sequence,
and the decode stops a receptive field past the frames the caller keeps. Same weights, same
submodules (norms, projections, feed-forward, rotary frequencies), same arithmetic per kept
token: only the masked-out keys, which contribute exactly zero, are never computed.
"""

from __future__ import annotations

import math
from typing import Any

# Queries per attention block, in units of the band's half-width: a block of 4w queries reads
# 6w keys, where the exact band is 2w + 1 per query.
BLOCK_WINDOWS = 4
# Tokens per chunk of the sequence that one layer processes at once (bounds the temporaries).
CHUNK_TOKENS = 16384


def receptive_frames(vae: Any) -> int:
    """Latent frames beyond a span that can still change the span's decoded samples."""
    blocks = vae.decoder.blocks
    return 1 + sum(len(b.transformers) * int(b.sliding_window) for b in blocks)


def _rotate_half(x: Any) -> Any:
    import torch

    x1, x2 = x.reshape(*x.shape[:-1], 2, -1).unbind(-2)
    return torch.cat((-x2, x1), dim=-1)


def _rotary(t: Any, freqs: Any) -> Any:
    """Partial RoPE on (batch, seq, heads, dim): the first ``freqs.shape[-1]`` channels turn."""
    import torch

    rot = freqs.shape[-1]
    head, rest = t[..., :rot].float(), t[..., rot:]
    f = freqs.float().unsqueeze(1)
    head = head * f.cos() + _rotate_half(head) * f.sin()
    return torch.cat((head.to(t.dtype), rest), dim=-1)


def _band_attention(q: Any, k: Any, v: Any, q0: int, window: int) -> Any:
    """Attention of queries ``q`` (batch, heads, nq, d) at key positions ``q0 ..`` to keys
    ``k``/``v`` (batch, heads, nk, d), each query reading the keys within ``window`` of it."""
    import torch
    import torch.nn.functional as F

    nq = q.shape[2]
    nk = k.shape[2]
    block = max(1, BLOCK_WINDOWS * window)
    nb = -(-nq // block)
    span = block + 2 * window
    # Key index p (in the padded keys) of block j, slot s: j * block + s; it is key
    # q0 - window + p of the unpadded keys.
    left = window - q0
    right = nb * block + 2 * window - left - nk
    pad_k = F.pad(k, (0, 0, left, right))
    pad_v = F.pad(v, (0, 0, left, right))
    kb = pad_k.unfold(2, span, block).transpose(-1, -2)  # (b, h, nb, span, d)
    vb = pad_v.unfold(2, span, block).transpose(-1, -2)
    qb = F.pad(q, (0, 0, 0, nb * block - nq))
    qb = qb.reshape(*qb.shape[:2], nb, block, qb.shape[-1])  # (b, h, nb, block, d)
    device = q.device
    slot = torch.arange(span, device=device)
    row = torch.arange(block, device=device)
    delta = slot[None, :] - window - row[:, None]  # key offset from its query
    band = delta.abs() <= window  # (block, span)
    key = torch.arange(nb, device=device)[:, None] * block + slot[None, :] - left
    valid = (key >= 0) & (key < nk)  # (nb, span)
    mask = band[None] & valid[:, None, :]
    # Padded query rows (past nq) may find no key: let them read anything, they are dropped.
    pad_rows = (torch.arange(nb, device=device)[:, None] * block + row[None, :]) >= nq
    mask = mask | pad_rows[:, :, None]
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)
    return out.flatten(2, 3)[:, :, :nq]


def _attention(attn: Any, hidden: Any, freqs: Any, q0: int, nq: int, window: int) -> Any:
    """One ``SAMEAttention`` over a chunk's keys; output for its ``nq`` queries from ``q0``."""

    def heads(x: Any) -> Any:
        return x.unflatten(-1, (attn.heads, attn.dim_heads))

    def prepare(q: Any, k: Any) -> tuple[Any, Any]:
        q = _rotary(attn.q_norm(q[:, q0 : q0 + nq]), freqs[q0 : q0 + nq])
        k = _rotary(attn.k_norm(k), freqs)
        return q.transpose(1, 2), k.transpose(1, 2)

    if attn.use_differential:
        q1, q2, k1, k2, v = map(heads, attn.to_qkv(hidden).chunk(5, dim=-1))
        v = v.transpose(1, 2)
        q1, k1 = prepare(q1, k1)
        q2, k2 = prepare(q2, k2)
        out = _band_attention(q1, k1, v, q0, window) - _band_attention(q2, k2, v, q0, window)
    else:
        q, k, v = map(heads, attn.to_qkv(hidden).chunk(3, dim=-1))
        q, k = prepare(q, k)
        out = _band_attention(q, k, v.transpose(1, 2), q0, window)
    return attn.to_out(out.transpose(1, 2).flatten(2, 3))


def _layer(layer: Any, x: Any, window: int, chunk: int) -> Any:
    """One ``TransformerBlock`` (pre-norm attention + feed-forward), chunk by chunk."""
    import torch

    n = x.shape[1]
    freqs = layer.attn.rope(n, x.device)  # the same absolute positions as the full sequence
    out = torch.empty_like(x)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        ka, kb = max(0, a - window), min(n, b + window)
        hidden = layer.norm_attn(x[:, ka:kb])
        y = x[:, a:b] + _attention(layer.attn, hidden, freqs[ka:kb], a - ka, b - a, window)
        out[:, a:b] = y + layer.ff(layer.norm_ff(y))
    return out


def _resample_block(block: Any, x: Any, chunk: int, noise: Any = None) -> Any:
    """A decoder-mode ``SAMETransformerResamplingBlock``: (B, C_in, T) -> (B, C_out, T * S).

    ``noise``: (B * T, S, C_in), added to the new tokens (the reference's ``mask_noise``)."""
    import torch

    batch, _, frames = x.shape
    stride, channels = block.stride, block.in_channels
    seq = x.transpose(1, 2).reshape(batch * frames, 1, channels)
    new = block.new_tokens.expand(batch * frames, stride, -1)
    if noise is not None:
        new = new + noise.to(new.dtype)
    sub = 1 + stride
    seq = torch.cat([seq, new], dim=1).reshape(batch, frames * sub, channels)
    window = block.sliding_window * sub
    for layer in block.transformers:
        seq = _layer(layer, seq, window, chunk)
    seq = seq.reshape(batch * frames, sub, channels)[:, -stride:, :]
    return block.mapping(seq.reshape(batch, frames * stride, channels).transpose(1, 2))


def decode(
    vae: Any,
    latents: Any,
    samples: int | None = None,
    chunk: int = CHUNK_TOKENS,
    mask_noise: Any = None,
) -> Any:
    """Decode ``latents`` (batch, latent_dim, frames) with ``vae`` (an ``AutoencoderSAME``).

    Returns (batch, channels, samples): the first ``samples`` samples of the full decode
    (all of them when None). Frames further than the decoder's receptive field past the kept
    samples are not decoded: they cannot change them. ``mask_noise``: ``draw(shape)``, the
    new-token noise of every frame (one batch item), drawn in full so that the stream stays the
    reference's, then cut to the frames decoded.
    """
    ratio = vae.downsampling_ratio
    total = latents.shape[-1] * ratio
    samples = total if samples is None else min(samples, total)
    keep = min(latents.shape[-1], math.ceil(samples / ratio) + receptive_frames(vae))
    x = vae.bottleneck.decode(latents[..., :keep])
    decoder = vae.decoder
    x = decoder.proj(x.transpose(1, 2)).transpose(1, 2)
    full = latents.shape[-1]
    for block in decoder.blocks:
        noise = None
        if mask_noise is not None:
            noise = mask_noise((full, block.stride, block.in_channels))[: x.shape[-1]]
        x = _resample_block(block, x, chunk, noise)
        full *= block.stride
    return vae.patch_embed.decode(x)[..., :samples]
