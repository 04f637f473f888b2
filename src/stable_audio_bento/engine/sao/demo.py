"""Build the demo model offline from its recipe: same family as Stable Audio Open, tiny, seeded.

The recipe (``models/demo/``) holds the stable-audio-tools ``model_config.json`` and a
``recipe.json`` with the seed, the text encoder's size and its vocabulary. Two builds give
byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...store.hub_cache import link_text_encoder, prepare_offline_hub


def _build_tokenizer(words: list[str], out_dir: Path) -> int:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate([*specials, *sorted(set(words))])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    wrapped.save_pretrained(out_dir)
    return len(vocab)


def _build_text_encoder(recipe: dict[str, Any], out_dir: Path) -> None:
    import torch
    from transformers import T5Config, T5EncoderModel

    spec = recipe["text_encoder"]
    vocab_size = _build_tokenizer(recipe["vocabulary"].split(), out_dir)
    config = T5Config(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        d_model=spec["d_model"],
        d_kv=spec["d_kv"],
        d_ff=spec["d_ff"],
        num_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        relative_attention_num_buckets=spec["relative_attention_num_buckets"],
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(recipe["seed"])
        encoder = T5EncoderModel(config)
    encoder.save_pretrained(out_dir, safe_serialization=True)


def build_demo(recipe_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Write ``model_config.json``, ``model.safetensors`` and ``text_encoder/`` into ``out_dir``.

    Returns the recipe (name, aliases, sampling defaults) for the store metadata.
    """
    import torch
    from safetensors.torch import save_file

    cache = prepare_offline_hub()
    from stable_audio_tools.models.factory import create_model_from_config

    recipe: dict[str, Any] = json.loads((recipe_dir / "recipe.json").read_text())
    config = json.loads((recipe_dir / "model_config.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model_config.json").write_text(json.dumps(config, indent=2) + "\n")
    encoder_dir = out_dir / "text_encoder"
    _build_text_encoder(recipe, encoder_dir)
    link_text_encoder(cache, recipe["text_encoder"]["hub_name"], encoder_dir)

    with torch.random.fork_rng():
        torch.manual_seed(recipe["seed"])
        model = create_model_from_config(config)
        # A fresh DiT zero-initialises its output projections and so ignores its conditioning;
        # small random values there make prompt, negative prompt and cfg change the output.
        generator = torch.Generator().manual_seed(recipe["seed"] + 1)
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim >= 2 and not param.any():
                    param.copy_(torch.randn(param.shape, generator=generator) * recipe["init_std"])
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return recipe


def import_demo(recipe_dir: Path, name: str | None = None) -> str:
    """Build the demo and put it into the model store (a no-op when it is already there)."""
    import tempfile

    from ...store.entries import save_to_store
    from .importer import build_metadata

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        recipe = build_demo(recipe_dir, files)
        name = name or recipe["name"]
        metadata = build_metadata(name, files, "demo", None, list(recipe["aliases"]))
        metadata.update(recipe["sampling"])
        metadata["description"] = recipe["description"]
        return save_to_store(name, files, metadata)
