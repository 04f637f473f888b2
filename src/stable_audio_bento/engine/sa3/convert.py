"""Convert a Stable Audio 3 model from the hub's stable-audio-tools layout to diffusers' layout.

Source (a directory): ``model_config.json``, ``model.safetensors`` (DiT, SAME, duration
embedder, conditioner projections) and T5Gemma in transformers' layout (``config.json``, Gemma
tokenizer files, ``model.safetensors``) in the first of (``text_encoder_dir``): the prompt
conditioner's ``model_path``, its ``subfolder`` (the released repos: ``t5gemma-b-b-ul2/``, the
whole encoder-decoder, of which only the encoder is kept), ``text_encoder/``. Older exports
hold the encoder inside the checkpoint (``conditioner.conditioners.prompt.model.*``); then the
folder's weights are not read.
Target: what ``StableAudio3Pipeline.save_pretrained`` writes (``model_index.json``,
``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``duration_embedder/``,
``scheduler/``), loadable offline with ``from_pretrained``.

Each component is built on the meta device and filled strictly (every diffusers tensor comes
from the checkpoint or is derived from the config), so a wrong mapping fails here, not later.
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ImportSourceError
from .layout import (
    TEXT,
    Component,
    KeyPlan,
    SA3Config,
    diffusers_configs,
    plan_keys,
    read_config,
    same_extras,
)
from .same import EXTRA, build_vae

if TYPE_CHECKING:
    import torch

PIPELINE_CLASS = "StableAudio3Pipeline"
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "duration_embedder", "scheduler")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
)


@dataclass(frozen=True)
class SA3Facts:
    """What a store entry's metadata needs to know about a converted (or copied) SA3 model."""

    sample_rate: int
    channels: int
    objective: str  # "rf_denoiser" (distilled) or "rectified_flow" (base)
    seconds_max: float
    latent_downsampling: int
    prompt_max_length: int
    # The eps of the DiT blocks' RMS norms in the reference (diffusers' DiT uses 1e-6).
    dit_norm_eps: float = 1e-5
    text_encoder_repo: str = ""
    # The reference's sampling settings from model_config.json (see SA3Config).
    sampling: dict[str, Any] = field(default_factory=dict)
    plans: dict[str, KeyPlan] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def distilled(self) -> bool:
        return self.objective == "rf_denoiser"


def read_hub_config(source: Path) -> SA3Config:
    path = source / "model_config.json"
    if not path.is_file():
        raise ImportSourceError(f"{source}: model_config.json is missing")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ImportSourceError(f"{path}: not readable JSON ({e})") from e
    return read_config(config)


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, without reading the tensors."""
    from safetensors import safe_open

    if not path.is_file():
        raise ImportSourceError(f"{path.parent}: {path.name} is missing")
    try:
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types for a broken header
        raise ImportSourceError(f"{path}: not a readable safetensors file ({e})") from e


def convert_hub_dir(source: Path, target: Path) -> SA3Facts:
    """Write ``target`` (diffusers layout) from the hub-layout directory ``source``."""
    sa3 = read_hub_config(source)
    weights = source / "model.safetensors"
    shapes = checkpoint_shapes(weights)
    plans = plan_keys(sa3, sorted(shapes))
    configs = diffusers_configs(sa3, shapes)
    states = _component_states(sa3, weights, plans, configs)
    encoder_dir = text_encoder_dir(source, sa3)
    if not states["text_encoder"]:
        states["text_encoder"] = _separate_text_encoder(encoder_dir)
    extras = same_extras(sa3)
    pipeline = _build_pipeline(sa3, encoder_dir, configs, states, extras)
    target.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(str(target), safe_serialization=True)
    if extras:  # what AutoencoderSAME's own config cannot say (sa3_same runs SAME-S)
        vae_config = target / "vae" / "config.json"
        written = json.loads(vae_config.read_text())
        vae_config.write_text(json.dumps({**written, EXTRA: extras}, indent=2, sort_keys=True))
    return SA3Facts(
        sample_rate=sa3.sample_rate,
        channels=sa3.channels,
        objective=sa3.objective,
        seconds_max=sa3.seconds_max,
        latent_downsampling=sa3.downsampling,
        prompt_max_length=sa3.prompt_max_length,
        dit_norm_eps=sa3.dit_norm_eps,
        text_encoder_repo=sa3.text_encoder_repo,
        sampling=_sampling_settings(sa3),
        plans=plans,
        shapes={k: list(v) for k, v in shapes.items()},
    )


def _sampling_settings(sa3: SA3Config) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if sa3.sampling_shift is not None:
        settings["sampling_distribution_shift"] = dict(sa3.sampling_shift)
    if sa3.use_effective_length_for_schedule:
        settings["use_effective_length_for_schedule"] = True
    if sa3.mask_padding_attention:
        settings["mask_padding_attention"] = True
    return settings


def checkpoint_has_text_encoder(weights: Path) -> bool:
    return any(k.startswith(TEXT) for k in checkpoint_shapes(weights))


def _component_states(
    sa3: SA3Config, weights: Path, plans: dict[str, KeyPlan], configs: dict[str, dict[str, Any]]
) -> dict[Component, dict[str, torch.Tensor]]:
    import torch
    from safetensors import safe_open

    states: dict[Component, dict[str, torch.Tensor]] = {
        "transformer": {},
        "vae": {},
        "text_encoder": {},
        "duration_embedder": {},
    }
    with safe_open(str(weights), "pt") as f:
        for name, plan in plans.items():
            if plan.component is None:
                continue
            tensor = f.get_tensor(name)
            if plan.transform == "qkv_reorder":
                # Fused self-attention rows: reference [q | k | v | q2 | k2],
                # diffusers [q1 | q2 | k1 | k2 | v].
                q, k, v, q2, k2 = tensor.chunk(5, dim=0)
                tensor = torch.cat([q, q2, k, k2, v], dim=0)
            elif plan.transform == "scale_running_std":
                # AutoencoderPretransform divides latents by ``scale`` after the bottleneck.
                tensor = tensor * sa3.pretransform_scale
            states[plan.component][plan.key] = tensor.contiguous()
    vae, dit = states["vae"], states["transformer"]
    if "bottleneck.running_std" not in vae:  # no auto_scale: the bottleneck does not divide
        vae["bottleneck.running_std"] = torch.tensor([sa3.pretransform_scale])
    if "prompt_padding_embedding" not in dit:  # padding_mode "zero": padded positions are 0
        width = configs["transformer"]["cond_token_dim"]
        dit["prompt_padding_embedding"] = torch.zeros(width)
    _fill_missing_inpainting(dit, configs["transformer"])
    return states


def _fill_missing_inpainting(dit: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """A DiT trained without inpainting has no ``to_local_embed``: zeros never change output."""
    import torch

    embed, local = config["embed_dim"], config["local_add_cond_dim"]
    for i in range(config["depth"]):
        prefix = f"transformer_blocks.{i}.to_local_embed."
        if prefix + "0.weight" in dit:
            continue
        dit[prefix + "0.weight"] = torch.zeros(embed, local)
        dit[prefix + "0.bias"] = torch.zeros(embed)
        dit[prefix + "2.weight"] = torch.zeros(embed, embed)
        dit[prefix + "2.bias"] = torch.zeros(embed)


def text_encoder_dir(source: Path, sa3: SA3Config) -> Path:
    """The folder with T5Gemma's config, tokenizer (and weights, unless the checkpoint holds
    them): the conditioner's ``model_path`` (absolute or relative to ``source``), its
    ``subfolder`` of ``source``, or ``source/text_encoder``."""
    candidates = []
    if sa3.text_encoder_path:
        candidates.append(source / Path(sa3.text_encoder_path).expanduser())
    if sa3.text_encoder_subfolder:
        candidates.append(source / sa3.text_encoder_subfolder)
    candidates.append(source / "text_encoder")
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    names = ", ".join(str(c) for c in candidates)
    raise ImportSourceError(
        f"{source}: no T5Gemma folder with a config.json (looked in {names}); the released "
        "repos keep it in the subfolder model_config.json names (t5gemma-b-b-ul2/)"
    )


def _separate_text_encoder(folder: Path) -> dict[str, torch.Tensor]:
    """The T5Gemma ENCODER's weights from a transformers folder: of an encoder-decoder save
    (``model.encoder.*``, ``model.decoder.*``, ``lm_head.*``) only the encoder is read."""
    from safetensors import safe_open

    path = folder / "model.safetensors"
    if not path.is_file():
        raise ImportSourceError(
            f"{folder}: model.safetensors is missing, and the checkpoint holds no T5Gemma "
            "weights (conditioner.conditioners.prompt.model.*)"
        )
    try:
        with safe_open(str(path), "pt") as f:
            names = [k for k in f.keys() if k.removeprefix("model.").startswith("encoder.")]  # noqa: SIM118
            return {k.removeprefix("model."): f.get_tensor(k) for k in names}
    except Exception as e:  # safetensors raises its own error types for a broken file
        raise ImportSourceError(f"{path}: not a readable safetensors file ({e})") from e


def _strict_load(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(keys[:4])}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise ImportSourceError(f"{what}: the weights do not fit diffusers' layout ({details})")
    module.load_state_dict(state, strict=True, assign=True)


def _build_pipeline(
    sa3: SA3Config,
    encoder_dir: Path,
    configs: dict[str, dict[str, Any]],
    states: dict[Component, dict[str, torch.Tensor]],
    extras: dict[str, Any],
) -> Any:
    import torch

    diffusers = _diffusers()
    vae = build_vae(configs["vae"], extras, device="meta")
    with torch.device("meta"):
        transformer = diffusers.StableAudio3DiTModel(**configs["transformer"])
        duration = diffusers.StableAudio3DurationEmbedder(**configs["duration_embedder"])
    # The embedder's Fourier frequencies are a (persistent) buffer computed from its config.
    freqs = diffusers.StableAudio3DurationEmbedder(**configs["duration_embedder"]).freqs
    states["duration_embedder"]["freqs"] = freqs
    _strict_load(transformer, states["transformer"], "transformer")
    _strict_load(vae, states["vae"], "vae")
    _strict_load(duration, states["duration_embedder"], "duration_embedder")
    text_encoder, tokenizer = _text_encoder(sa3, encoder_dir, states["text_encoder"])
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1, shift=1.0, stochastic_sampling=sa3.objective == "rf_denoiser"
    )
    return diffusers.StableAudio3Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        duration_embedder=duration,
        transformer=transformer,
        scheduler=scheduler,
    )


def _text_encoder(sa3: SA3Config, folder: Path, state: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel

    if not any((folder / name).is_file() for name in TOKENIZER_FILES[:2]):
        raise ImportSourceError(f"{folder}: no Gemma tokenizer files")
    config = AutoConfig.from_pretrained(str(folder))
    config.is_encoder_decoder = False
    with torch.device("meta"):
        encoder = T5GemmaEncoderModel(config)
    _strict_load(encoder, state, "text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.model_max_length = sa3.prompt_max_length
    return encoder, tokenizer


# ------------------------------------------------------------- diffusers-layout directories
def diffusers_facts(directory: Path) -> SA3Facts:
    """Validate a directory already in diffusers' layout; return what the entry needs."""
    index = _read_json(directory / "model_index.json")
    if index.get("_class_name") != PIPELINE_CLASS:
        raise ImportSourceError(
            f"{directory}: model_index.json names {index.get('_class_name')!r}, "
            f"not {PIPELINE_CLASS}"
        )
    missing = [c for c in COMPONENTS if c not in index or not (directory / c).is_dir()]
    if missing:
        raise ImportSourceError(f"{directory}: missing components: {', '.join(missing)}")
    _check_weights(directory)
    vae = _read_json(directory / "vae" / "config.json")
    duration = _read_json(directory / "duration_embedder" / "config.json")
    scheduler = _read_json(directory / "scheduler" / "scheduler_config.json")
    tokenizer = _read_json(directory / "tokenizer" / "tokenizer_config.json")
    strides = vae.get("encoder_strides", [16])
    ratio = int(vae.get("patch_size", 256))
    for stride in strides:
        ratio *= int(stride)
    return SA3Facts(
        sample_rate=int(vae.get("sampling_rate", 44100)),
        channels=int(vae.get("audio_channels", 2)),
        objective="rf_denoiser" if scheduler.get("stochastic_sampling") else "rectified_flow",
        seconds_max=float(duration.get("max_val", 384.0)),
        latent_downsampling=ratio,
        prompt_max_length=min(int(tokenizer.get("model_max_length", 256)), 256),
    )


def _check_weights(directory: Path) -> None:
    """Each diffusers model's weights exist and fit its config (built on the meta device)."""
    import torch

    diffusers = _diffusers()
    classes: dict[str, Any] = {
        "transformer": diffusers.StableAudio3DiTModel,
        "vae": diffusers.AutoencoderSAME,
        "duration_embedder": diffusers.StableAudio3DurationEmbedder,
    }
    for name, cls in classes.items():
        folder = directory / name
        weights = folder / "diffusion_pytorch_model.safetensors"
        shapes = checkpoint_shapes(weights)
        try:
            config = cls.load_config(str(folder))
            extras = config.pop(EXTRA, None) if name == "vae" else None
            if extras:
                init = {k: v for k, v in config.items() if not k.startswith("_")}
                module = build_vae(init, extras, device="meta")
            else:
                with torch.device("meta"):
                    module = cls.from_config(config)
        except Exception as e:  # diffusers raises several error types for a bad config
            raise ImportSourceError(
                f"{folder}: config.json does not build {cls.__name__}: {e}"
            ) from e
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        if shapes != expected:
            bad = sorted(set(shapes) ^ set(expected)) or sorted(
                k for k in shapes if shapes[k] != expected[k]
            )
            raise ImportSourceError(
                f"{weights}: tensors do not match {cls.__name__}'s config ({', '.join(bad[:4])})"
            )
    encoder = directory / "text_encoder"
    if not (encoder / "config.json").is_file() or not any(encoder.glob("*.safetensors")):
        raise ImportSourceError(f"{encoder}: config.json or the safetensors weights are missing")


def _diffusers() -> Any:
    """diffusers, untyped: its SA3 classes have no annotations."""
    return importlib.import_module("diffusers")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ImportSourceError(f"{path.parent}: {path.name} is missing") from e
    except (OSError, ValueError) as e:
        raise ImportSourceError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(value, dict):
        raise ImportSourceError(f"{path}: expected a JSON object")
    return value


def copy_diffusers_dir(source: Path, target: Path) -> SA3Facts:
    facts = diffusers_facts(source)
    shutil.copytree(source, target, symlinks=False)
    return facts
