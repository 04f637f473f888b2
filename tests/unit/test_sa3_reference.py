"""The reference generate()'s arithmetic around the DiT (``engine/sa3_reference.py``) and the
output levels, on hand-checked numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stable_audio_bento.audio import set_level
from stable_audio_bento.engine import EngineRequest
from stable_audio_bento.engine.info import ModelInfo
from stable_audio_bento.engine.sa3 import reference as ref

RATE, RATIO = 44100, 4096


def sa3_info(align: int) -> ModelInfo:
    return ModelInfo(
        name="x",
        sample_rate=RATE,
        channels=2,
        sample_size=120 * RATE,
        latent_downsampling=RATIO,
        objective="rf_denoiser",
        default_steps=8,
        default_cfg_scale=1.0,
        default_sampler="pingpong",
        fixed_window=False,
        latent_align=align,
    )


@pytest.mark.parametrize(
    ("seconds", "padding", "frames", "valid"),
    [
        # int(9 * 44100) = 396900 samples -> 97 frames of 4096 -> 98 (even); 33 own + 64 padding
        (3.0, 6.0, 98, 97),
        (10.0, 0.0, 108, 108),  # 107.67 -> 108, already even
        (11.0, 0.0, 120, 119),  # 118.43 -> 119 -> 120
        (0.5, 6.0, 70, 70),  # int(6.5 * 44100) / 4096 = 69.98 -> 70 (even); 6 + 64
    ],
)
def test_latent_and_valid_lengths_are_the_references(
    seconds: float, padding: float, frames: int, valid: int
) -> None:
    request = EngineRequest("x", 0, seconds, padding_seconds=padding)
    assert sa3_info(2).latent_frames(request) == frames
    assert ref.valid_frames(seconds, padding, RATE, RATIO, frames) == min(valid, frames)
    # Without an alignment the plain ceiling (Stable Audio Open's variable-length rule).
    assert sa3_info(0).latent_frames(request) == -(-round((seconds + padding) * RATE) // RATIO)


def test_latent_alignment_from_the_vae_config() -> None:
    assert ref.latent_align({"sa3_bento": {"latent_align": 2}}) == 2
    assert ref.latent_align({"encoder_strides": [16]}) == 2  # chunk 32 (unset) // 16
    assert ref.latent_align({"encoder_strides": [4], "sa3_bento": {"chunk_size": 8}}) == 2


def test_padding_mask_and_keep_mask() -> None:
    assert ref.padding_mask([5, 5], 5, "cpu") is None
    mask = ref.padding_mask([3, 5], 5, "cpu")
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    # Frame i follows the source where sample i * 4096 is before int(seconds * rate) and
    # outside every region.
    keep = ref.keep_mask([(0.1, 0.2)], 0.5, RATE, RATIO, 8)
    samples = np.arange(8) * RATIO
    expected = (samples < int(0.5 * RATE)) & ~((samples >= 4410) & (samples < 8820))
    assert keep.tolist() == [expected.astype(float).tolist()]


def test_guidance_is_cfg_on_clean_estimates_with_apg_over_valid_frames() -> None:
    gen = torch.Generator().manual_seed(0)
    x, cond, uncond = (torch.randn(2, 4, 6, generator=gen) for _ in range(3))
    sigma, scale = 0.7, 5.0
    plain = ref.guide(x, sigma, cond, uncond, scale, 0.0)
    # apg_scale 0: plain CFG, which on a flow is also CFG on the velocities.
    assert torch.allclose(plain, uncond + scale * (cond - uncond), atol=1e-5)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    guided = ref.guide(x, sigma, cond, uncond, scale, 1.0, mask)
    cond_x0 = x - sigma * cond
    guidance = (x - sigma * guided) - cond_x0
    # No guidance on padding frames; on the valid ones orthogonal to the conditioned estimate.
    assert guidance[0, :, 4:].abs().max() == 0
    for item, frames in ((0, 4), (1, 6)):
        dot = (guidance[item, :, :frames] * cond_x0[item, :, :frames]).sum()
        assert abs(float(dot)) < 1e-4 * float(guidance[item].norm() * cond_x0[item].norm())
    half = ref.guide(x, sigma, cond, uncond, scale, 0.5, mask)
    assert torch.allclose(
        x - sigma * half - cond_x0,
        0.5 * guidance + 0.5 * ((x - sigma * plain) - cond_x0),
        atol=1e-5,
    )


def test_output_levels() -> None:
    quiet = np.array([[0.1, -0.25]], dtype=np.float32)
    loud = np.array([[0.5, -1.25]], dtype=np.float32)
    assert np.array_equal(set_level(quiet, "attenuate"), quiet)  # never boosted
    assert np.allclose(set_level(loud, "attenuate"), loud / 1.25)
    assert np.array_equal(set_level(loud, "clamp"), np.array([[0.5, -1.0]], dtype=np.float32))
    assert float(np.abs(set_level(quiet, "peak")).max()) == pytest.approx(0.98)
    with pytest.raises(ValueError, match="normalize must be one of"):
        set_level(quiet, "loud")
