"""GPU mode: stable-audio-open-1.0- and -small-shaped models with random weights, three ways;
Stable Audio 3 small and medium shapes, ours vs diffusers' ``StableAudio3Pipeline`` (``sa3.py``).

No weights are needed: each model is built from its published configuration with seeded random
weights (a T5 of ``t5-base``'s shape included), so the cost per step is the real model's.
Compared on one full window: our engine, stable-audio-tools' stock ``generate_diffusion_cond``
(half precision, as its scripts run it) and diffusers' ``StableAudioPipeline`` (open-1.0 only:
diffusers has no rectified-flow / ping-pong pipeline for open-small). The achieved model FLOP/s
(counted with torch's FlopCounterMode: every diffusion step with CFG, and the decode) is given
as a fraction of the device's measured dense matmul peak (bfloat16 on a GPU).

Without a GPU (or with ``tiny``) the same code runs on the CPU with the shapes scaled down, so
this path is exercised by the test suite and cannot rot; those numbers say nothing about speed.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, quiet

_OOBLECK = {"c_mults": [1, 2, 4, 8, 16], "strides": [2, 4, 4, 8, 8], "use_snake": True}


def _pretransform(channels: int, latent: int) -> dict[str, Any]:
    return {
        "type": "autoencoder",
        "iterate_batch": True,
        "config": {
            "encoder": {
                "type": "oobleck",
                "config": {
                    **_OOBLECK,
                    "in_channels": 2,
                    "channels": channels,
                    "latent_dim": 2 * latent,
                },
            },
            "decoder": {
                "type": "oobleck",
                "config": {
                    **_OOBLECK,
                    "out_channels": 2,
                    "channels": channels,
                    "latent_dim": latent,
                    "final_tanh": False,
                },
            },
            "bottleneck": {"type": "vae"},
            "latent_dim": latent,
            "downsampling_ratio": 2048,
            "io_channels": 2,
        },
    }


def _number(key: str, max_val: int) -> dict[str, Any]:
    return {"id": key, "type": "number", "config": {"min_val": 0, "max_val": max_val}}


# stable-audio-open-1.0: stable-audio-tools' stable_audio_2_0 config with the T5 prompt encoder.
OPEN_1_0: dict[str, Any] = {
    "model_type": "diffusion_cond",
    "sample_size": 2097152,
    "sample_rate": 44100,
    "audio_channels": 2,
    "model": {
        "pretransform": _pretransform(channels=128, latent=64),
        "conditioning": {
            "configs": [
                {
                    "id": "prompt",
                    "type": "t5",
                    "config": {"t5_model_name": "t5-base", "max_length": 128},
                },
                _number("seconds_start", 512),
                _number("seconds_total", 512),
            ],
            "cond_dim": 768,
        },
        "diffusion": {
            "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
            "global_cond_ids": ["seconds_start", "seconds_total"],
            "type": "dit",
            "config": {
                "io_channels": 64,
                "embed_dim": 1536,
                "depth": 24,
                "num_heads": 24,
                "cond_token_dim": 768,
                "global_cond_dim": 1536,
                "project_cond_tokens": False,
                "transformer_type": "continuous_transformer",
            },
        },
        "io_channels": 64,
    },
}

# stable-audio-open-small: 11.9 s window, seconds_total only, rectified flow (rf_denoiser),
# DiT 1024 x 16 layers, 8 heads, LayerNorm'd q/k.
SMALL: dict[str, Any] = {
    "model_type": "diffusion_cond",
    "sample_size": 524288,
    "sample_rate": 44100,
    "audio_channels": 2,
    "model": {
        "pretransform": _pretransform(channels=128, latent=64),
        "conditioning": {
            "configs": [
                {
                    "id": "prompt",
                    "type": "t5",
                    "config": {"t5_model_name": "t5-base", "max_length": 64},
                },
                _number("seconds_total", 256),
            ],
            "cond_dim": 768,
        },
        "diffusion": {
            "cross_attention_cond_ids": ["prompt", "seconds_total"],
            "global_cond_ids": ["seconds_total"],
            "diffusion_objective": "rf_denoiser",
            "type": "dit",
            "config": {
                "io_channels": 64,
                "embed_dim": 1024,
                "depth": 16,
                "num_heads": 8,
                "cond_token_dim": 768,
                "global_cond_dim": 768,
                "transformer_type": "continuous_transformer",
                "attn_kwargs": {"qk_norm": "ln"},
            },
        },
        "io_channels": 64,
    },
}

T5_BASE = {
    "hub_name": "t5-base",
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "relative_attention_num_buckets": 32,
}
# The demo's text encoder (stable-audio-tools accepts only its listed T5 names; t5-small: 512).
T5_TINY = {
    "hub_name": "t5-small",
    "d_model": 512,
    "d_kv": 32,
    "d_ff": 128,
    "num_layers": 1,
    "num_heads": 2,
    "relative_attention_num_buckets": 8,
}
MODELS = {
    "open-1.0": {"config": OPEN_1_0, "steps": 100, "cfg_scale": 7.0, "sampler": "dpmpp-3m-sde"},
    "small": {"config": SMALL, "steps": 8, "cfg_scale": 1.0, "sampler": "pingpong"},
}


def tiny(config: dict[str, Any], frames: int | None = None) -> dict[str, Any]:
    """The same architecture scaled down to run in seconds on a CPU."""
    config = copy.deepcopy(config)
    model = config["model"]
    model["pretransform"] = _pretransform(channels=8, latent=16)
    model["io_channels"] = 16
    cond = model["conditioning"]
    cond["cond_dim"] = 64
    for item in cond["configs"]:
        if item["type"] == "t5":
            item["config"]["t5_model_name"] = T5_TINY["hub_name"]
    dit = model["diffusion"]["config"]
    dit.update(io_channels=16, embed_dim=64, depth=2, num_heads=2, cond_token_dim=64)
    dit["global_cond_dim"] = 64 * len(model["diffusion"]["global_cond_ids"])
    if frames is not None:
        config["sample_size"] = frames * 2048
    return config


def _text_encoder(spec: dict[str, Any], workdir: Path) -> Path:
    from stable_audio_bento.engine.sao.demo import _build_text_encoder
    from stable_audio_bento.store.hub_cache import link_text_encoder, prepare_offline_hub

    recipe = json.loads((REPO_ROOT / "models" / "demo" / "recipe.json").read_text())
    folder = workdir / spec["hub_name"]
    _build_text_encoder({**recipe, "text_encoder": spec}, folder)
    link_text_encoder(prepare_offline_hub(), spec["hub_name"], folder)
    return folder


def _random_model(config: dict[str, Any]) -> Any:
    import torch
    from stable_audio_tools.models.factory import create_model_from_config

    with torch.random.fork_rng(), quiet():
        torch.manual_seed(0)
        model = create_model_from_config(config)
        with torch.no_grad():  # zero-initialised output layers would make the DiT a constant
            for param in model.parameters():
                if param.ndim >= 2 and not param.any():
                    param.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


def _diffusers_pipeline(config: dict[str, Any], encoder_dir: Path, device: str, dtype: Any) -> Any:
    """diffusers' StableAudioPipeline with the same shapes, built from configs (no hub)."""
    import torch
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
    )
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import AutoTokenizer, T5EncoderModel

    model = config["model"]
    dit = model["diffusion"]["config"]
    decoder = model["pretransform"]["config"]["decoder"]["config"]
    cond_dim = model["conditioning"]["cond_dim"]
    prompt = next(c for c in model["conditioning"]["configs"] if c["type"] == "t5")
    with torch.random.fork_rng(), quiet():
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        tokenizer.model_max_length = prompt["config"]["max_length"]
        text_encoder = T5EncoderModel.from_pretrained(encoder_dir)
        pipe = StableAudioPipeline(
            vae=AutoencoderOobleck(
                encoder_hidden_size=decoder["channels"],
                decoder_channels=decoder["channels"],
                decoder_input_channels=decoder["latent_dim"],
                audio_channels=2,
                sampling_rate=config["sample_rate"],
            ),
            text_encoder=text_encoder,
            projection_model=StableAudioProjectionModel(
                text_encoder_dim=text_encoder.config.d_model,
                conditioning_dim=cond_dim,
                min_value=0,
                max_value=512,
            ),
            tokenizer=tokenizer,
            transformer=StableAudioDiTModel(
                sample_size=config["sample_size"] // 2048,
                in_channels=dit["io_channels"],
                num_layers=dit["depth"],
                attention_head_dim=dit["embed_dim"] // dit["num_heads"],
                num_attention_heads=dit["num_heads"],
                num_key_value_attention_heads=max(1, dit["num_heads"] // 2),
                out_channels=dit["io_channels"],
                cross_attention_dim=cond_dim,
                global_states_input_dim=dit["global_cond_dim"],
                cross_attention_input_dim=cond_dim,
            ),
            scheduler=CosineDPMSolverMultistepScheduler(
                sigma_min=0.3, sigma_max=500, solver_order=2, prediction_type="v_prediction"
            ),
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _sig(value: float) -> float:
    """Three significant digits (tiny CPU runs count FLOPs in the millions, GPUs in the 1e14s)."""
    return float(f"{value:.3g}")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _seconds(run: Any, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        began = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - began)
    return min(times)


def matmul_peak(device: str) -> dict[str, Any]:
    """Dense matmul FLOP/s of this device: bfloat16 on a GPU, float32 on a CPU."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n, iterations = (8192, 50) if device == "cuda" else (1024, 10)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = _seconds(lambda: [a @ b for _ in range(iterations)], device, 3)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "tflops": _sig(2 * n**3 * iterations / seconds / 1e12),
    }


def model_flops(engine: Any, request: Any, sampling: Any) -> dict[str, float]:
    """FLOPs of one diffusion step (CFG included when cfg != 1) and of the window's decode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        cond = engine.conditioning([request])
        frames = engine.info.sample_size // engine.info.latent_downsampling
        x = torch.randn(
            1, engine.model.io_channels, frames, device=engine.device, dtype=engine.dtype
        )
        t = torch.full((1,), 0.5, device=engine.device, dtype=engine.dtype)
        with FlopCounterMode(display=False) as step:
            engine.model.model(
                x, t, **cond, cfg_scale=sampling.cfg_scale, batch_cfg=True, rescale_cfg=True
            )
        latent = torch.randn(
            1, engine.model.io_channels, frames, device=engine.device, dtype=engine.dtype
        )
        with FlopCounterMode(display=False) as decode:
            engine.model.pretransform.decode(latent)
    return {"step": float(step.get_total_flops()), "decode": float(decode.get_total_flops())}


def run_model(
    name: str, device: str, use_tiny: bool, steps: int | None, frames: int | None, repeats: int
) -> dict[str, Any]:
    import torch

    from stable_audio_bento.engine import (
        EngineRequest,
        SamplingParams,
        StableAudioEngine,
        dtype_candidates,
    )
    from stable_audio_bento.engine.sao.config import info_from_config

    from .engine import stock_generate

    spec = MODELS[name]
    config = tiny(spec["config"], frames) if use_tiny else spec["config"]
    dtype_name = dtype_candidates(device, half=True)[0]
    dtype = getattr(torch, dtype_name)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        encoder_dir = _text_encoder(T5_TINY if use_tiny else T5_BASE, Path(tmp))
        model = _random_model(config).to(dtype=dtype).to(device)
        info = info_from_config(name, config)
        engine = StableAudioEngine(model, info, device, dtype)
        sampling = SamplingParams(steps or spec["steps"], spec["cfg_scale"], spec["sampler"])
        request = EngineRequest(
            prompt="a warm analog synth pad", seed=1, seconds_total=info.window_seconds
        )
        flops = model_flops(engine, request, sampling)
        total_flops = sampling.steps * flops["step"] + flops["decode"]

        engine.generate(
            [request], SamplingParams(2, sampling.cfg_scale, sampling.sampler)
        )  # warm-up
        timings = {"ours": _seconds(lambda: engine.generate([request], sampling), device, repeats)}
        stock_generate(engine, [request], SamplingParams(2, sampling.cfg_scale, sampling.sampler))
        timings["stock"] = _seconds(
            lambda: stock_generate(engine, [request], sampling), device, repeats
        )
        if info.objective == "v":
            pipe = _diffusers_pipeline(config, encoder_dir, device, dtype)
            generator = torch.Generator(device=device)

            def diffusers_run(count: int) -> Any:
                return pipe(
                    request.prompt,
                    audio_end_in_s=info.window_seconds,
                    num_inference_steps=count,
                    guidance_scale=sampling.cfg_scale,
                    generator=generator.manual_seed(1),
                ).audios

            with quiet():
                diffusers_run(2)
                timings["diffusers"] = _seconds(
                    lambda: diffusers_run(sampling.steps), device, repeats
                )
    return {
        "model": name,
        "shape": "tiny" if use_tiny else "full",
        "dtype": dtype_name,
        "steps": sampling.steps,
        "cfg_scale": sampling.cfg_scale,
        "sampler": sampling.sampler,
        "audio_seconds": round(info.window_seconds, 2),
        "tflop_per_step": _sig(flops["step"] / 1e12),
        "tflop_decode": _sig(flops["decode"] / 1e12),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "achieved_tflops": {k: _sig(total_flops / v / 1e12) for k, v in timings.items()},
    }


def run(
    tiny_shapes: bool | None = None,
    steps: int | None = None,
    frames: int | None = None,
    repeats: int = 2,
    models: tuple[str, ...] = ("open-1.0", "small"),
    sa3_lengths: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Every model shape, three ways; then the Stable Audio 3 small and medium shapes, ours vs
    diffusers' pipeline (``sa3_lengths`` seconds; default 10 / 120 / 380 on a GPU, 2 / 5 on a
    CPU, where stock's quadratic decode would not fit at those lengths). ``tiny_shapes`` None:
    tiny unless a GPU is present."""
    import torch

    from . import sa3

    device = "cuda" if torch.cuda.is_available() else "cpu"
    use_tiny = device != "cuda" if tiny_shapes is None else tiny_shapes
    peak = matmul_peak(device)
    rows = []
    for name in models:
        rows.append(run_model(name, device, use_tiny, steps, frames, repeats))
        if device == "cuda":
            torch.cuda.empty_cache()
    for row in rows:
        row["fraction_of_peak"] = {
            k: _sig(v / peak["tflops"]) for k, v in row["achieved_tflops"].items()
        }
    lengths = sa3_lengths or ((10.0, 120.0, 380.0) if device == "cuda" else (2.0, 5.0))
    sa3_rows = sa3.gpu_rows(device, use_tiny, lengths)
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return {"device": device_name, "peak": peak, "models": rows, "sa3": sa3_rows}


def render(results: dict[str, Any]) -> str:
    from .common import table

    peak = results["peak"]
    rows = []
    for r in results["models"]:
        for impl in ("ours", "stock", "diffusers"):
            if impl not in r["seconds"]:
                rows.append([r["model"], r["shape"], impl, "n/a", "", "", ""])
                continue
            rows.append(
                [
                    r["model"],
                    r["shape"],
                    impl,
                    r["seconds"][impl],
                    f"{r['seconds']['stock'] / r['seconds'][impl]:.2f}x",
                    r["achieved_tflops"][impl],
                    f"{100 * r['fraction_of_peak'][impl]:.1f}%",
                ]
            )
    first = results["models"][0]
    out = [
        f"### GPU mode on {results['device']} ({first['shape']} shapes, {first['dtype']})",
        "",
        "Seconds to generate one full window: "
        + "; ".join(
            f"{r['model']} {r['audio_seconds']:g} s at {r['steps']} steps, cfg {r['cfg_scale']:g}, "
            f"{r['sampler']}"
            for r in results["models"]
        )
        + f". Measured matmul peak: {peak['tflops']:.3g} TFLOP/s ({peak['dtype']}).",
        "",
        table(
            ["model", "shape", "implementation", "seconds", "vs stock", "TFLOP/s", "of peak"], rows
        ),
        "",
        "TFLOP per diffusion step (CFG included): "
        + ", ".join(f"{r['model']} {r['tflop_per_step']:g}" for r in results["models"])
        + "; decode of the window: "
        + ", ".join(f"{r['model']} {r['tflop_decode']:g}" for r in results["models"])
        + ".",
        "",
    ]
    if results.get("sa3"):
        from . import sa3

        out.append(sa3.render_gpu(results["sa3"]))
    return "\n".join(out)
