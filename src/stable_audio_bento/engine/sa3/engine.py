"""The Stable Audio 3 backend on diffusers' components, with our own sampling loop.

A store entry is a directory in ``StableAudio3Pipeline.save_pretrained``'s layout
(``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``duration_embedder/``,
``scheduler/``). The components come from diffusers (``StableAudio3DiTModel``,
``AutoencoderSAME``, ``StableAudio3DurationEmbedder``) and transformers
(``T5GemmaEncoderModel``); the loop and the decode are ours:

- each request has its own prompt, negative prompt, length and seed; a batch shares steps, cfg
  and sampler, and its latent length (``ModelInfo.batch_key``: the latent is as long as the
  request, plus its padding);
- the initial noise, every ping-pong re-noise and then the SAME decoder's ``mask_noise`` come
  from the request's own seed (``noise.py``), in the reference's order: on the CPU a single
  request gets the reference ``generate()``'s audio for its seed, and a request gets the same
  audio alone or in any batch;
- the schedule is SA3's (log-SNR from -6.2 to 2, warped to flow-matching sigmas), the DiT sees
  the sigma as its timestep, and ping-pong, Euler and DPM-Solver++ step from it;
- around the DiT, what the reference's ``generate()`` does (``sa3_reference``): its latent
  rounding, the padding mask past each request's own frames plus its padding, the inpainting
  input always fed (zeros for text-to-audio), and CFG (any cfg_scale but 1) as its DiT does it:
  one doubled batch against a zeroed context or the request's negative prompt with its padding
  zeroed, guided on the clean estimates with adaptive projected guidance over the valid frames
  (``apg_scale``, 1 by default);
- the SAME decode is exact and linear in the length (``sa3_decode.py``; SAME-S, the small
  models' chunked autoencoder, through ``same``).

The reference batches requests of different lengths in one latent as long as the longest; here
every latent is its request's own length + padding (items of one batch share it), so each
request sees what it would see alone, which is what the reference gives a single request.
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
from ..contract import (
    AUDIO_TO_AUDIO,
    CONTINUATION,
    INPAINTING,
    TEXT_TO_AUDIO,
    EngineRequest,
    EngineStats,
    LoadOptions,
    ProgressCallback,
    SamplingParams,
)
from ..cpu_fast import quantize_int8
from ..info import OBJECTIVE_DEFAULTS, ModelInfo
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
from ..splice import splice
from . import SA3_BACKEND
from . import decode as sa3_decode
from . import layout as sa3_layout  # noqa: F401  (registers its LoRA plan with engine.lora)
from . import reference as sa3_reference
from . import same as sa3_same

log = logging.getLogger(__name__)

# SA3's noise schedule (diffusers' pipeline and the reference): log-SNR bounds.
LOGSNR_MIN, LOGSNR_MAX = -6.2, 2.0
# The text length when an entry does not record its own (``prompt_max_length``, from the
# reference's conditioner): prompts are padded to it (the DiT attends to the padding too).
MAX_TEXT_TOKENS = 256
DEFAULT_MAX_SECONDS = 120.0
CHECK_STEPS = 2
CHECK_SECONDS = 1.0
OPTIONS = frozenset({"negative_prompt", "duration_padding", "apg_scale"})


def _config(path: Path, component: str, filename: str = "config.json") -> dict[str, Any]:
    file = path / component / filename
    if not file.is_file():
        raise ModelLoadError(f"{path.name}: {component}/{filename} is missing")
    data: dict[str, Any] = json.loads(file.read_text())
    return data


def read_info(path: Path, name: str, metadata: dict[str, Any]) -> ModelInfo:
    """The model's description from its component configs and store metadata, weights unread.

    Distilled models (their scheduler samples stochastically: ping-pong) default to 8 steps,
    cfg 1 and no negative prompt; base models to real CFG. Store metadata overrides both.
    """
    vae = _config(path, "vae")
    scheduler = _config(path, "scheduler", "scheduler_config.json")
    distilled = bool(metadata.get("distilled", scheduler.get("stochastic_sampling", True)))
    objective = "rf_denoiser" if distilled else "rectified_flow"
    defaults = OBJECTIVE_DEFAULTS[objective]
    sample_rate = int(vae.get("sampling_rate", 44100))
    ratio = int(vae.get("patch_size", 256)) * math.prod(vae.get("encoder_strides", [16]))
    max_seconds = float(metadata.get("max_seconds", DEFAULT_MAX_SECONDS))
    negative = metadata.get("negative_prompt")
    return ModelInfo(
        name=name,
        backend=SA3_BACKEND,
        sample_rate=sample_rate,
        channels=int(vae.get("audio_channels", 2)),
        sample_size=round(max_seconds * sample_rate),
        latent_downsampling=ratio,
        objective=objective,
        default_steps=int(metadata.get("steps", defaults["steps"])),
        default_cfg_scale=float(metadata.get("cfg_scale", defaults["cfg_scale"])),
        default_sampler=str(metadata.get("sampler", defaults["sampler"])),
        default_negative_prompt=str(negative) if negative else None,
        default_level="attenuate",
        conditioning_ids=("prompt", "seconds_total"),
        fixed_window=False,
        max_seconds_override=max_seconds,
        latent_align=sa3_reference.latent_align(vae),
        # Variations from the SAME-encoded source; inpainting through the DiT's own inpainting
        # input (the encoded source and its keep mask), as diffusers' SA3 pipelines do.
        modes=(TEXT_TO_AUDIO, AUDIO_TO_AUDIO, INPAINTING, CONTINUATION),
        options=OPTIONS,
    )


def schedule(
    steps: int,
    sigma_max: float = 1.0,
    logsnr_start: float = LOGSNR_MIN,
    logsnr_end: float = LOGSNR_MAX,
) -> list[float]:
    """``steps + 1`` sigmas from ``sigma_max`` down to 0: uniform in log-SNR between
    ``logsnr_start`` (the noisy end) and ``logsnr_end``.

    Computed in float32 as the reference does. The first is exactly ``sigma_max`` (the noise
    level the start was mixed at), the last exactly 0. ``sigma_max`` < 1 starts part-way (a
    variation of source audio).
    """
    import torch

    t = torch.linspace(sigma_max, 0.0, steps + 1)
    sigmas: list[float] = torch.sigmoid(-(logsnr_end - t * (logsnr_end - logsnr_start))).tolist()
    sigmas[0], sigmas[-1] = sigma_max, 0.0
    return sigmas


@dataclass(frozen=True)
class ScheduleShift:
    """The reference's length-adaptive schedule (its ``LogSNRShift``), from store metadata.

    The noisy end of the log-SNR range drops by ``rate`` per doubling of the sequence length
    past ``anchor_length`` latent frames; the length is the request's own (from its
    ``seconds_total``) with ``effective_length``, else the denoised latent's.
    """

    anchor_length: float = 2000.0
    anchor_logsnr: float = LOGSNR_MIN
    rate: float = 1.0
    logsnr_end: float = LOGSNR_MAX
    effective_length: bool = False

    @classmethod
    def from_metadata(cls, name: str, metadata: dict[str, Any]) -> ScheduleShift | None:
        options = metadata.get("sampling_distribution_shift")
        effective = bool(metadata.get("use_effective_length_for_schedule", False))
        if not options:
            return None
        kind = options.get("type", "full")
        if kind == "none":
            return None
        if kind != "logsnr":
            raise ModelLoadError(
                f"{name}: sampling_distribution_shift type {kind!r} is not supported "
                "(supported: logsnr, none)"
            )
        known = {"anchor_length", "anchor_logsnr", "rate", "logsnr_end"}
        values = {k: float(v) for k, v in options.items() if k in known}
        return cls(**values, effective_length=effective)

    def logsnr_start(self, frames: int) -> float:
        return self.anchor_logsnr - self.rate * math.log2(max(frames, 1) / self.anchor_length)


@dataclass
class Components:
    """The diffusers / transformers modules of one SA3 model."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    duration_embedder: Any

    def modules(self) -> list[Any]:
        return [self.transformer, self.vae, self.text_encoder, self.duration_embedder]

    @classmethod
    def read(cls, path: Path, dtype: Any, norm_eps: float | None = None) -> Components:
        """Every component from the entry's files in ``dtype`` on the CPU, never the network.

        ``norm_eps``: the reference's eps for the DiT blocks' RMS norms (diffusers builds them
        with 1e-6; the q/k norms already agree), from the entry's ``dit_norm_eps``.
        """
        from diffusers import StableAudio3DiTModel, StableAudio3DurationEmbedder
        from transformers import AutoTokenizer, T5GemmaEncoderModel

        def load(kind: Any, sub: str) -> Any:
            module = kind.from_pretrained(path / sub, local_files_only=True, torch_dtype=dtype)
            return module.eval().requires_grad_(False)

        transformer = load(StableAudio3DiTModel, "transformer")
        if norm_eps is not None:
            for block in transformer.transformer_blocks:
                for norm in (block.pre_norm, block.cross_attend_norm, block.ff_norm):
                    norm.eps = norm_eps
        return cls(
            transformer=transformer,
            # SAME-L loads as diffusers' AutoencoderSAME; SAME-S (the small models) needs
            # its kernel-3 mapping convolutions (``same``).
            vae=sa3_same.load_vae(path / "vae", dtype).requires_grad_(False),
            text_encoder=load(T5GemmaEncoderModel, "text_encoder"),
            tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True),
            duration_embedder=load(StableAudio3DurationEmbedder, "duration_embedder"),
        )

    def to(self, device: str) -> Components:
        for module in self.modules():
            module.to(device)
        return self


@dataclass
class Conditioning:
    """The DiT's inputs for a batch: context tokens (text + duration), mask, global vector.

    With CFG every tensor holds the negative rows first, then the positive ones.
    """

    context: Any
    mask: Any
    global_embed: Any
    cfg: bool
    # The inpainting input, (batch, 1 + latent_dim, frames): the keep mask then the masked
    # source latent; zeros without source audio (the reference always feeds it).
    local: Any = None
    # Each item's valid frames (the reference's padding mask) and the mask itself (or None).
    valid: tuple[int, ...] = ()
    padding: Any = None


class SA3Engine:
    """One Stable Audio 3 model on one device."""

    _load_lock = threading.Lock()

    def __init__(
        self,
        parts: Components,
        info: ModelInfo,
        device: str,
        dtype: Any,
        shift: ScheduleShift | None = None,
        text_tokens: int | None = None,
        mask_noise: float = 0.0,
    ) -> None:
        self.parts: Components | None = parts
        # The reference's padding mask in the DiT's self-attention, set for each forward pass.
        self.attention = sa3_reference.install_padding_mask(parts.transformer)
        # The SAME decoder's new-token noise scale (the reference applies it at inference).
        self.mask_noise = mask_noise
        # Prompts are padded to the entry's own text length, else the tokenizer's (at most 256).
        tokenizer_length = int(getattr(parts.tokenizer, "model_max_length", MAX_TEXT_TOKENS))
        self.text_tokens = text_tokens or min(tokenizer_length, MAX_TEXT_TOKENS)
        self.info = info
        self.device = device
        self.dtype = dtype
        self.shift = shift
        self.stats = EngineStats()
        self._run_lock = threading.Lock()
        self.loras = EngineLoras(self)

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: Path,
        name: str,
        metadata: dict[str, Any] | None = None,
        options: LoadOptions | None = None,
    ) -> SA3Engine:
        """Load an entry; half precision is proven by a short generation, as for SAO models
        (float16 -> bfloat16 -> float32 from the stored weights until the audio is finite).
        ``compile`` compiles the DiT, warmed up by that same generation. ``cpu`` (the CPU
        fast path, ``CpuOptions``): bfloat16 where the CPU has it natively, or int8 linear
        layers in the DiT, each within ``min_snr_db`` of float32's audio for the check
        request, else float32."""
        opts = options or LoadOptions()
        device, half, dtype, cpu = opts.device, opts.half, opts.dtype, opts.cpu
        compile, check, threads = opts.compile, opts.check, opts.threads

        meta = metadata or {}
        info = read_info(path, name, meta)
        resolved = pick_device(device)
        cpu = cpu or CpuOptions()
        fast = cpu.active(resolved)
        set_threads(threads, fast)
        if fast:
            candidates = cpu_candidates(
                cpu, dtype if dtype != "auto" else meta.get("dtype", "auto")
            )
        else:
            candidates = dtype_candidates(resolved, half, dtype, meta.get("dtype"))
        shift = ScheduleShift.from_metadata(name, meta)
        norm_eps = meta.get("dit_norm_eps")
        text_tokens = int(meta["prompt_max_length"]) if "prompt_max_length" in meta else None
        mask_noise = float(sa3_same.same_extras(path / "vae").get("decoder_mask_noise", 0.0))
        started = time.perf_counter()

        def make(candidate: str, fresh: bool) -> SA3Engine:
            # Read in the candidate precision (a failed check reads the stored weights again):
            # only that precision's bytes cross to the device.
            precision = torch_dtype(candidate)
            with cls._load_lock:
                try:
                    parts = Components.read(
                        path, precision, None if norm_eps is None else float(norm_eps)
                    )
                except (OSError, ValueError) as e:
                    raise ModelLoadError(f"{name}: could not load the model: {e}") from e
            if candidate == "int8":
                quantize_int8(parts.transformer)
            if compile:
                parts.transformer.compile(dynamic=True)
            return cls(
                parts.to(resolved), info, resolved, precision, shift, text_tokens, mask_noise
            )

        # On a CPU a reduced precision must also stay close to float32's audio.
        reference = None
        if check and fast and candidates[0] != "float32":
            reference = make("float32", False).check_audio()
        engine = first_passing(
            name,
            candidates,
            make,
            check=check,
            warm_up=compile,
            reference=reference,
            min_snr_db=cpu.min_snr_db,
        )
        engine.stats = EngineStats()  # the check is not a request
        engine.loras = EngineLoras(engine, opts.lora_apply, opts.lora_cache_mb, opts.compile)
        log.info(
            "loaded %s on %s (%s%s) in %.1f s",
            name,
            resolved,
            engine.dtype_name,
            ", compiled" if compile else "",
            time.perf_counter() - started,
        )
        return engine

    def check_audio(self) -> FloatAudio | None:
        """The check request's audio (a short generation), None if it is not finite."""
        request = EngineRequest(prompt="precision check", seed=0, seconds_total=CHECK_SECONDS)
        try:
            return self.generate([request], self.info.sampling(steps=CHECK_STEPS))[0]
        except GenerationError:
            return None

    def check_finite(self) -> bool:
        """Generate a short request; False if its audio is not finite (half precision overflow)."""
        return self.check_audio() is not None

    def unload(self) -> None:
        import torch

        with self._run_lock:
            self.parts = None
            self.loras.clear()
            if self.device == "cuda":
                torch.cuda.empty_cache()

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def nbytes(self) -> int:
        if self.parts is None:
            return 0
        tensors = [t for m in self.parts.modules() for t in (*m.parameters(), *m.buffers())]
        weights: int = sum(t.numel() * t.element_size() for t in tensors)
        return weights + self.loras.nbytes()

    def _parts(self) -> Components:
        if self.parts is None:
            raise GenerationError(f"{self.info.name} was unloaded")
        return self.parts

    # -------------------------------------------------------------- generation
    def generate(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[FloatAudio]:
        """One diffusion batch; float32 (channels, samples) per request at its output level."""
        if not requests:
            return []
        for request in requests:
            self.info.check_request(request)
        if len({self.info.batch_key(r) for r in requests}) > 1:
            raise GenerationError("one batch must share its latent length (ModelInfo.batch_key)")
        import torch

        started = time.perf_counter()
        sets = [r.loras for r in requests]
        with self._run_lock, torch.inference_mode(), self.loras.applied(sets):
            self._parts()
            latents, streams = self.sample_streams(requests, sampling, progress)
            outputs = [
                self._finish(self.decode(latents[i : i + 1], r, streams[i]), r)
                for i, r in enumerate(requests)
            ]
        self.stats.record(len(requests), time.perf_counter() - started)
        return outputs

    def _finish(self, audio: FloatAudio, request: EngineRequest) -> FloatAudio:
        """Inpainting keeps the source outside its regions; everything gets the request's
        output level (by default the reference's: never boosted, attenuated above full scale)."""
        if request.inpaint_regions and request.init_audio is not None:
            audio = splice(audio, request, self.info.sample_rate)
        return set_level(audio, self.info.level(request))

    def encode_sources(self, requests: Sequence[EngineRequest], frames: int) -> Any:
        """The batch's source audio as SAME latents, ``frames`` long (zeros past the source)."""
        import torch

        vae = self._parts().vae
        ratio = self.info.latent_downsampling
        rows = []
        for request in requests:
            audio = torch.from_numpy(np.ascontiguousarray(request.init_audio, dtype=np.float32))
            audio = torch.nn.functional.pad(audio, (0, max(0, frames * ratio - audio.shape[-1])))
            audio = audio[:, : frames * ratio][None].to(self.device, self.dtype)
            rows.append(_encode(vae, audio).float()[0, :, :frames])
        return torch.stack(rows)

    def _encode_text(self, prompts: list[str]) -> tuple[Any, Any]:
        parts = self._parts()
        tokens = parts.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.text_tokens,
            truncation=True,
            return_tensors="pt",
        )
        ids = tokens.input_ids.to(self.device)
        mask = tokens.attention_mask.to(self.device)
        return parts.text_encoder(ids, attention_mask=mask)[0], mask

    def conditioning(self, requests: Sequence[EngineRequest], cfg: bool) -> Conditioning:
        """Text (T5Gemma) and duration embeddings; the duration is also the last context token.

        The duration is the length kept (``seconds_total``), not the padded length denoised.
        With CFG the unconditional rows are the reference's: a zero context, or the negative
        prompt's with its padding zeroed (so the DiT has no padding to replace there).
        """
        import torch

        embeds, mask = self._encode_text([r.prompt for r in requests])
        seconds = torch.tensor(
            [float(r.seconds_total) for r in requests], dtype=torch.float32, device=self.device
        )
        global_embed = self._parts().duration_embedder(seconds)
        context = torch.cat([embeds, global_embed[:, None].to(embeds.dtype)], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        if not cfg:
            return Conditioning(context, mask, global_embed, cfg)
        default = self.info.default_negative_prompt
        negatives = [default if r.negative_prompt is None else r.negative_prompt for r in requests]
        uncond = torch.zeros_like(context)
        rows = [i for i, negative in enumerate(negatives) if negative]
        if rows:
            neg, neg_mask = self._encode_text([str(negatives[i]) for i in rows])
            neg = torch.cat([neg, global_embed[rows, None].to(neg.dtype)], dim=1)
            neg_mask = torch.cat([neg_mask, neg_mask.new_ones((len(rows), 1))], dim=1)
            uncond[rows] = torch.where(neg_mask.bool()[..., None], neg, torch.zeros_like(neg))
        return Conditioning(
            torch.cat([uncond, context]),
            torch.cat([torch.ones_like(mask), mask]),
            torch.cat([global_embed, global_embed]),
            cfg,
        )

    def velocity(
        self,
        x: Any,
        sigma: float,
        cond: Conditioning,
        cfg_scale: float,
        apg_scale: float | None = None,
    ) -> Any:
        """The DiT's velocity at noise level ``sigma`` (guided when the batch uses CFG).

        The DiT always gets the inpainting input (zeros without source audio) and the padding
        mask; CFG is the reference's (``sa3_reference.guide``), ``apg_scale`` None meaning its
        default (1: full adaptive projected guidance; 0 is plain CFG).
        """
        import torch

        def doubled(t: Any) -> Any:
            return None if t is None else (torch.cat([t, t]) if cond.cfg else t)

        model_in = doubled(x)
        timestep = torch.full((model_in.shape[0],), sigma, dtype=torch.float32, device=x.device)
        local = cond.local
        if local is None:
            local = sa3_reference.zero_local(x.shape[0], x.shape[1], x.shape[2], x.device, x.dtype)
        self.attention.mask = doubled(cond.padding)
        try:
            v = (
                self._parts()
                .transformer(
                    model_in.to(self.dtype),
                    timestep,
                    encoder_hidden_states=cond.context,
                    global_hidden_states=cond.global_embed,
                    encoder_attention_mask=cond.mask,
                    local_add_cond=doubled(local).to(self.dtype),
                    return_dict=False,
                )[0]
                .float()
            )
        finally:
            self.attention.mask = None
        if not cond.cfg:
            return v
        uncond, text = v.chunk(2)
        apg = sa3_reference.DEFAULT_APG_SCALE if apg_scale is None else apg_scale
        return sa3_reference.guide(x, sigma, text, uncond, cfg_scale, apg, cond.padding)

    def sample(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
        start: Any = None,
        sigma_max: float = 1.0,
    ) -> Any:
        """Denoise a batch; float32 latents (batch, latent_dim, frames) (``sample_streams``)."""
        return self.sample_streams(requests, sampling, progress, start, sigma_max)[0]

    def sample_streams(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
        start: Any = None,
        sigma_max: float = 1.0,
    ) -> tuple[Any, list[Any]]:
        """Denoise a batch; float32 latents (batch, latent_dim, frames) and each item's random
        stream (its generator, where the reference's decoder draws next).

        ``start`` (optional, batch x latent_dim x frames) is where sampling begins instead of
        pure noise, mixed as ``(1 - sigma_max) * start + sigma_max * noise`` (audio-to-audio).
        Requests with source audio set both themselves: a variation starts from the encoded
        source at its noise level; an inpainting starts from noise and gives the DiT the
        encoded source outside the regions (its inpainting input).
        """
        import torch

        parts = self._parts()
        frames = self.info.latent_frames(requests[0])
        variation = requests[0].init_audio is not None and not requests[0].inpaint_regions
        if variation and start is None:  # the schedule starts at the variation's noise level
            sigma_max = min(1.0, max(1e-3, requests[0].init_noise_level))
        schedules = [self.schedule(r, frames, sampling.steps, sigma_max) for r in requests]
        if len(set(map(tuple, schedules))) > 1:
            # A length-adaptive schedule that differs between items: each group of equal
            # schedules runs on its own (every item keeps its own noise, so nothing changes).
            return self._sample_groups(requests, schedules, sampling, progress, start, sigma_max)
        latent_dim = int(parts.transformer.config.io_channels)
        shape = (latent_dim, frames)
        seeds = [r.seed for r in requests]
        rate, ratio = self.info.sample_rate, self.info.latent_downsampling
        local = sa3_reference.zero_local(len(requests), latent_dim, frames, self.device, _float32())
        if requests[0].init_audio is not None and start is None:  # one mode per batch
            source = self.encode_sources(requests, frames)
            if requests[0].inpaint_regions:
                keep = torch.stack(
                    [
                        sa3_reference.keep_mask(
                            r.inpaint_regions, r.seconds_total, rate, ratio, frames
                        )
                        for r in requests
                    ]
                ).to(self.device)
                local = torch.cat([keep, source * keep], dim=1)
            else:
                start = source
        x = initial_noise(seeds, shape, self.device, _float32())
        if start is not None:
            x = (1 - sigma_max) * start.float() + sigma_max * x
        cond = self.conditioning(requests, cfg=sampling.cfg_scale != 1)
        cond.local = local
        cond.valid = tuple(
            sa3_reference.valid_frames(r.seconds_total, r.padding_seconds, rate, ratio, frames)
            for r in requests
        )
        cond.padding = sa3_reference.padding_mask(cond.valid, frames, self.device)
        streams = ItemNoise(seeds, shape, self.device)
        latents = self.denoise(x, schedules[0], cond, sampling, streams, progress)
        return latents, list(streams.generators)

    def schedule(
        self, request: EngineRequest, frames: int, steps: int, sigma_max: float = 1.0
    ) -> list[float]:
        """The request's sigmas: SA3's log-SNR schedule, shifted by the length when the model's
        metadata says so (the reference's ``sampling_distribution_shift``)."""
        if self.shift is None:
            return schedule(steps, sigma_max)
        if self.shift.effective_length:
            samples = int(request.seconds_total * self.info.sample_rate)
            frames = math.ceil(samples / self.info.latent_downsampling)
        return schedule(steps, sigma_max, self.shift.logsnr_start(frames), self.shift.logsnr_end)

    def _sample_groups(
        self,
        requests: Sequence[EngineRequest],
        schedules: list[list[float]],
        sampling: SamplingParams,
        progress: ProgressCallback | None,
        start: Any,
        sigma_max: float,
    ) -> tuple[Any, list[Any]]:
        import torch

        groups: dict[tuple[float, ...], list[int]] = {}
        for i, sigmas in enumerate(schedules):
            groups.setdefault(tuple(sigmas), []).append(i)
        out: Any = None
        streams: list[Any] = [None] * len(requests)
        steps, count = sampling.steps, len(groups)
        reported = 0

        def overall(k: int) -> ProgressCallback:
            def report(i: int, _total: int) -> None:  # group k's step i, of the whole batch
                nonlocal reported
                step = (k * steps + i) // count
                if progress is not None and step > reported:
                    reported = step
                    progress(step, steps)

            return report

        for k, rows in enumerate(groups.values()):
            part, generators = self.sample_streams(
                [requests[i] for i in rows],
                sampling,
                overall(k),
                None if start is None else start[rows],
                sigma_max,
            )
            if out is None:
                out = torch.empty((len(requests), *part.shape[1:]), device=part.device)
            out[rows] = part
            for i, generator in zip(rows, generators, strict=True):
                streams[i] = generator
        return out, streams

    def denoise(
        self,
        x: Any,
        sigmas: Sequence[float],
        cond: Conditioning,
        sampling: SamplingParams,
        item_noise: ItemNoise,
        progress: ProgressCallback | None = None,
        on_denoised: Callable[[Any, int], Any] | None = None,
    ) -> Any:
        """The sampling loop from ``x`` at ``sigmas[0]`` to 0.

        ``on_denoised(x0, i)`` may replace each step's clean estimate (an inpainting mask keeps
        the known frames there).
        """
        total = len(sigmas) - 1
        fresh = item_noise.like(x)
        previous: Any = None
        for i in range(total):
            sigma, following = sigmas[i], sigmas[i + 1]
            v = self.velocity(x, sigma, cond, sampling.cfg_scale, sampling.apg_scale)
            denoised = x - sigma * v
            if on_denoised is not None:
                denoised = on_denoised(denoised, i)
                v = (x - denoised) / sigma
            if sampling.sampler == "pingpong":
                # Back to the next noise level with fresh noise from each request's stream;
                # the last step draws too (weighted 0), as the reference's, so what is drawn
                # after the loop (the decoder's noise) comes from the same place in the stream.
                noise = fresh()
                x = denoised if following == 0 else (1 - following) * denoised + following * noise
            elif sampling.sampler == "euler":
                x = x + (following - sigma) * v
            else:  # dpmpp: DPM-Solver++(2M) in the flow's log-SNR
                x = _dpmpp_step(x, denoised, previous, sigmas, i)
                previous = denoised
            if progress is not None:
                progress(i + 1, total)
        return x

    def decode(self, latent: Any, request: EngineRequest, stream: Any = None) -> FloatAudio:
        """One item's audio: exactly ``seconds_total`` long, float32 on the host.

        ``stream``: the item's generator, for the decoder's new-token noise (``mask_noise``).
        """
        import torch

        parts = self._parts()
        count = round(request.seconds_total * self.info.sample_rate)
        latent = latent.to(self.dtype)
        draw = None
        if stream is not None and self.mask_noise > 0:
            scale = self.mask_noise

            def draw(shape: tuple[int, ...]) -> Any:
                noise = torch.randn(shape, generator=stream, device=self.device)
                return noise * scale

        if sa3_same.uses_chunks(parts.vae):  # SAME-S: fixed chunks, linear by construction
            audio = sa3_same.decode(parts.vae, latent, draw)[..., :count]
        else:
            audio = sa3_decode.decode(parts.vae, latent, samples=count, mask_noise=draw)
        result: FloatAudio = audio[0].cpu().float().numpy()
        if result.shape[-1] != count:
            raise GenerationError(
                f"{self.info.name} returned {result.shape[-1]} samples, expected {count}"
            )
        if not np.isfinite(result).all():
            raise GenerationError(
                f"{self.info.name} produced non-finite samples ({self.dtype_name}); "
                "try STABLE_AUDIO_DTYPE=float32"
            )
        return result


def _encode(vae: Any, audio: Any) -> Any:
    """Audio (batch, channels, samples) -> SAME latents, with the chunks SAME-S needs."""
    if sa3_same.uses_chunks(vae):
        return sa3_same.encode(vae, audio)
    return vae.encode(audio).latents


def _float32() -> Any:
    import torch

    return torch.float32


def _dpmpp_step(x: Any, denoised: Any, previous: Any, sigmas: Sequence[float], i: int) -> Any:
    """One DPM-Solver++(2M) step of a flow (x = (1 - t) x0 + t noise), as stable-audio-tools'."""
    t, following = sigmas[i], sigmas[i + 1]
    if following == 0:
        return denoised

    def lam(s: float) -> float:  # log-SNR; +inf at s = 0, -inf at s = 1
        return math.log((1 - s) / s) if 0 < s < 1 else (math.inf if s <= 0 else -math.inf)

    h = lam(following) - lam(t)
    factor = -math.expm1(-h)  # 1 - e^-h, 1 when h is infinite (from pure noise)
    if previous is not None and math.isfinite(h):
        r = (lam(t) - lam(sigmas[i - 1])) / h
        if math.isfinite(r) and r > 0:
            denoised = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
    return (following / t) * x + (1 - following) * factor * denoised


def load(path: Path, name: str, metadata: dict[str, Any], options: LoadOptions) -> SA3Engine:
    """The family's loader (``engine.load_engine``)."""
    return SA3Engine.load(path, name, metadata, options)
