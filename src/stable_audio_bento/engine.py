"""The Stable Audio engine: load one store entry with stable-audio-tools, generate batches.

Nothing HTTP lives here. Each request in a batch has its own prompt, negative prompt,
start / length and seed; steps, cfg and sampler are shared by the batch. Every random draw of a
request (initial noise, SDE / ping-pong noise) comes from that request's own seed, so a request
gives the same audio alone or in any batch, whatever else runs in the process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audio import FloatAudio, peak_normalize
from .errors import GenerationError, InvalidRequestError, ModelLoadError
from .hub_cache import link_text_encoder, prepare_offline_hub

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

# Samplers whose randomness we can seed per request. Deterministic ones draw nothing after the
# initial noise; the SDE / ancestral ones get a per-item noise source.
V_SAMPLERS = (
    "dpmpp-3m-sde",
    "dpmpp-2m-sde",
    "dpmpp-2m",
    "k-heun",
    "k-lms",
    "k-dpm-2",
    "k-dpmpp-2s-ancestral",
)
RF_SAMPLERS = ("pingpong", "euler", "dpmpp")
RF_OBJECTIVES = ("rectified_flow", "rf_denoiser")

# Model card defaults by objective (stable-audio-open-1.0 and stable-audio-open-small).
OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "v": {"steps": 100, "cfg_scale": 7.0, "sampler": "dpmpp-3m-sde"},
    "rectified_flow": {"steps": 50, "cfg_scale": 7.0, "sampler": "euler"},
    "rf_denoiser": {"steps": 8, "cfg_scale": 1.0, "sampler": "pingpong"},
}
SIGMA_MIN, SIGMA_MAX = 0.3, 500.0
# Latent frames decoded beyond each end of a request's span (the Oobleck decoder's receptive
# field is about 10 frames each side).
DECODE_MARGIN = 32


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model can do, from its config and store metadata."""

    name: str
    sample_rate: int
    channels: int
    sample_size: int
    latent_downsampling: int
    objective: str
    default_steps: int
    default_cfg_scale: float
    default_sampler: str
    conditioning_ids: tuple[str, ...]

    @property
    def window_seconds(self) -> float:
        return self.sample_size / self.sample_rate

    @property
    def samplers(self) -> tuple[str, ...]:
        return RF_SAMPLERS if self.objective in RF_OBJECTIVES else V_SAMPLERS

    @classmethod
    def from_config(
        cls, name: str, config: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> ModelInfo:
        if config.get("model_type") != "diffusion_cond":
            raise ModelLoadError(f"{name}: only diffusion_cond models are supported")
        meta = metadata or {}
        model = config["model"]
        objective = model.get("diffusion", {}).get("diffusion_objective", "v")
        defaults = OBJECTIVE_DEFAULTS.get(objective)
        if defaults is None:
            raise ModelLoadError(f"{name}: unsupported diffusion objective {objective!r}")
        pretransform = model.get("pretransform", {}).get("config", {})
        return cls(
            name=name,
            sample_rate=int(config["sample_rate"]),
            channels=int(config["audio_channels"]),
            sample_size=int(config["sample_size"]),
            latent_downsampling=int(pretransform.get("downsampling_ratio", 1)),
            objective=objective,
            default_steps=int(meta.get("steps", defaults["steps"])),
            default_cfg_scale=float(meta.get("cfg_scale", defaults["cfg_scale"])),
            default_sampler=str(meta.get("sampler", defaults["sampler"])),
            conditioning_ids=tuple(c["id"] for c in model["conditioning"]["configs"]),
        )

    def sampling(
        self,
        steps: int | None = None,
        cfg_scale: float | None = None,
        sampler: str | None = None,
        max_steps: int = 1000,
        names: Mapping[str, str] | None = None,
    ) -> SamplingParams:
        """Fill the model's defaults and check ranges; ``names`` maps fields to API names."""
        names = names or {}
        steps = self.default_steps if steps is None else steps
        if not 1 <= steps <= max_steps:
            field = names.get("steps", "steps")
            raise InvalidRequestError(
                f"{field} must be between 1 and {max_steps}, got {steps}", field=field
            )
        cfg = self.default_cfg_scale if cfg_scale is None else float(cfg_scale)
        if not 0 <= cfg <= 100:
            field = names.get("cfg_scale", "cfg_scale")
            raise InvalidRequestError(
                f"{field} must be between 0 and 100, got {cfg:g}", field=field
            )
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers:
            raise InvalidRequestError(
                f"sampler must be one of {', '.join(self.samplers)} for {self.name}, "
                f"got {sampler!r}",
                field=names.get("sampler", "sampler"),
            )
        return SamplingParams(steps=steps, cfg_scale=cfg, sampler=sampler)

    def check_request(self, request: EngineRequest, names: Mapping[str, str] | None = None) -> None:
        """Raise ``InvalidRequestError`` for what this model's window cannot hold."""
        names = names or {}
        window = self.window_seconds
        length_field = names.get("seconds_total", "seconds_total")
        start_field = names.get("seconds_start", "seconds_start")
        if request.seconds_start < 0 or request.seconds_start >= window:
            raise InvalidRequestError(
                f"{start_field} must be at least 0 and less than {window:.2f} seconds "
                f"for {self.name}, got {request.seconds_start:g}",
                field=start_field,
            )
        if request.seconds_total * self.sample_rate < 1:
            raise InvalidRequestError(
                f"{length_field} must be greater than 0 seconds, got {request.seconds_total:g}",
                field=length_field,
            )
        end = request.seconds_start + request.seconds_total
        if end > window + 1e-6:
            raise InvalidRequestError(
                f"{length_field} must be at most {window - request.seconds_start:.2f} seconds "
                f"for {self.name} (its window is {window:.2f} s; start {request.seconds_start:g}"
                f" + length {request.seconds_total:g} = {end:g})",
                field=length_field,
            )


@dataclass(frozen=True)
class EngineRequest:
    """One item of a batch. ``seconds_total`` is the length of audio returned."""

    prompt: str
    seed: int
    seconds_total: float
    seconds_start: float = 0.0
    negative_prompt: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Settings shared by every item of one diffusion batch."""

    steps: int
    cfg_scale: float
    sampler: str


@dataclass
class EngineStats:
    batches: int = 0
    items: int = 0
    seconds: float = 0.0
    last_batch_sizes: list[int] = field(default_factory=list)


def pick_device(requested: str) -> str:
    """auto: cuda > mps > cpu."""
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("STABLE_AUDIO_DEVICE=cuda but no CUDA device is available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class StableAudioEngine:
    """One stable-audio-tools ``diffusion_cond`` model on one device."""

    _load_lock = threading.Lock()

    def __init__(self, model: Any, info: ModelInfo, device: str, dtype: Any) -> None:
        self.model = model
        self.info = info
        self.device = device
        self.dtype = dtype
        self.stats = EngineStats()
        self._run_lock = threading.Lock()

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        model_dir: Path,
        name: str,
        metadata: dict[str, Any] | None = None,
        device: str = "auto",
        half: bool = True,
    ) -> StableAudioEngine:
        """Load a store entry: ``model_config.json``, ``model.safetensors``, ``text_encoder/``."""
        cache = prepare_offline_hub()
        import torch
        from stable_audio_tools.models.factory import create_model_from_config
        from stable_audio_tools.models.utils import load_ckpt_state_dict

        config = json.loads((model_dir / "model_config.json").read_text())
        info = ModelInfo.from_config(name, config, metadata)
        weights = model_dir / "model.safetensors"
        if not weights.is_file():
            raise ModelLoadError(f"{name}: {weights} is missing")
        resolved = pick_device(device)
        dtype = torch.float16 if (half and resolved == "cuda") else torch.float32
        started = time.perf_counter()
        with cls._load_lock:
            for cond in config["model"]["conditioning"]["configs"]:
                if cond["type"] == "t5":
                    link_text_encoder(
                        cache, cond["config"]["t5_model_name"], model_dir / "text_encoder"
                    )
            try:
                model = create_model_from_config(config)
                model.load_state_dict(load_ckpt_state_dict(str(weights)), strict=True)
            except Exception as e:
                raise ModelLoadError(f"{name}: could not load the model: {e}") from e
        model = model.to(resolved).eval().requires_grad_(False).to(dtype)
        log.info(
            "loaded %s on %s (%s) in %.1f s",
            name,
            resolved,
            str(dtype).removeprefix("torch."),
            time.perf_counter() - started,
        )
        return cls(model, info, resolved, dtype)

    def unload(self) -> None:
        """Drop the weights; the engine is unusable afterwards."""
        import torch

        with self._run_lock:
            self.model = None
            if self.device == "cuda":
                torch.cuda.empty_cache()

    def sampling(
        self, steps: int | None = None, cfg_scale: float | None = None, sampler: str | None = None
    ) -> SamplingParams:
        return self.info.sampling(steps, cfg_scale, sampler)

    def check_request(self, request: EngineRequest) -> None:
        self.info.check_request(request)

    # -------------------------------------------------------------- generation
    def generate(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[FloatAudio]:
        """Generate one diffusion batch; return float32 (channels, samples) per request."""
        if not requests:
            return []
        for request in requests:
            self.check_request(request)
        import torch

        started = time.perf_counter()
        with self._run_lock, torch.inference_mode():
            if self.model is None:
                raise GenerationError(f"{self.info.name} was unloaded")
            latents = self._sample(requests, sampling, progress)
            outputs = [
                peak_normalize(self._decode(latents[i : i + 1], r)) for i, r in enumerate(requests)
            ]
        self.stats.batches += 1
        self.stats.items += len(requests)
        self.stats.seconds += time.perf_counter() - started
        self.stats.last_batch_sizes = [*self.stats.last_batch_sizes[-99:], len(requests)]
        return outputs

    def _initial_noise(self, requests: Sequence[EngineRequest]) -> Any:
        import torch

        io_channels = self.model.io_channels
        length = self.info.sample_size // self.info.latent_downsampling
        generators = [torch.Generator().manual_seed(r.seed) for r in requests]
        noise = torch.stack([torch.randn((io_channels, length), generator=g) for g in generators])
        return noise.to(self.device, self.dtype), generators

    def _conditioning(self, requests: Sequence[EngineRequest]) -> dict[str, Any]:
        import torch

        model = self.model
        ids = self.info.conditioning_ids

        def rows(use_negative: bool) -> list[dict[str, Any]]:
            out = []
            for r in requests:
                row: dict[str, Any] = {
                    "prompt": (r.negative_prompt or "") if use_negative else r.prompt,
                    "seconds_start": r.seconds_start,
                    "seconds_total": r.seconds_start + r.seconds_total,
                }
                out.append({k: v for k, v in row.items() if k in ids})
            return out

        inputs = model.get_conditioning_inputs(model.conditioner(rows(False), self.device))
        if any(r.negative_prompt for r in requests):
            negative = model.get_conditioning_inputs(
                model.conditioner(rows(True), self.device), negative=True
            )
            # Items without a negative prompt get an all-false mask, which the DiT turns into
            # its null embedding: exactly what they would get in a batch of their own.
            has_negative = torch.tensor(
                [bool(r.negative_prompt) for r in requests], device=self.device
            )
            mask = negative["negative_cross_attn_mask"].to(torch.bool)
            negative["negative_cross_attn_mask"] = mask & has_negative[:, None]
            inputs.update(negative)
        return {
            k: v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in inputs.items()
        }

    def _sample(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None,
    ) -> Any:
        noise, generators = self._initial_noise(requests)
        cond = self._conditioning(requests)
        extra = {**cond, "cfg_scale": sampling.cfg_scale, "batch_cfg": True, "rescale_cfg": True}
        total = sampling.steps

        def on_step(info: dict[str, Any]) -> None:
            if progress is not None:
                progress(min(int(info["i"]) + 1, total), total)

        if self.info.objective in RF_OBJECTIVES:
            return self._sample_rf(noise, generators, sampling, extra, on_step)
        return self._sample_v(noise, requests, sampling, extra, on_step)

    def _sample_v(
        self,
        noise: Any,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        extra: dict[str, Any],
        on_step: Callable[[dict[str, Any]], None],
    ) -> Any:
        import k_diffusion as K
        import torch

        denoiser = K.external.VDenoiser(self.model.model)
        sigmas = K.sampling.get_sigmas_polyexponential(
            sampling.steps, SIGMA_MIN, SIGMA_MAX, 1.0, device=self.device
        )
        x = noise * sigmas[0]
        kwargs: dict[str, Any] = {"extra_args": extra, "callback": on_step, "disable": True}
        name = sampling.sampler
        if name in ("dpmpp-3m-sde", "dpmpp-2m-sde", "k-dpmpp-2s-ancestral"):
            # One Brownian tree per item, seeded by the item's own seed.
            kwargs["noise_sampler"] = K.sampling.BrownianTreeNoiseSampler(
                x, SIGMA_MIN, SIGMA_MAX, seed=[r.seed for r in requests]
            )
        functions = {
            "dpmpp-3m-sde": K.sampling.sample_dpmpp_3m_sde,
            "dpmpp-2m-sde": K.sampling.sample_dpmpp_2m_sde,
            "dpmpp-2m": K.sampling.sample_dpmpp_2m,
            "k-heun": K.sampling.sample_heun,
            "k-lms": K.sampling.sample_lms,
            "k-dpm-2": K.sampling.sample_dpm_2,
            "k-dpmpp-2s-ancestral": K.sampling.sample_dpmpp_2s_ancestral,
        }
        result: torch.Tensor = functions[name](denoiser, x, sigmas, **kwargs)
        return result

    def _sample_rf(
        self,
        noise: Any,
        generators: list[Any],
        sampling: SamplingParams,
        extra: dict[str, Any],
        on_step: Callable[[dict[str, Any]], None],
    ) -> Any:
        import torch
        from stable_audio_tools.inference import sampling as sat

        # The schedule of stable-audio-tools' sample_rf with sigma_max = 1.
        logsnr = torch.linspace(-6, 2, sampling.steps + 1)
        t = torch.sigmoid(-logsnr)
        t[0], t[-1] = 1.0, 0.0
        model_fn = self.model.model
        if sampling.sampler == "euler":
            return sat.sample_discrete_euler(
                model_fn, noise, sigmas=t, callback=on_step, disable_tqdm=True, **extra
            )
        if sampling.sampler == "dpmpp":
            return sat.sample_flow_dpmpp(
                model_fn, noise, sigmas=t, callback=on_step, disable_tqdm=True, **extra
            )
        # Ping-pong as in stable-audio-tools, with the fresh noise of each step drawn from each
        # item's own generator instead of the global RNG.
        x = noise
        ones = x.new_ones([x.shape[0]])
        for i in range(len(t) - 1):
            denoised = x - t[i] * model_fn(x, t[i] * ones, **extra)
            on_step({"i": i})
            fresh = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
            x = (1 - t[i + 1]) * denoised + t[i + 1] * fresh.to(x.device, x.dtype)
        return x

    def _decode(self, latent: Any, request: EngineRequest) -> FloatAudio:
        """Decode the part of one item's latent that covers its requested span.

        The autoencoder is convolutional: decoding the span plus ``DECODE_MARGIN`` latent frames
        each side (wider than the decoder's receptive field) gives the same samples as decoding
        the whole window, at a fraction of the cost for short requests.
        """
        import torch

        sr, ratio = self.info.sample_rate, self.info.latent_downsampling
        first = round(request.seconds_start * sr)
        count = round(request.seconds_total * sr)
        pretransform = self.model.pretransform
        if pretransform is None:
            audio = latent[0, :, first : first + count]
        else:
            f0 = max(0, first // ratio - DECODE_MARGIN)
            f1 = min(latent.shape[-1], -(-(first + count) // ratio) + DECODE_MARGIN)
            part = latent[..., f0:f1].to(next(pretransform.parameters()).dtype)
            offset = first - f0 * ratio
            audio = pretransform.decode(part)[0, :, offset : offset + count]
        audio = audio.to(torch.float32)
        if audio.shape[-1] != count:
            raise GenerationError(
                f"{self.info.name} returned {audio.shape[-1]} samples, expected {count}"
            )
        if not torch.isfinite(audio).all():
            raise GenerationError(
                f"{self.info.name} produced non-finite samples ({self.dtype!s}); "
                "try STABLE_AUDIO_MODEL_HALF=false"
            )
        result: FloatAudio = audio.cpu().numpy()
        return result
