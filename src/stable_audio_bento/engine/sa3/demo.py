"""Build the Stable Audio 3 demo offline from its recipe: the real SA3 architecture, tiny, seeded.

The recipe (``models/demo-sa3/``) holds ``recipe.json`` (name, aliases, seed, limits, sampling
defaults, the tokenizer's vocabulary) and one config per component: ``transformer.json``
(``StableAudio3DiTModel``), ``vae.json`` (``AutoencoderSAME``: 44.1 kHz with the real
256 x 16 downsampling, so the decoder's sequence stays as short as the real one's),
``duration_embedder.json``, ``text_encoder.json`` (a T5Gemma encoder) and ``scheduler.json``.
The build writes a directory in diffusers' ``StableAudio3Pipeline.save_pretrained`` layout;
two builds give byte-identical files.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
COMPONENTS = ("transformer", "vae", "duration_embedder", "text_encoder", "scheduler")


def _read(recipe_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((recipe_dir / f"{name}.json").read_text())
    return data


def build_tokenizer(vocabulary: str, max_length: int) -> Any:
    """A Gemma-style tokenizer (BPE with byte fallback, spaces as ``▁``, ``<bos>`` first).

    Its vocabulary is the special tokens, the 256 byte-fallback tokens, every character of the
    recipe's words and each word as one token (with the merges that build it), so common prompt
    words are one token each and anything else still encodes, byte by byte.
    """
    from transformers import GemmaTokenizer

    words = sorted(set(unicodedata.normalize("NFKC", vocabulary).split()))
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256))]:
        vocab[token] = len(vocab)
    for char in sorted({"▁", *"".join(words)}):
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    # Left-to-right merges: "▁" + "d" -> "▁d", "▁d" + "o" -> "▁do", ... (and without the "▁"
    # for a prompt's first word, which has no space before it).
    for word in [f"▁{w}" for w in words] + words:
        piece = word[0]
        for char in word[1:]:
            merged = piece + char
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((piece, char))
            piece = merged
    pairs: Any = merges
    return GemmaTokenizer(
        vocab=vocab,
        merges=pairs,
        add_bos_token=True,
        model_max_length=max_length,
        padding_side="right",
    )


def _text_encoder(spec: dict[str, Any], vocab_size: int) -> Any:
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma import T5GemmaModuleConfig

    module = {k: v for k, v in spec.items() if k != "model_max_length"}
    encoder = T5GemmaModuleConfig(vocab_size=vocab_size, **module)
    config = T5GemmaConfig(
        encoder=encoder.to_dict(),
        decoder=encoder.to_dict(),
        is_encoder_decoder=False,
        vocab_size=vocab_size,
    )
    return T5GemmaEncoderModel(config)


def _wake_zero_layers(module: Any, seed: int, std: float) -> None:
    """Give zero-initialised weight matrices small random values.

    A fresh SA3 DiT and SAME zero-initialise their output projections (and the DiT its residual
    convs), so a fresh model ignores its conditioning and decodes silence; small random values
    there make prompt, length and seed change the output.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim >= 2 and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def build_demo_sa3(recipe_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Write the demo's pipeline directory into ``out_dir``; return the recipe (for metadata)."""
    import diffusers
    import torch

    lib: Any = diffusers  # untyped classes

    recipe = _read(recipe_dir, "recipe")
    specs = {name: _read(recipe_dir, name) for name in COMPONENTS}
    seed = int(recipe["seed"])
    tokenizer = build_tokenizer(
        recipe["vocabulary"], int(specs["text_encoder"]["model_max_length"])
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = _text_encoder(specs["text_encoder"], len(tokenizer))
        transformer = lib.StableAudio3DiTModel(**specs["transformer"])
        vae = lib.AutoencoderSAME(**specs["vae"])
        duration_embedder = lib.StableAudio3DurationEmbedder(**specs["duration_embedder"])
    # Per component: the SAME decoder needs larger values than the DiT for its output to follow
    # the latent (its output tokens see the latent only through attention).
    stds = recipe["init_std"]
    for i, (component, module) in enumerate(
        (("transformer", transformer), ("vae", vae), ("duration_embedder", duration_embedder))
    ):
        _wake_zero_layers(module, seed + 1 + i, float(stds[component]))
    pipeline = lib.StableAudio3Pipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        duration_embedder=duration_embedder.eval(),
        transformer=transformer.eval(),
        scheduler=lib.FlowMatchEulerDiscreteScheduler(**specs["scheduler"]),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return recipe


def store_metadata(name: str, files: Path, source: str, aliases: list[str]) -> dict[str, Any]:
    """The store metadata of an SA3 entry in diffusers' layout (what ``read_info`` reads back)."""
    from ...store.entries import content_hash
    from . import SA3_BACKEND
    from .engine import read_info

    info = read_info(files, name, {})
    return {
        "backend": SA3_BACKEND,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "latent_downsampling": info.latent_downsampling,
        "objective": info.objective,
        "distilled": info.objective == "rf_denoiser",
        "steps": info.default_steps,
        "cfg_scale": info.default_cfg_scale,
        "sampler": info.default_sampler,
        "negative_prompt": info.default_negative_prompt or "",
        "max_seconds": info.max_seconds,
        "source": source,
        "revision": "",
        "aliases": aliases,
        "content_sha256": content_hash(files),
    }


def import_demo_sa3(recipe_dir: Path, name: str | None = None) -> str:
    """Build the SA3 demo and put it into the model store (a no-op when it is already there)."""
    import tempfile

    from ...store.entries import save_to_store

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        recipe = build_demo_sa3(recipe_dir, files)
        name = name or recipe["name"]
        metadata = store_metadata(name, files, "demo-sa3", list(recipe["aliases"]))
        metadata.update({k: v for k, v in recipe["sampling"].items() if v is not None})
        metadata["max_seconds"] = float(recipe["max_seconds"])
        metadata["description"] = recipe["description"]
        return save_to_store(name, files, metadata)


import_demo = import_demo_sa3  # the family's demo, as the registry calls it
