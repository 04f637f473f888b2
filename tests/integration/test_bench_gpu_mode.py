"""The benchmark's GPU mode, run on the CPU at tiny size so that its code path cannot rot.

The same functions build the open-1.0- and small-shaped models, our engine, stock
``generate_diffusion_cond`` and diffusers' ``StableAudioPipeline`` as on a GPU; only the
shapes, the steps and the window are scaled down here.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench import gpu


def test_the_full_shapes_are_the_published_models() -> None:
    # Diffusion transformer parameters, built on the meta device (no memory, no time):
    # stable-audio-open-1.0's DiT has 1.057 B, open-small's 341 M.
    from stable_audio_tools.models.dit import DiffusionTransformer

    counts = {}
    for name, spec in gpu.MODELS.items():
        with torch.device("meta"):
            dit = DiffusionTransformer(**spec["config"]["model"]["diffusion"]["config"])
        counts[name] = sum(p.numel() for p in dit.parameters())
    assert counts["open-1.0"] == pytest.approx(1.057e9, rel=1e-3)
    assert counts["small"] == pytest.approx(0.341e9, rel=1e-3)
    assert gpu.OPEN_1_0["sample_size"] / gpu.OPEN_1_0["sample_rate"] == pytest.approx(47.55, 1e-3)


@pytest.mark.parametrize(
    ("name", "tokens", "rows", "tflop"),
    [
        ("open-1.0", 128 + 2, 2, 4.544),  # T5 tokens + two seconds tokens; CFG doubles the batch
        ("small", 64 + 1, 1, 0.1653),  # cfg 1: no doubled batch
    ],
)
def test_one_full_step_costs_what_the_real_model_does(
    name: str, tokens: int, rows: int, tflop: float
) -> None:
    # Counted on the meta device (shapes only): open-1.0 is about 4.5 TFLOP per step with CFG.
    from stable_audio_tools.models.dit import DiffusionTransformer
    from torch.utils.flop_counter import FlopCounterMode

    config = gpu.MODELS[name]["config"]
    dit_config = config["model"]["diffusion"]["config"]
    frames = config["sample_size"] // 2048
    with torch.device("meta"):
        dit = DiffusionTransformer(**dit_config)
        with FlopCounterMode(display=False) as counter:
            dit(
                torch.randn(rows, dit_config["io_channels"], frames),
                torch.rand(rows),
                cross_attn_cond=torch.randn(rows, tokens, dit_config["cond_token_dim"]),
                cross_attn_cond_mask=torch.ones(rows, tokens, dtype=torch.bool),
                global_embed=torch.randn(rows, dit_config["global_cond_dim"]),
                cfg_scale=1.0,  # CFG's own path reads a tensor value, which meta tensors lack
            )
    assert counter.get_total_flops() / 1e12 == pytest.approx(tflop, rel=1e-3)


def test_tiny_shapes_keep_the_architecture() -> None:
    for spec in gpu.MODELS.values():
        full, small = spec["config"], gpu.tiny(spec["config"], frames=32)
        assert small["sample_size"] == 32 * 2048
        for key in ("cross_attention_cond_ids", "global_cond_ids", "type"):
            assert small["model"]["diffusion"][key] == full["model"]["diffusion"][key]
        objective = full["model"]["diffusion"].get("diffusion_objective")
        assert small["model"]["diffusion"].get("diffusion_objective") == objective
        ids = [c["id"] for c in small["model"]["conditioning"]["configs"]]
        assert ids == [c["id"] for c in full["model"]["conditioning"]["configs"]]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="the tiny CPU run is for machines without a GPU"
)
def test_gpu_mode_runs_on_the_cpu_at_tiny_size() -> None:
    results = gpu.run(tiny_shapes=True, steps=2, frames=32, repeats=1)
    assert results["device"] == "cpu"
    assert results["peak"]["tflops"] > 0
    rows = {r["model"]: r for r in results["models"]}
    assert set(rows["open-1.0"]["seconds"]) == {"ours", "stock", "diffusers"}
    assert set(rows["small"]["seconds"]) == {"ours", "stock"}  # diffusers has no open-small
    for row in rows.values():
        assert (row["shape"], row["dtype"], row["steps"]) == ("tiny", "float32", 2)
        assert row["audio_seconds"] == pytest.approx(32 * 2048 / 44100, abs=0.01)
        assert row["tflop_per_step"] > 0 and row["tflop_decode"] > 0
        for seconds in row["seconds"].values():
            assert math.isfinite(seconds) and seconds > 0
        assert all(v > 0 for v in row["fraction_of_peak"].values())
    assert rows["open-1.0"]["sampler"] == "dpmpp-3m-sde"
    assert (rows["small"]["sampler"], rows["small"]["cfg_scale"]) == ("pingpong", 1.0)
    table = gpu.render(results)
    assert "| open-1.0 | tiny | diffusers |" in table
    assert "| small | tiny | diffusers | n/a |" in table
    # Stable Audio 3: both shapes, both implementations, at each length.
    sa3 = {(r["model"], r["audio_seconds"]): r for r in results["sa3"]}
    assert set(sa3) == {(m, s) for m in ("sa3-small", "sa3-medium") for s in (2.0, 5.0)}
    for row in sa3.values():
        assert row["shape"] == "tiny"
        assert all(isinstance(v, float) and v > 0 for v in row["seconds"].values())
        assert set(row["seconds"]) == {"ours", "stock"}
    assert "| sa3-medium | tiny | 5 | stock |" in table


def test_the_sa3_shapes_are_the_published_models() -> None:
    """The DiT's text-to-audio parameters (all but the inpainting projections): small 433 M,
    medium 1.4 B; the autoencoders SAME-S 107.5 M and SAME-L 852 M. Meta device: no memory."""
    from diffusers import AutoencoderSAME, StableAudio3DiTModel

    from bench import sa3

    def millions(module: torch.nn.Module, without: str = "to_local_embed") -> float:
        return sum(p.numel() for n, p in module.named_parameters() if without not in n) / 1e6

    with torch.device("meta"):
        dits = {k: StableAudio3DiTModel(**v["transformer"]) for k, v in sa3.SHAPES.items()}
        vaes = {k: AutoencoderSAME(**v["vae"]) for k, v in sa3.SHAPES.items()}
    assert round(millions(dits["small"])) == 433
    assert round(millions(dits["medium"]) / 100) / 10 == 1.4
    assert round(millions(vaes["small"]), 1) == 107.5
    assert round(millions(vaes["medium"])) == 852
    assert (sa3.SHAPES["small"]["max_seconds"], sa3.SHAPES["medium"]["max_seconds"]) == (120, 380)
