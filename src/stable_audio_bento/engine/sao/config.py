"""What a Stable Audio Open model can do, read from its stable-audio-tools ``model_config.json``."""

from __future__ import annotations

from typing import Any

from ...errors import ModelLoadError
from ..info import OBJECTIVE_DEFAULTS, ModelInfo
from ..request import AUDIO_TO_AUDIO, CONTINUATION, INPAINTING, TEXT_TO_AUDIO

# The v objective's default noise schedule (stable-audio-tools' samplers).
SIGMA_MIN, SIGMA_MAX = 0.3, 500.0
# The sampler settings a v-objective model takes from ``sampler_kwargs``: its noise schedule.
# brownian_noise (0 or 1): the SDE samplers' step noise from the reference's Brownian tree
# (the same take as stable-audio-tools for a seed, much slower) instead of independent draws.
V_SAMPLER_KWARGS = {"sigma_min": (1e-4, 1e4), "sigma_max": (1e-4, 1e4), "brownian_noise": (0, 1)}


def info_from_config(
    name: str, config: dict[str, Any], metadata: dict[str, Any] | None = None
) -> ModelInfo:
    """A stable-audio-tools ``diffusion_cond`` model (the Stable Audio Open family)."""
    if config.get("model_type") != "diffusion_cond":
        raise ModelLoadError(f"{name}: only diffusion_cond models are supported")
    meta = metadata or {}
    model = config["model"]
    objective = model.get("diffusion", {}).get("diffusion_objective", "v")
    defaults = OBJECTIVE_DEFAULTS.get(objective)
    if defaults is None:
        raise ModelLoadError(f"{name}: unsupported diffusion objective {objective!r}")
    pretransform = model.get("pretransform", {}).get("config", {})
    ids = tuple(c["id"] for c in model["conditioning"]["configs"])
    return ModelInfo(
        name=name,
        sample_rate=int(config["sample_rate"]),
        channels=int(config["audio_channels"]),
        sample_size=int(config["sample_size"]),
        latent_downsampling=int(pretransform.get("downsampling_ratio", 1)),
        objective=objective,
        default_steps=int(meta.get("steps", defaults["steps"])),
        default_cfg_scale=float(meta.get("cfg_scale", defaults["cfg_scale"])),
        default_sampler=str(meta.get("sampler", defaults["sampler"])),
        conditioning_ids=ids,
        # A model told the length (seconds_total) can be told a little more and cut.
        options=frozenset({"seconds_start", "negative_prompt"})
        | ({"duration_padding"} if "seconds_total" in ids else set()),
        sampler_kwargs=tuple(V_SAMPLER_KWARGS.items()) if objective == "v" else (),
        # Init audio and masked sampling work on any diffusion_cond model.
        modes=(TEXT_TO_AUDIO, AUDIO_TO_AUDIO, INPAINTING, CONTINUATION),
    )
