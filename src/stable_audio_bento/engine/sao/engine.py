"""The stable-audio-tools backend: the Stable Audio Open family (``diffusion_cond`` models).

Each request in a batch has its own prompt, negative prompt, start / length and seed; steps, cfg
and sampler are shared by the batch. Every random draw of a request comes from its own seed
(``noise.py``), so a request gives the same audio alone or in any batch.

The SDE samplers draw their per-step noise from each request's own generator by default rather
than from a Brownian tree: the samplers query one disjoint sigma interval per step, where a
Brownian tree's normalised increments are independent standard normals too, so the distribution
is the same, at a fraction of the cost; the seed then gives another take than
stable-audio-tools'. ``sampler_kwargs={"brownian_noise": 1}`` asks for the reference's tree (one
per request, seeded from the request's stream as stable-audio-tools seeds its own): the same take
for the seed, at the tree walk's cost (README, "Performance").
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...audio import FloatAudio, set_level
from ...errors import GenerationError, ModelLoadError
from ...store.hub_cache import link_text_encoder, prepare_offline_hub
from ..contract import EngineRequest, EngineStats, LoadOptions, ProgressCallback, SamplingParams
from ..cpu_fast import compile_in_place, fold_weight_norm, quantize_int8
from ..info import RF_OBJECTIVES, ModelInfo
from ..lora.apply import EngineLoras
from ..noise import ItemNoise, initial_noise
from ..precision import (
    CpuOptions,
    cpu_candidates,
    dtype_candidates,
    first_passing,
    pick_device,
    set_threads,
    torch_dtype,
)
from ..splice import keep_mask, splice, v_sigma
from .config import SIGMA_MAX, SIGMA_MIN, info_from_config

log = logging.getLogger(__name__)

# Latent frames decoded beyond each end of a request's span. The Oobleck decoder's receptive
# field is under 12 frames each side (measured: a 12-frame margin already reproduces the full
# decode to 1.5e-7), so 16 leaves headroom without paying for frames that are thrown away.
DECODE_MARGIN = 16
# The load-time check that a half-precision model gives finite audio: a short, cheap generation.
CHECK_STEPS = 2
CHECK_SECONDS = 1.0


class StableAudioEngine:
    """One stable-audio-tools ``diffusion_cond`` model on one device."""

    _load_lock = threading.Lock()

    def __init__(self, model: Any, info: ModelInfo, device: str, dtype: Any) -> None:
        self.model = model
        self.info = info
        self.device = device
        self.dtype = dtype
        # What the model computes in: the dtype, or int8 (int8 linear layers in the DiT).
        self.precision = str(dtype).removeprefix("torch.")
        self.stats = EngineStats()
        self._run_lock = threading.Lock()
        self.loras = EngineLoras(self)

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        model_dir: Path,
        name: str,
        metadata: dict[str, Any] | None = None,
        options: LoadOptions | None = None,
    ) -> StableAudioEngine:
        """Load a store entry: ``model_config.json``, ``model.safetensors``, ``text_encoder/``.

        ``dtype`` ``auto`` takes the entry's ``dtype`` metadata if it has one, else float16 on
        CUDA when ``half`` (float32 elsewhere). With ``check``, a short generation proves the
        half precision gives finite audio; if it does not, the next one is tried (float16 ->
        bfloat16 -> float32) from the stored weights. ``compile`` runs the diffusion
        transformer through ``torch.compile``, compiled by that same short generation at load
        rather than by the first request. ``threads`` > 0 sets torch's intra-op thread count
        (for the whole process).

        ``cpu`` (the CPU fast path, on a CPU only; ``CpuOptions``): the decoder compiled with
        its weight norm folded, and the mode's precision (bfloat16 where the CPU has it
        natively, or int8 linear layers in the DiT), which must give finite audio within
        ``min_snr_db`` of float32's for the check request, else float32 is used.
        """
        opts = options or LoadOptions()
        device, half, dtype, cpu = opts.device, opts.half, opts.dtype, opts.cpu
        compile, check, threads = opts.compile, opts.check, opts.threads
        cache = prepare_offline_hub()
        import torch
        from stable_audio_tools.models.factory import create_model_from_config
        from stable_audio_tools.models.utils import load_ckpt_state_dict

        config = json.loads((model_dir / "model_config.json").read_text())
        info = info_from_config(name, config, metadata)
        weights = model_dir / "model.safetensors"
        if not weights.is_file():
            raise ModelLoadError(f"{name}: {weights} is missing")
        resolved = pick_device(device)
        cpu = cpu or CpuOptions()
        fast = cpu.active(resolved)
        set_threads(threads, fast)
        model_dtype = (metadata or {}).get("dtype")
        if fast:
            candidates = cpu_candidates(cpu, dtype if dtype != "auto" else model_dtype or "auto")
        else:
            candidates = dtype_candidates(resolved, half, dtype, model_dtype)
        started = time.perf_counter()

        def build() -> Any:
            with cls._load_lock:
                for cond in config["model"]["conditioning"]["configs"]:
                    if cond["type"] == "t5":
                        link_text_encoder(
                            cache, cond["config"]["t5_model_name"], model_dir / "text_encoder"
                        )
                try:
                    built = create_model_from_config(config)
                    built.load_state_dict(load_ckpt_state_dict(str(weights)), strict=True)
                except Exception as e:
                    raise ModelLoadError(f"{name}: could not load the model: {e}") from e
            return built.eval().requires_grad_(False)

        model = build()
        # On a CPU a reduced precision must also stay close to float32: the check request's
        # float32 audio, from the model as loaded (eager, before any compilation).
        reference = None
        if check and resolved == "cpu" and candidates[0] != "float32":
            reference = cls(model, info, resolved, torch.float32).check_audio()

        def make(candidate: str, fresh: bool) -> StableAudioEngine:
            # After a failed reduced-precision check: start again from the stored weights.
            loaded = build() if fresh else model
            precision = torch_dtype(candidate)
            # Cast before moving: half the bytes cross to the device, and its peak memory is
            # the half-precision model, not the float32 one.
            loaded.to(dtype=precision).to(resolved)
            if fast:
                _fast_path(loaded, candidate)
            if compile:
                # In place: parameters and state-dict keys stay as they are. Dynamic shapes,
                # so every batch size (doubled for CFG) shares one compiled graph.
                loaded.model.model.compile(dynamic=True)
            engine = cls(loaded, info, resolved, precision)
            engine.precision = candidate
            return engine

        # A compiled model (or the fast path's compiled decoder) is warmed up by the check.
        engine = first_passing(
            name,
            candidates,
            make,
            check=check,
            warm_up=compile or fast,
            reference=reference,
            min_snr_db=cpu.min_snr_db,
        )
        engine.stats = EngineStats()  # the check is not a request
        engine.loras = EngineLoras(engine, opts.lora_apply, opts.lora_cache_mb, opts.compile)
        log.info(
            "loaded %s on %s (%s%s%s) in %.1f s",
            name,
            resolved,
            engine.precision,
            f", CPU fast path {cpu.mode}" if fast else "",
            ", compiled" if compile else "",
            time.perf_counter() - started,
        )
        return engine

    def check_audio(self) -> FloatAudio | None:
        """The check request's audio (a short generation), None if it is not finite."""
        request = EngineRequest(
            prompt="precision check",
            seed=0,
            seconds_total=min(CHECK_SECONDS, self.info.window_seconds),
        )
        try:
            return self.generate([request], self.sampling(steps=CHECK_STEPS))[0]
        except GenerationError:
            return None

    def check_finite(self) -> bool:
        """Generate a short request; False if its audio is not finite (half precision overflow)."""
        return self.check_audio() is not None

    def unload(self) -> None:
        """Drop the weights; the engine is unusable afterwards."""
        import torch

        with self._run_lock:
            self.model = None
            self.loras.clear()
            if self.device == "cuda":
                torch.cuda.empty_cache()

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def nbytes(self) -> int:
        """Bytes of parameters, buffers and cached LoRA weights held on its device."""
        if self.model is None:
            return 0
        tensors = [*self.model.parameters(), *self.model.buffers()]
        weights: int = sum(t.numel() * t.element_size() for t in tensors)
        return weights + self.loras.nbytes()

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
        sets = [r.loras for r in requests]
        with self._run_lock, torch.inference_mode(), self.loras.applied(sets):
            if self.model is None:
                raise GenerationError(f"{self.info.name} was unloaded")
            latents = self.sample(requests, sampling, progress)
            outputs = [
                self._finish(self.decode(latents[i : i + 1], r), r) for i, r in enumerate(requests)
            ]
        self.stats.record(len(requests), time.perf_counter() - started)
        return outputs

    def _initial_noise(self, requests: Sequence[EngineRequest]) -> tuple[Any, ItemNoise]:
        """The whole window's starting noise, and each request's stream for the steps."""
        shape = (self.model.io_channels, self.info.sample_size // self.info.latent_downsampling)
        seeds = [r.seed for r in requests]
        noise = initial_noise(seeds, shape, self.device, self.dtype)
        return noise, ItemNoise(seeds, shape, self.device)

    def conditioning(self, requests: Sequence[EngineRequest]) -> dict[str, Any]:
        """The DiT's conditioning inputs for a batch (the text encoder runs here)."""
        import torch

        model = self.model
        ids = self.info.conditioning_ids

        def rows(use_negative: bool) -> list[dict[str, Any]]:
            out = []
            for r in requests:
                row: dict[str, Any] = {
                    "prompt": (r.negative_prompt or "") if use_negative else r.prompt,
                    "seconds_start": r.seconds_start,
                    # Padding: the model is asked for more than is kept (decode cuts it).
                    "seconds_total": r.seconds_start + r.seconds_total + r.padding_seconds,
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

    def _finish(self, audio: FloatAudio, request: EngineRequest) -> FloatAudio:
        """Inpainting keeps the source outside its regions; everything else gets the request's
        output level (peak-normalised unless it asks otherwise)."""
        if request.inpaint_regions and request.init_audio is not None:
            return splice(audio, request, self.info.sample_rate)
        return set_level(audio, self.info.level(request))

    def encode_sources(self, requests: Sequence[EngineRequest]) -> _Source | None:
        """The batch's source audio as window latents, and the frames that follow it.

        The encoder's posterior mean, not a sample from it: the same source always gives the
        same latent (a VAE sample would draw from the global RNG).
        """
        if requests[0].init_audio is None:  # one mode per batch (ModelInfo.batch_key)
            return None
        import torch
        from stable_audio_tools.models.bottleneck import VAEBottleneck

        ratio = self.info.latent_downsampling
        frames = self.info.sample_size // ratio
        latents = torch.zeros((len(requests), self.model.io_channels, frames), device=self.device)
        pretransform = self.model.pretransform
        for i, request in enumerate(requests):
            audio = torch.from_numpy(np.ascontiguousarray(request.init_audio, dtype=np.float32))
            audio = audio[:, : self._encoded_samples(request)]
            count = audio.shape[-1]
            audio = torch.nn.functional.pad(audio, (0, -count % ratio))[None].to(self.device)
            if pretransform is None:
                latent = audio
            else:
                autoencoder = pretransform.model
                dtype = next(pretransform.parameters()).dtype
                latent = autoencoder.encode(audio.to(dtype), skip_bottleneck=True)
                if isinstance(autoencoder.bottleneck, VAEBottleneck):
                    latent = latent.chunk(2, dim=1)[0]
                elif autoencoder.bottleneck is not None:
                    latent = autoencoder.bottleneck.encode(latent)
                latent = latent.float() / pretransform.scale
            used = min(frames, latent.shape[-1])
            latents[i, :, :used] = latent[0, :, :used]
        keep = torch.stack(
            [keep_mask(r, self.info.sample_rate, ratio, frames) for r in requests]
        ).to(self.device)
        return _Source(latents.to(self.dtype), keep.to(self.dtype), requests[0].init_noise_level)

    def _encoded_samples(self, request: EngineRequest) -> int:
        """How much of the source the latent loop uses: all of it, except that a region running
        to the end (a continuation) is never kept, so the encoder stops a receptive field past
        its start (the convolutional encoder's frames before it are the same)."""
        count = int(request.init_audio.shape[-1])
        rate = self.info.sample_rate
        tail = [start for start, end in request.inpaint_regions if end * rate >= count - 1]
        if not tail:
            return count
        ratio = self.info.latent_downsampling
        return min(count, round(min(tail) * rate) + DECODE_MARGIN * ratio)

    def sample(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None,
    ) -> Any:
        """Denoise a batch; the latents of the whole window, one row per request.

        With source audio, sampling starts from the source noised to the request's noise level
        (a variation), and frames outside inpainting regions follow the noised source at every
        step, ending on it exactly.
        """
        noise, item_noise = self._initial_noise(requests)
        cond = self.conditioning(requests)
        source = self.encode_sources(requests)
        # CFG runs as one doubled batch (conditioned and unconditioned rows together).
        extra = {**cond, "cfg_scale": sampling.cfg_scale, "batch_cfg": True, "rescale_cfg": True}
        total = sampling.steps

        def on_step(info: dict[str, Any]) -> None:
            if progress is not None:
                progress(min(int(info["i"]) + 1, total), total)

        if self.info.objective in RF_OBJECTIVES:
            latents = self._sample_rf(noise, item_noise, sampling, extra, on_step, source)
        else:
            latents = self._sample_v(noise, item_noise, sampling, extra, on_step, source)
        if source is not None:  # the kept frames end exactly on the source
            latents = latents * (1 - source.keep) + source.latents * source.keep
        return latents

    def _sample_v(
        self,
        noise: Any,
        item_noise: ItemNoise,
        sampling: SamplingParams,
        extra: dict[str, Any],
        on_step: Callable[[dict[str, Any]], None],
        source: _Source | None = None,
    ) -> Any:
        import k_diffusion as K
        import torch

        denoiser: Any = K.external.VDenoiser(self.model.model)
        # The schedule stays on the CPU: the samplers' scalar arithmetic and their
        # `sigma == 0` tests then never wait for the device.
        schedule = dict(sampling.sampler_kwargs)
        sigma_min = float(schedule.get("sigma_min", SIGMA_MIN))
        sigma_max = float(schedule.get("sigma_max", SIGMA_MAX))
        if source is not None:
            # A variation starts part-way down the schedule; the floor stays below the start.
            sigma_max = v_sigma(source.level, sigma_max)
            sigma_min = min(sigma_min, sigma_max / 2)
            if source.inpainting:
                denoiser = _KeepKnownV(denoiser, source.latents, source.keep, noise)
        sigmas = K.sampling.get_sigmas_polyexponential(sampling.steps, sigma_min, sigma_max, 1.0)
        x = noise * sigmas[0]
        if source is not None:  # k-diffusion's variance-exploding form: data + sigma * noise
            x = x + source.latents
        kwargs: dict[str, Any] = {"extra_args": extra, "callback": on_step, "disable": True}
        name = sampling.sampler
        if len(sigmas) == 2 and name in ("dpmpp-3m-sde", "dpmpp-2m-sde"):
            # One step goes straight to sigma 0, where these samplers return the denoised
            # estimate and nothing else (k-diffusion's own loop fails there on unset history):
            # Euler's single step to 0 is that same estimate.
            name = "k-euler"
        if name in ("dpmpp-3m-sde", "dpmpp-2m-sde") and schedule.get("brownian_noise"):
            positive = sigmas[sigmas > 0]
            kwargs["noise_sampler"] = item_noise.brownian(
                x, float(positive.min()), float(positive.max())
            )
        elif name in ("dpmpp-3m-sde", "dpmpp-2m-sde", "k-dpmpp-2s-ancestral"):
            kwargs["noise_sampler"] = item_noise.like(x)
        functions = {
            "dpmpp-3m-sde": K.sampling.sample_dpmpp_3m_sde,
            "dpmpp-2m-sde": K.sampling.sample_dpmpp_2m_sde,
            "dpmpp-2m": K.sampling.sample_dpmpp_2m,
            "k-euler": K.sampling.sample_euler,
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
        item_noise: ItemNoise,
        sampling: SamplingParams,
        extra: dict[str, Any],
        on_step: Callable[[dict[str, Any]], None],
        source: _Source | None = None,
    ) -> Any:
        import torch
        from stable_audio_tools.inference import sampling as sat

        # The schedule of stable-audio-tools' sample_rf (sigma_max = the noise level: 1 for
        # text-to-audio and inpainting, lower for a variation).
        start = 1.0 if source is None else min(1.0, max(1e-3, source.level))
        logsnr_max = math.log((1 - start) / start + 1e-6) if start < 1 else -6.0
        logsnr = torch.linspace(logsnr_max, 2, sampling.steps + 1)
        t = torch.sigmoid(-logsnr)
        t[0], t[-1] = start, 0.0
        model_fn: Any = self.model.model
        if source is not None:
            if source.inpainting:
                model_fn = _KeepKnownRF(model_fn, source.latents, source.keep, noise)
            noise = source.latents * (1 - start) + noise * start
        if sampling.sampler == "euler":
            return sat.sample_discrete_euler(
                model_fn, noise, sigmas=t, callback=on_step, disable_tqdm=True, **extra
            )
        if sampling.sampler == "dpmpp":
            return sat.sample_flow_dpmpp(
                model_fn, noise, sigmas=t, callback=on_step, disable_tqdm=True, **extra
            )
        # Ping-pong as in stable-audio-tools, with the fresh noise of each step drawn from each
        # item's own stream instead of the global RNG.
        x = noise
        fresh = item_noise.like(x)
        ones = x.new_ones([x.shape[0]])
        for i in range(len(t) - 1):
            denoised = x - t[i] * model_fn(x, t[i] * ones, **extra)
            on_step({"i": i})
            x = (1 - t[i + 1]) * denoised + t[i + 1] * fresh()
        return x

    def decode(self, latent: Any, request: EngineRequest) -> FloatAudio:
        """Decode the part of one item's latent that covers its requested span.

        The autoencoder is convolutional: decoding the span plus ``DECODE_MARGIN`` latent frames
        each side (wider than the decoder's receptive field) gives the same samples as decoding
        the whole window, at a fraction of the cost for short requests. One item at a time: on
        a CPU the decoder is memory-bound and a batched decode is slower (measured 2.4 s for
        four 172-frame items at once vs 0.9 s one by one).
        """
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
        # One copy to the host, in the model's precision; float32 and the checks happen there.
        result: FloatAudio = audio.cpu().float().numpy()
        if result.shape[-1] != count:
            raise GenerationError(
                f"{self.info.name} returned {result.shape[-1]} samples, expected {count}"
            )
        if not np.isfinite(result).all():
            raise GenerationError(
                f"{self.info.name} produced non-finite samples ({self.dtype!s}); "
                "try STABLE_AUDIO_DTYPE=float32"
            )
        return result


@dataclass(frozen=True)
class _Source:
    """A batch's source audio in the latent space, and what of it to keep."""

    latents: Any  # (batch, channels, frames)
    keep: Any  # (batch, 1, frames): 1 = follows the source
    level: float  # where sampling starts: 1 = pure noise

    @property
    def inpainting(self) -> bool:
        return bool(self.keep.any())


class _KeepKnownV:
    """A k-diffusion denoiser whose kept frames are the source noised to the current sigma.

    The frames the model sees there are ``source + sigma * noise`` (the trajectory the
    initial noise would take towards the source), and its estimate there is the source, so
    every sampler moves those frames along that trajectory and the new frames are denoised in
    their context.
    """

    def __init__(self, inner: Any, source: Any, keep: Any, noise: Any) -> None:
        self.inner, self.source, self.keep, self.noise = inner, source, keep, noise

    def __call__(self, x: Any, sigma: Any, **kwargs: Any) -> Any:
        s = sigma.to(x.dtype).view(-1, 1, 1)
        x = x * (1 - self.keep) + (self.source + s * self.noise) * self.keep
        denoised = self.inner(x, sigma, **kwargs)
        return denoised * (1 - self.keep) + self.source * self.keep


class _KeepKnownRF:
    """The rectified-flow form: x_t = (1 - t) source + t noise, velocity noise - source."""

    def __init__(self, inner: Any, source: Any, keep: Any, noise: Any) -> None:
        self.inner, self.source, self.keep, self.noise = inner, source, keep, noise

    def __call__(self, x: Any, t: Any, **kwargs: Any) -> Any:
        tt = t.to(x.dtype).view(-1, 1, 1)
        known = (1 - tt) * self.source + tt * self.noise
        x = x * (1 - self.keep) + known * self.keep
        velocity = self.inner(x, t, **kwargs)
        return velocity * (1 - self.keep) + (self.noise - self.source) * self.keep


def read_info(path: Path, name: str, metadata: dict[str, Any]) -> ModelInfo:
    """The backend's description of a store entry (``model_config.json``), weights unread."""
    config = json.loads((path / "model_config.json").read_text())
    return info_from_config(name, config, metadata)


def load(
    path: Path, name: str, metadata: dict[str, Any], options: LoadOptions
) -> StableAudioEngine:
    """The family's loader (``engine.load_engine``)."""
    return StableAudioEngine.load(path, name, metadata, options)


def _fast_path(model: Any, candidate: str) -> None:
    """The CPU fast path on a freshly loaded model already cast to ``candidate``'s dtype.

    int8 quantizes the DiT's linear layers; the autoencoder runs in the DiT's float dtype
    with its weight norm folded, and its decoder is compiled (bfloat16 decoding is only fast
    compiled: eager, it is slower than float32).
    """
    if candidate == "int8":
        quantize_int8(model.model.model)
    if model.pretransform is not None:
        fold_weight_norm(model.pretransform)
        compile_in_place(model.pretransform.model.decoder)
