"""SAME-S: the small SA3 models' autoencoder, which diffusers' ``AutoencoderSAME`` cannot run.

SAME-L (medium) attends over a sliding-window band, as ``AutoencoderSAME`` does. SAME-S (the
small models) differs in two ways that the converter records under ``sa3_bento`` in
``vae/config.json``:

- attention in fixed chunks of ``chunk_size`` frames (``chunk_size / stride`` latents, each
  latent a segment of ``stride + 1`` tokens) with RoPE positions local to the chunk; with
  ``chunk_midpoint_shift`` the second half of each block's layers runs on chunks shifted by
  half a chunk (the sequence's first and last half-chunk repeated at its ends);
- a kernel-3 ``mapping`` convolution in the decoder (``conv_mapping``).

``load_vae`` builds an ``AutoencoderSAME`` with the right mapping convolutions and loads the
weights strictly; ``encode``/``decode`` run it with the chunked attention (same submodules, the
reference's arithmetic). Cost and memory are linear in the length. No diffusers code is
patched: only the attention pattern around its layers is ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXTRA = "sa3_bento"


def same_extras(folder: Path) -> dict[str, Any]:
    """The ``sa3_bento`` settings of a ``vae/`` folder ({} for a stock AutoencoderSAME)."""
    config = json.loads((folder / "config.json").read_text())
    extras = config.get(EXTRA, {})
    return dict(extras) if isinstance(extras, dict) else {}


def build_vae(config: dict[str, Any], extras: dict[str, Any], device: Any = None) -> Any:
    """An ``AutoencoderSAME`` whose mapping convolutions have the kernels ``extras`` names."""
    import importlib

    import torch
    from torch.nn.utils import weight_norm

    diffusers: Any = importlib.import_module("diffusers")
    with torch.device(device or "cpu"):
        vae = diffusers.AutoencoderSAME(**config)
        for half in ("encoder", "decoder"):
            kernel = int(extras.get(f"{half}_mapping_kernel", 1))
            if kernel == 1:
                continue
            for block in getattr(vae, half).blocks:
                if isinstance(block.mapping, torch.nn.Identity):
                    continue
                conv = torch.nn.Conv1d(
                    block.in_channels, block.out_channels, kernel, padding="same", bias=True
                )
                block.mapping = weight_norm(conv)
    return vae


def load_vae(folder: Path, dtype: Any = None) -> Any:
    """The vae of an SA3 entry in ``dtype`` (the stored one when None): stock
    ``from_pretrained``, or SAME-S built and loaded strictly."""
    import importlib

    from safetensors.torch import load_file

    extras = same_extras(folder)
    diffusers: Any = importlib.import_module("diffusers")
    if not extras:
        return diffusers.AutoencoderSAME.from_pretrained(
            str(folder), local_files_only=True, torch_dtype=dtype
        )
    config = {
        k: v
        for k, v in json.loads((folder / "config.json").read_text()).items()
        if not k.startswith("_") and k != EXTRA
    }
    vae = build_vae(config, extras)
    vae.load_state_dict(load_file(str(folder / "diffusion_pytorch_model.safetensors")))
    setattr(vae, EXTRA, extras)
    if dtype is not None and dtype != next(vae.parameters()).dtype:
        vae = vae.to(dtype)
    return vae.eval()


def uses_chunks(vae: Any) -> bool:
    """True for a SAME-S vae from ``load_vae``: decode and encode it with this module."""
    return bool(getattr(vae, EXTRA, {}).get("attention") == "chunked")


def _layers(block: Any, x: Any, chunk: int, shift: bool) -> Any:
    """The block's transformer layers over ``x`` (batch, tokens, dim) in chunks of ``chunk``."""
    import torch

    layers = list(block.transformers)
    batch, tokens, dim = x.shape
    if not shift:
        x = x.reshape(batch * (tokens // chunk), chunk, dim)
        for layer in layers:
            x = layer(x)
        return x.reshape(batch, tokens, dim)
    split, half = len(layers) // 2, chunk // 2
    x = x.reshape(batch * (tokens // chunk), chunk, dim)
    for layer in layers[:split]:
        x = layer(x)
    x = x.reshape(batch, tokens, dim)
    x = torch.cat([x[:, :half], x, x[:, -half:]], dim=1)
    n = x.shape[1] // chunk
    x = x.reshape(batch * n, chunk, dim)
    for layer in layers[split:]:
        x = layer(x)
    return x.reshape(batch, n * chunk, dim)[:, half:-half]


def _pad(x: Any, multiple: int, dim: int) -> Any:
    import torch

    extra = (-x.shape[dim]) % multiple
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _block(block: Any, x: Any, extras: dict[str, Any], mask_noise: Any = None) -> Any:
    """One resampling block with chunked attention: (batch, C_in, T) -> (batch, C_out, T').

    ``mask_noise`` (decoder): ``draw(shape)`` -> the noise the reference adds to the new tokens
    (already scaled), or None."""
    import torch

    if extras.get("attention") != "chunked":  # the band: diffusers' own block (mapping swapped)
        return block(x)
    stride = int(block.stride)
    chunk_frames = int(extras["chunk_size"])
    shift = bool(extras.get("chunk_midpoint_shift", False))
    sub = stride + 1
    chunk = chunk_frames + chunk_frames // stride  # tokens: chunk_size / stride segments
    if block.mode == "encoder":
        x = block.mapping(_pad(x, chunk_frames, -1))
        seq = x.transpose(1, 2)
        batch, frames, dim = seq.shape
        seq = seq.reshape(batch * (frames // stride), stride, dim)
        new = block.new_tokens.expand(seq.shape[0], 1, dim)
        seq = torch.cat([seq, new], dim=1).reshape(batch, -1, dim)
        seq = _layers(block, seq, chunk, shift)
        seq = seq.reshape(-1, sub, dim)[:, -1:, :].reshape(batch, -1, dim)
        return seq.transpose(1, 2)
    seq = _pad(x.transpose(1, 2), chunk_frames // stride, 1)
    batch, latents, dim = seq.shape
    seq = seq.reshape(batch * latents, 1, dim)
    new = block.new_tokens.expand(seq.shape[0], stride, dim)
    if mask_noise is not None:
        new = new + mask_noise((seq.shape[0], stride, dim)).to(new.dtype)
    seq = torch.cat([seq, new], dim=1).reshape(batch, -1, dim)
    seq = _layers(block, seq, chunk, shift)
    seq = seq.reshape(-1, sub, dim)[:, -stride:, :].reshape(batch, -1, dim)
    return block.mapping(seq.transpose(1, 2))


def encode(vae: Any, audio: Any) -> Any:
    """Audio (batch, channels, samples) -> latents (batch, latent_dim, frames)."""
    extras = vae.sa3_bento
    x = vae.patch_embed.encode(audio)
    for block in vae.encoder.blocks:
        x = _block(block, x, extras)
    x = vae.encoder.proj(x.transpose(1, 2)).transpose(1, 2)
    return vae.bottleneck.encode(x)


def decode(vae: Any, latents: Any, mask_noise: Any = None) -> Any:
    """Latents (batch, latent_dim, frames) -> audio (batch, channels, samples).

    ``mask_noise``: ``draw(shape)``, the decoder's new-token noise (see ``_block``)."""
    extras = vae.sa3_bento
    x = vae.bottleneck.decode(latents)
    x = vae.decoder.proj(x.transpose(1, 2)).transpose(1, 2)
    for block in vae.decoder.blocks:
        x = _block(block, x, extras, mask_noise)
    return vae.patch_embed.decode(x)
