"""Stable Audio 3: the hub's stable-audio-tools layout read as diffusers' layout (names only).

The hub's ``model_config.json`` + ``model.safetensors`` describe one ``ConditionedDiffusion
ModelWrapper`` of stable-audio-tools: ``model.model.*`` (the DiT), ``pretransform.model.*``
(the SAME autoencoder), ``conditioner.conditioners.{prompt,seconds_total}.*`` (T5Gemma and the
duration embedder). diffusers splits the same weights into ``transformer/``, ``vae/``,
``text_encoder/`` and ``duration_embedder/`` with other names. This module says, for a config
and the checkpoint's tensor names and shapes, which component and key each tensor becomes
(:func:`plan_keys`) and what each component's diffusers config is (:func:`diffusers_configs`).
SAME-S (the small models' autoencoder: chunked attention, kernel-3 decoder mapping) is
beyond ``AutoencoderSAME``: :func:`same_extras` says what ``same`` must add. The rest that
diffusers' classes cannot express is refused, naming the config key. No torch here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal, cast

from ...errors import ImportSourceError
from ..lora.layout import Place, use_sa3_plan

Component = Literal["transformer", "vae", "text_encoder", "duration_embedder"]
Transform = Literal["copy", "qkv_reorder", "scale_running_std"]

DIT = "model.model."
VAE = "pretransform.model."
TEXT = "conditioner.conditioners.prompt.model."
PADDING = "conditioner.conditioners.prompt.padding_embedding"
DURATION = "conditioner.conditioners.seconds_total.embedder.embedding.1."

_DIT_TOP = {
    "transformer.project_in.weight": "proj_in.weight",
    "transformer.project_out.weight": "proj_out.weight",
    "transformer.memory_tokens": "memory_tokens",
    "transformer.rotary_pos_emb.inv_freq": "rotary_pos_emb.inv_freq",
}
_DIT_SAME_NAME = re.compile(
    r"(to_timestep_embed\.[02]\.(weight|bias)|to_(cond|global)_embed\.[02]\.weight"
    r"|(pre|post)process_conv\.weight)"
)
# Inside one transformer block (DiT and SAME alike): reference name -> diffusers name.
_FF = (("ff.ff.0.proj.", "ff.proj_in."), ("ff.ff.2.", "ff.proj_out."))
_SAME_BLOCK = (("pre_norm.", "norm_attn."), ("ff_norm.", "norm_ff."), ("self_attn.", "attn."))


@dataclass(frozen=True)
class KeyPlan:
    """Where one hub tensor goes: ``None`` component means dropped (``reason`` says why)."""

    component: Component | None
    key: str
    transform: Transform = "copy"
    reason: str = ""


@dataclass(frozen=True)
class SA3Config:
    """The parts of ``model_config.json`` the conversion and the store entry need."""

    raw: dict[str, Any]
    objective: str
    sample_rate: int
    channels: int
    latent_dim: int
    downsampling: int
    dit_differential: bool
    same_differential: bool
    encoder_depth: int
    prompt_max_length: int
    padding_mode: str
    text_encoder_repo: str
    seconds_min: float
    seconds_max: float
    pretransform_scale: float
    # stable-audio-tools' DiT RMS norms (default eps 1e-5); diffusers' DiT hard-codes 1e-6.
    dit_norm_eps: float
    # Sampling-time settings of the reference that live in the config, not in the weights:
    # its schedule shift (None: log-SNR -6.2..2 whatever the length, as diffusers' pipeline).
    sampling_shift: dict[str, Any] | None = None
    use_effective_length_for_schedule: bool = False
    mask_padding_attention: bool = False
    # Where the prompt conditioner finds T5Gemma besides ``text_encoder_repo``: a subfolder of
    # that repo (the released repos: ``t5gemma-b-b-ul2``) and a local ``model_path``.
    text_encoder_subfolder: str = ""
    text_encoder_path: str = ""


def is_sa3_config(config: Mapping[str, Any]) -> bool:
    """True for a Stable Audio 3 ``model_config.json`` (T5Gemma prompt or SAME autoencoder)."""
    model = config.get("model", {})
    conditioners = model.get("conditioning", {}).get("configs", [])
    if any(c.get("type") == "t5gemma" for c in conditioners):
        return True
    encoder = model.get("pretransform", {}).get("config", {}).get("encoder", {})
    return encoder.get("type") in ("same", "taae_v2")


def _get(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ImportSourceError(f"model_config.json: {path} is missing")
        node = node[part]
    return node


def _refuse(path: str, value: Any, why: str) -> ImportSourceError:
    return ImportSourceError(f"model_config.json: {path}={value!r} is not supported: {why}")


def _require(tree: Mapping[str, Any], path: str, key: str, allowed: Any, default: Any) -> None:
    value = tree.get(key, default)
    if value != allowed:
        raise _refuse(f"{path}.{key}", value, f"diffusers' SA3 classes need {allowed!r}")


def read_config(config: Mapping[str, Any]) -> SA3Config:
    """Check an SA3 config against what diffusers' classes express; refuse the rest clearly."""
    if config.get("model_type") not in ("diffusion_cond", "diffusion_cond_inpaint"):
        raise _refuse("model_type", config.get("model_type"), "an SA3 model is diffusion_cond")
    diffusion = _get(config, "model.diffusion")
    if diffusion.get("type") != "dit":
        raise _refuse("model.diffusion.type", diffusion.get("type"), "SA3 is a DiT")
    objective = diffusion.get("diffusion_objective", "v")
    if objective not in ("rf_denoiser", "rectified_flow"):
        raise _refuse("model.diffusion.diffusion_objective", objective, "SA3 is rectified flow")
    for path, want in (
        ("cross_attention_cond_ids", ["prompt", "seconds_total"]),
        ("global_cond_ids", ["seconds_total"]),
    ):
        if diffusion.get(path, []) != want:
            raise _refuse(
                f"model.diffusion.{path}", diffusion.get(path), f"the pipeline uses {want}"
            )
    for path in ("input_concat_ids", "prepend_cond_ids"):
        if diffusion.get(path):
            raise _refuse(f"model.diffusion.{path}", diffusion[path], "not in the SA3 pipeline")
    dit = _get(config, "model.diffusion.config")
    where = "model.diffusion.config"
    for key, allowed, default in (
        ("transformer_type", "continuous_transformer", "continuous_transformer"),
        ("global_cond_type", "adaLN", "prepend"),
        ("timestep_cond_type", "global", "global"),
        ("timestep_features_type", "expo", "learned"),
        ("timestep_features_logsnr", False, False),
        ("project_cond_tokens", True, True),
        ("project_global_cond", True, True),
        ("input_concat_dim", 0, 0),
        ("prepend_cond_dim", 0, 0),
        ("norm_type", "rms_norm", "layer_norm"),
        ("layer_scale", False, False),
        ("conformer", False, False),
        ("sliding_window", None, None),
        ("cross_attn_rotary_pos_emb", False, False),
        ("use_sinusoidal_emb", False, False),
        ("use_abs_pos_emb", False, False),
    ):
        _require(dit, where, key, allowed, default)
    attn = dit.get("attn_kwargs", {})
    _require(attn, f"{where}.attn_kwargs", "qk_norm", "rms", "none")
    _require(attn, f"{where}.attn_kwargs", "feat_scale", False, False)
    dim_heads = int(dit["embed_dim"]) // int(dit["num_heads"])
    if dim_heads < 64:
        # The reference's DiT rotary width is max(dim_heads // 2, 32); diffusers' is dim_heads // 2.
        raise _refuse(f"{where}.num_heads", dit["num_heads"], "heads narrower than 64 channels")

    ae_block = _get(config, "model.pretransform")
    if ae_block.get("type") != "autoencoder":
        raise _refuse("model.pretransform.type", ae_block.get("type"), "SA3 uses SAME")
    ae = _get(config, "model.pretransform.config")
    encoder, _ = _same_halves(ae)
    patched = _get(ae, "pretransform.config") if "pretransform" in ae else None
    if patched is None or ae["pretransform"].get("type") != "patched":
        raise ImportSourceError(
            "model_config.json: the SAME autoencoder needs a patched pretransform"
        )
    for key, default in (("oversampling", 1), ("postfilter_channels", 0)):
        _require(patched, "model.pretransform.config.pretransform.config", key, default, default)
    if ae.get("decoder", {}).get("soft_clip", False):
        raise _refuse("model.pretransform.config.decoder.soft_clip", True, "not in AutoencoderSAME")
    bottleneck = ae.get("bottleneck", {})
    if bottleneck.get("type") != "softnorm":
        raise _refuse(
            "model.pretransform.config.bottleneck.type",
            bottleneck.get("type"),
            "AutoencoderSAME has the soft-norm bottleneck",
        )
    _require(
        bottleneck.get("config", {}),
        "model.pretransform.config.bottleneck.config",
        "noise_augment_dim",
        0,
        0,
    )

    prompt, seconds = _conditioners(config)
    padding_mode = prompt.get("padding_mode", "zero")
    if padding_mode not in ("learned", "zero"):
        raise _refuse("prompt.padding_mode", padding_mode, "the DiT replaces padding by a vector")
    if prompt.get("project_out", False) or int(_get(config, "model.conditioning.cond_dim")) != 768:
        raise ImportSourceError(
            "model_config.json: the T5Gemma prompt must feed the DiT directly "
            "(model.conditioning.cond_dim 768, no project_out)"
        )
    if seconds.get("fourier_features_type", "learned") != "expo":
        raise _refuse(
            "seconds_total.fourier_features_type",
            seconds.get("fourier_features_type", "learned"),
            "the embedder is expo",
        )
    strides = [int(s) for s in encoder["strides"]]
    return SA3Config(
        raw=dict(config),
        objective=objective,
        sample_rate=int(_get(config, "sample_rate")),
        channels=int(ae.get("io_channels", 2)),
        latent_dim=int(ae.get("latent_dim", encoder.get("latent_dim", 32))),
        downsampling=int(patched["patch_size"]) * math.prod(strides),
        dit_differential=bool(attn.get("differential", False)),
        same_differential=bool(encoder.get("differential", True)),
        encoder_depth=len(encoder["c_mults"]),
        prompt_max_length=int(prompt.get("max_length", 128)),
        padding_mode=padding_mode,
        text_encoder_repo=str(
            prompt.get("repo_id") or prompt.get("model_name") or "google/t5gemma-b-b-ul2"
        ),
        seconds_min=float(seconds.get("min_val", 0.0)),
        seconds_max=float(seconds.get("max_val", 1.0)),
        pretransform_scale=float(ae_block.get("scale", 1.0)),
        dit_norm_eps=float(dit.get("norm_kwargs", {}).get("eps", 1e-5)),
        sampling_shift=diffusion.get("sampling_distribution_shift_options"),
        use_effective_length_for_schedule=bool(
            diffusion.get("use_effective_length_for_schedule", False)
        ),
        mask_padding_attention=bool(diffusion.get("mask_padding_attention", False)),
        text_encoder_subfolder=str(prompt.get("subfolder") or ""),
        text_encoder_path=str(prompt.get("model_path") or ""),
    )


def _conditioners(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    by_id = {c.get("id"): c for c in _get(config, "model.conditioning.configs")}
    prompt, seconds = by_id.get("prompt"), by_id.get("seconds_total")
    if prompt is None or prompt.get("type") != "t5gemma":
        raise ImportSourceError("model_config.json: the 'prompt' conditioner must be t5gemma")
    if seconds is None or seconds.get("type") != "number":
        raise ImportSourceError("model_config.json: the 'seconds_total' conditioner must be number")
    return dict(prompt.get("config", {})), dict(seconds.get("config", {}))


def _same_halves(ae: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    halves = []
    for half in ("encoder", "decoder"):
        block = _get(ae, half)
        path = f"model.pretransform.config.{half}"
        if block.get("type") not in ("same", "taae_v2"):
            raise _refuse(f"{path}.type", block.get("type"), "SA3 uses SAME")
        cfg = dict(block.get("config", {}))
        window = cfg.get("sliding_window")
        if window is not None and (len(window) != 2 or window[0] != window[1]):
            raise _refuse(f"{path}.config.sliding_window", window, "the band must be symmetric")
        if window is None and int(cfg.get("chunk_size", 128)) % int(cfg["strides"][0]) != 0:
            raise _refuse(
                f"{path}.config.chunk_size",
                cfg.get("chunk_size"),
                "chunks must hold whole latents (a multiple of the stride)",
            )
        for key, allowed, default in (
            ("dyt", True, True),
            ("layer_scale", False, False),
            ("conformer", False, False),
            ("feat_scale", False, False),
            ("cross_attn", False, False),
            ("mapping_bias", True, True),
        ):
            _require(cfg, f"{path}.config", key, allowed, default)
        if (
            half == "decoder"
            and not cfg.get("variable_stride", False)
            and any(int(s) > 1 for s in cfg["strides"])
        ):
            raise _refuse(f"{path}.config.variable_stride", False, "one shared new token needed")
        halves.append(cfg)
    encoder, decoder = halves
    for key in (
        "channels",
        "c_mults",
        "strides",
        "transformer_depths",
        "dim_heads",
        "differential",
        "sliding_window",
        "ff_mult",
    ):
        if encoder.get(key) != decoder.get(key):
            raise ImportSourceError(
                f"model_config.json: SAME encoder and decoder differ in {key} "
                f"({encoder.get(key)!r} vs {decoder.get(key)!r}); AutoencoderSAME shares it"
            )
    return encoder, decoder


def diffusers_configs(
    sa3: SA3Config, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, dict[str, Any]]:
    """Constructor arguments of each diffusers component, from the config and tensor shapes."""
    dit = _get(sa3.raw, "model.diffusion.config")
    embed = int(dit["embed_dim"])
    ff_in = _shape(shapes, DIT + "transformer.layers.0.ff.ff.0.proj.weight")
    ae = _get(sa3.raw, "model.pretransform.config")
    encoder, decoder = _same_halves(ae)
    n_levels = len(encoder["strides"])
    duration = _shape(shapes, DURATION + "weight")
    return {
        "transformer": {
            "io_channels": int(_get(sa3.raw, "model.io_channels")),
            "patch_size": int(dit.get("patch_size", 1)),
            "embed_dim": embed,
            "depth": int(dit["depth"]),
            "num_heads": int(dit["num_heads"]),
            "cond_token_dim": int(dit["cond_token_dim"]),
            "global_cond_dim": int(dit["global_cond_dim"]),
            "local_add_cond_dim": int(dit.get("local_add_cond_dim") or 257),
            "timestep_features_dim": int(dit.get("timestep_features_dim", 256)),
            "ff_mult": ff_in[0] // 2 / embed,
            "num_memory_tokens": int(dit.get("num_memory_tokens", 0)),
            "use_differential_attention": sa3.dit_differential,
        },
        "vae": {
            "audio_channels": sa3.channels,
            "patch_size": int(_get(ae, "pretransform.config.patch_size")),
            "encoder_channels": int(encoder["channels"]),
            "encoder_c_mults": [int(c) for c in encoder["c_mults"]],
            "encoder_strides": [int(s) for s in encoder["strides"]],
            "encoder_transformer_depths": [int(d) for d in encoder["transformer_depths"]],
            "latent_dim": sa3.latent_dim,
            "use_differential_attention": sa3.same_differential,
            "dim_heads": int(encoder.get("dim_heads", 128)),
            "ff_mult": int(encoder.get("ff_mult", 3)),
            "sliding_window": int((encoder.get("sliding_window") or [1])[0]),
            "encoder_sinusoidal_blocks": list(encoder.get("sinusoidal_blocks", [0] * n_levels)),
            "decoder_sinusoidal_blocks": list(decoder.get("sinusoidal_blocks", [0] * n_levels)),
            "sampling_rate": sa3.sample_rate,
        },
        "duration_embedder": {
            "output_dim": duration[0],
            "fourier_dim": duration[1],
            "min_val": sa3.seconds_min,
            "max_val": sa3.seconds_max,
            "min_freq": 0.5,
            "max_freq": 10000.0,
        },
    }


def same_extras(sa3: SA3Config) -> dict[str, Any]:
    """What diffusers' AutoencoderSAME cannot hold (SAME-S): ``same`` runs it. {} for SAME-L."""
    encoder, decoder = _same_halves(_get(sa3.raw, "model.pretransform.config"))
    extras: dict[str, Any] = {}
    if encoder.get("sliding_window") is None:
        extras["attention"] = "chunked"
        extras["chunk_size"] = int(encoder.get("chunk_size", 128))
        extras["chunk_midpoint_shift"] = bool(encoder.get("chunk_midpoint_shift", False))
    for half, cfg in (("encoder", encoder), ("decoder", decoder)):
        if cfg.get("conv_mapping", False):
            extras[f"{half}_mapping_kernel"] = 3
    # What the reference's generate() reads from the autoencoder config besides the weights:
    # the decoder's new-token noise (applied at inference too) and the latent-length alignment
    # (``chunk_size // strides[0]`` latent frames, chunk_size 32 when unset).
    mask_noise = float(decoder.get("mask_noise", 0.0))
    if mask_noise:
        extras["decoder_mask_noise"] = mask_noise
    strides = encoder.get("strides") or [1]
    extras["latent_align"] = max(1, int(encoder.get("chunk_size", 32)) // int(strides[0]))
    return extras


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ImportSourceError(f"model.safetensors: tensor {key} is missing")
    return tuple(shapes[key])


def plan_keys(sa3: SA3Config, names: list[str]) -> dict[str, KeyPlan]:
    """For every checkpoint tensor: its component and diffusers key (or why it is dropped)."""
    plans: dict[str, KeyPlan] = {}
    unknown: list[str] = []
    for name in names:
        plan = _plan_one(sa3, name)
        if plan is None:
            unknown.append(name)
        else:
            plans[name] = plan
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise ImportSourceError(
            f"model.safetensors: {len(unknown)} tensors have no place in diffusers' SA3 "
            f"components (for example {shown})"
        )
    return plans


def _plan_one(sa3: SA3Config, name: str) -> KeyPlan | None:
    if name.startswith(TEXT):
        return KeyPlan("text_encoder", name[len(TEXT) :])
    if name == PADDING:
        return KeyPlan("transformer", "prompt_padding_embedding")
    if name.startswith(DURATION):
        return KeyPlan("duration_embedder", "linear." + name[len(DURATION) :])
    if name.startswith(DIT):
        return _plan_dit(sa3, name[len(DIT) :])
    if name.startswith(VAE):
        return _plan_vae(sa3, name[len(VAE) :])
    return None


def _rename(local: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if local.startswith(old):
            return new + local[len(old) :]
    return local


def _plan_dit(sa3: SA3Config, local: str) -> KeyPlan | None:
    if local in _DIT_TOP:
        return KeyPlan("transformer", _DIT_TOP[local])
    if _DIT_SAME_NAME.fullmatch(local):
        return KeyPlan("transformer", local)
    if local.startswith("transformer.global_cond_embedder."):
        return KeyPlan("transformer", local[len("transformer.") :])
    match = re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)", local)
    if match is None:
        return None
    index, inner = match.groups()
    inner = _rename(inner, _FF)
    transform: Transform = (
        "qkv_reorder" if sa3.dit_differential and inner == "self_attn.to_qkv.weight" else "copy"
    )
    return KeyPlan("transformer", f"transformer_blocks.{index}.{inner}", transform)


def _plan_vae(sa3: SA3Config, local: str) -> KeyPlan | None:
    bottleneck = {
        "bottleneck.scaling_factor": KeyPlan("vae", "bottleneck.scale"),
        "bottleneck.bias": KeyPlan("vae", "bottleneck.bias"),
        "bottleneck.running_std": KeyPlan("vae", "bottleneck.running_std", "scale_running_std"),
        "bottleneck.noise_scaling_factor": KeyPlan(
            None, "", reason="noise augmentation is off (noise_augment_dim 0)"
        ),
    }
    if local in bottleneck:
        return bottleneck[local]
    match = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)", local)
    if match is None:
        return None
    half, index_text, inner = match.groups()
    index, depth = int(index_text), sa3.encoder_depth
    # encoder.layers: [TRB x depth, Transpose, Linear, Transpose];
    # decoder.layers: [Transpose, Linear, Transpose, TRB x depth].
    proj_index, first_block = (depth + 1, 0) if half == "encoder" else (1, 3)
    if index == proj_index and inner in ("weight", "bias"):
        return KeyPlan("vae", f"{half}.proj.{inner}")
    block = index - first_block
    if not 0 <= block < depth:
        return None
    prefix = f"{half}.blocks.{block}."
    if inner == "new_tokens" or inner.startswith("mapping."):
        return KeyPlan("vae", prefix + inner)
    layer = re.fullmatch(r"transformers\.(\d+)\.(.+)", inner)
    if layer is None:
        return None
    j, rest = layer.groups()
    if rest == "rope.inv_freq":
        return KeyPlan(None, "", reason="diffusers recomputes the SAME rotary frequencies")
    rest = _rename(_rename(rest, _FF), _SAME_BLOCK)
    transform: Transform = (
        "qkv_reorder" if sa3.same_differential and rest == "attn.to_qkv.weight" else "copy"
    )
    return KeyPlan("vae", f"{prefix}transformers.{j}.{rest}", transform)


# The components a LoRA may adapt, and their weight files in a store entry.
LORA_FILES = {
    "transformer": "transformer/diffusion_pytorch_model.safetensors",
    "duration_embedder": "duration_embedder/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
}


def lora_place(hub_name: str, differential: bool) -> Place | None:
    """Where a LoRA's reference weight ``hub_name`` is in our components (None: not there)."""
    # Only the DiT's differential flag matters to the DiT / conditioner weights' plans.
    stand_in = cast(SA3Config, SimpleNamespace(dit_differential=differential))
    plan = _plan_one(stand_in, hub_name)
    if plan is None or plan.component not in LORA_FILES:
        return None
    return Place(plan.component, plan.key, plan.transform)


use_sa3_plan(lora_place)
