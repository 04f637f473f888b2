"""Build tiny SA3-shaped models with the REFERENCE code and record their outputs.

Runs in the separate Python 3.10 environment that has ``stable-audio-tools==0.0.20`` (the
release that loads Stable Audio 3): ``make parity`` creates it. Writes, for each variant
(``medium``, ``small``), into OUT_DIR/<variant>/:

- ``hub/``: the model in the hub's stable-audio-tools layout, as our importer expects it
  (``model_config.json``, ``model.safetensors`` with the T5Gemma weights inside under
  ``conditioner.conditioners.prompt.model.*``, ``text_encoder/`` with the T5Gemma config and
  a locally built Gemma-style tokenizer);
- ``reference.safetensors``: fixed inputs and the reference outputs (text conditioning, duration
  embedding, one DiT forward with and without the inpainting input, SAME decode and encode);
- ``reference.json``: the prompts, durations and token ids.

Every weight is random (seeded) and non-zero, so that every branch of every block matters.
Shapes are tiny, the architecture SA3's: ``medium`` has differential attention in the DiT and
in SAME, SAME with sliding-window attention (SAME-L); ``small`` a plain-attention DiT and SAME
with chunked, midpoint-shifted attention and a kernel-3 decoder mapping (SAME-S). Both have
memory tokens, AdaLN duration conditioning, learned prompt padding, inpainting projections.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

SEED = 1234
COND_DIM = 768  # T5GemmaConditioner fixes the text width of "google/t5gemma-b-b-ul2" at 768
PROMPTS = ["A hammer hitting a wooden surface", "rain on a tin roof, distant thunder"]
SECONDS = [3.0, 7.5]
LATENT_FRAMES = 10
AUDIO_SAMPLES = 32 * 12
VOCABULARY = (
    "a the on of and with in hammer hitting wooden surface rain tin roof distant thunder "
    "dog barking piano melody soft strings drums loud quiet bright dark wind water birds"
)


VARIANTS = ("medium", "small")


def model_config(text_encoder_dir: str | None, variant: str = "medium") -> dict[str, Any]:
    """SA3's structure at tiny size (keys as stable-audio-tools 0.0.20 reads them).

    ``medium``: differential DiT; SAME-L-like autoencoder (sliding-window attention).
    ``small``: plain DiT; SAME-S-like autoencoder (attention in chunks of two latents with a
    midpoint shift, kernel-3 decoder mapping).
    """
    same: dict[str, Any] = {
        "channels": 16,
        "c_mults": [2],
        "strides": [4],
        "latent_dim": 16,
        "transformer_depths": [2],
        "sliding_window": [1, 1],
        "differential": True,
        "dyt": True,
        "dim_heads": 16,
        "variable_stride": True,
    }
    decoder_extra: dict[str, Any] = {}
    if variant == "small":
        del same["sliding_window"]
        same.update(chunk_size=8, chunk_midpoint_shift=True)
        decoder_extra["conv_mapping"] = True
    prompt: dict[str, Any] = {"max_length": 16, "padding_mode": "learned"}
    if text_encoder_dir is not None:
        prompt["model_path"] = text_encoder_dir
    return {
        "model_type": "diffusion_cond",
        "sample_rate": 44100,
        "sample_size": 32 * 64,
        "audio_channels": 2,
        "model": {
            "io_channels": 16,
            "pretransform": {
                "type": "autoencoder",
                "iterate_batch": False,
                "config": {
                    "encoder": {"type": "same", "config": {"in_channels": 16, **same}},
                    "decoder": {
                        "type": "same",
                        "config": {
                            "out_channels": 16,
                            "sinusoidal_blocks": [1],
                            **same,
                            **decoder_extra,
                        },
                    },
                    "bottleneck": {"type": "softnorm", "config": {"dim": 16, "auto_scale": True}},
                    "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": 8}},
                    "latent_dim": 16,
                    "downsampling_ratio": 32,
                    "io_channels": 2,
                },
            },
            "conditioning": {
                "configs": [
                    {"id": "prompt", "type": "t5gemma", "config": prompt},
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 20, "fourier_features_type": "expo"},
                    },
                ],
                "cond_dim": COND_DIM,
            },
            "diffusion": {
                "type": "dit",
                "diffusion_objective": "rf_denoiser",
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "config": {
                    "io_channels": 16,
                    "embed_dim": 128,
                    "depth": 2,
                    "num_heads": 2,
                    "cond_token_dim": COND_DIM,
                    "global_cond_dim": COND_DIM,
                    "project_cond_tokens": True,
                    "transformer_type": "continuous_transformer",
                    "global_cond_type": "adaLN",
                    "timestep_features_type": "expo",
                    "timestep_features_dim": 64,
                    "num_memory_tokens": 4,
                    "local_add_cond_dim": 17,
                    "norm_type": "rms_norm",
                    "norm_kwargs": {"force_fp32": True},
                    "attn_kwargs": {"qk_norm": "rms", "differential": variant == "medium"},
                },
            },
        },
    }


def build_tokenizer(target: Path) -> Any:
    """A Gemma-style BPE tokenizer trained on a few words: <pad>=0, <eos>=1, <bos>=2, <unk>=3."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import GemmaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False
    )
    tok.train_from_iterator([VOCABULARY] * 4 + PROMPTS, trainer=trainer)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)]
    )
    fast = GemmaTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        model_max_length=16,
        padding_side="right",
    )
    fast.save_pretrained(str(target))
    return fast


def build_text_encoder(target: Path, vocab_size: int) -> None:
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    module = T5GemmaModuleConfig(
        vocab_size=vocab_size,
        hidden_size=COND_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=64,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
    )
    config = T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict())
    torch.manual_seed(SEED + 1)
    encoder = T5GemmaEncoderModel(
        T5GemmaConfig(**{**config.to_dict(), "is_encoder_decoder": False})
    )
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(0.0, 0.5 if p.ndim == 2 and p.shape[0] == vocab_size else 0.05)
    encoder.save_pretrained(str(target))
    # The hub's T5Gemma config is the encoder-decoder one; the importer reads it like that.
    config.save_pretrained(str(target))


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-zero random weights everywhere (the library zero-initialises many output layers)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(p.shape, generator=gen)
            if leaf in ("gamma", "scaling_factor", "weight_g") or leaf == "alpha":
                p.copy_(1.0 + 0.1 * noise)
            elif leaf == "running_std":
                p.fill_(1.7)
            elif p.ndim >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(noise / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * noise)


def main(out_dir: Path) -> None:
    for variant in VARIANTS:
        build(out_dir / variant, variant)


def build(out_dir: Path, variant: str) -> None:
    from safetensors.torch import save_file
    from stable_audio_tools.models.factory import create_model_from_config

    hub = out_dir / "hub"
    encoder_dir = hub / "text_encoder"
    encoder_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(encoder_dir)
    build_text_encoder(encoder_dir, len(tokenizer))

    torch.manual_seed(SEED)
    model = create_model_from_config(model_config(str(encoder_dir), variant)).eval()
    randomize(model, SEED)

    prompt_cond = model.conditioner.conditioners["prompt"]
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    for key, value in prompt_cond.model.state_dict().items():
        state[f"conditioner.conditioners.prompt.model.{key}"] = value.detach().contiguous()
    save_file(state, str(hub / "model.safetensors"))
    # The encoder weights now live in the checkpoint, as on the hub: the separate copy goes.
    (encoder_dir / "model.safetensors").unlink()
    # The hub's config names the T5Gemma repo, not a local path.
    (hub / "model_config.json").write_text(json.dumps(model_config(None, variant), indent=2))

    gen = torch.Generator().manual_seed(SEED + 2)
    x = torch.randn(2, 16, LATENT_FRAMES, generator=gen)
    t = torch.tensor([0.3, 0.8])
    local = torch.randn(2, 17, LATENT_FRAMES, generator=gen)
    latents = torch.randn(1, 16, 12, generator=gen)
    audio = torch.randn(1, 2, AUDIO_SAMPLES, generator=gen) * 0.3

    with torch.no_grad():
        meta = [{"prompt": p, "seconds_total": s} for p, s in zip(PROMPTS, SECONDS, strict=True)]
        cond = model.conditioner(meta, "cpu")
        inputs = model.get_conditioning_inputs(copy.copy(cond))
        dit = model.model
        velocity = dit(
            x,
            t,
            cross_attn_cond=inputs["cross_attn_cond"],
            global_cond=inputs["global_cond"],
            cfg_scale=1.0,
        )
        velocity_local = dit(
            x,
            t,
            cross_attn_cond=inputs["cross_attn_cond"],
            global_cond=inputs["global_cond"],
            local_add_cond=local,
            cfg_scale=1.0,
        )
        decoded = model.pretransform.decode(latents)
        encoded = model.pretransform.encode(audio)

    # The ids the reference conditioner itself used (its own tokenizer load, as on the hub).
    ids = prompt_cond.tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True)
    tensors = {
        "prompt_embeds": cond["prompt"][0],
        "prompt_mask": cond["prompt"][1].to(torch.int64),
        "seconds_embeds": cond["seconds_total"][0],
        "cross_attn_cond": inputs["cross_attn_cond"],
        "global_cond": inputs["global_cond"],
        "dit_x": x,
        "dit_t": t,
        "dit_local": local,
        "dit_out": velocity,
        "dit_out_local": velocity_local,
        "vae_latents": latents,
        "vae_decoded": decoded,
        "vae_audio": audio,
        "vae_encoded": encoded,
    }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "reference.safetensors")
    )
    record = {
        "prompts": PROMPTS,
        "seconds": SECONDS,
        "input_ids": ids["input_ids"],
        "attention_mask": ids["attention_mask"],
        "torch": torch.__version__,
        "stable_audio_tools": __import__("importlib.metadata").metadata.version(
            "stable-audio-tools"
        ),
    }
    (out_dir / "reference.json").write_text(json.dumps(record, indent=2))
    print(f"reference {variant} model and outputs in {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
