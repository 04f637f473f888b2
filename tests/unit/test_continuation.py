"""Continuation windows and the inpainting splice, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from stable_audio_bento.engine import EngineRequest
from stable_audio_bento.engine.splice import keep_mask, region_weights, splice, v_sigma
from stable_audio_bento.pipeline.continuation import Window, extend, plan_windows, window_request

RATE = 1000  # a small rate keeps the arrays small; nothing here depends on it


@pytest.mark.parametrize(
    ("have", "target", "window", "expected"),
    [
        (10, 20, 47, [Window(10, 10)]),  # fits: all of the clip is context
        (10, 100, 47, [Window(10, 37), Window(23, 24), Window(23, 24), Window(42, 5)]),
        (60, 70, 47, [Window(37, 10)]),  # a clip longer than the window: its end is context
        (5, 6, 8, [Window(5, 1)]),
    ],
)
def test_plan_windows(have: int, target: int, window: int, expected: list[Window]) -> None:
    windows = plan_windows(have, target, window)
    assert windows == expected
    assert have + sum(w.new for w in windows) == target
    assert all(w.total <= window and w.context >= min(have, window // 2) for w in windows)


def test_window_request_regions_start_a_crossfade_before_the_join() -> None:
    base = EngineRequest(prompt="p", seed=4, seconds_total=1.0)
    audio = np.ones((2, 3000), np.float32)
    request = window_request(base, audio, Window(2000, 1000), RATE, 2)
    assert request.seed == 6
    assert request.init_audio.shape == (2, 3000)
    assert request.init_audio[:, 2000:].max() == 0.0
    assert request.inpaint_regions == ((1.98, 3.0),)  # 20 ms before the end of the context


def test_extend_keeps_the_clip_and_joins_with_the_crossfade() -> None:
    clip = np.full((2, 1500), 0.5, np.float32)
    calls: list[EngineRequest] = []

    def generate(request: EngineRequest, _progress: object) -> np.ndarray:
        calls.append(request)
        out = splice(np.full(request.init_audio.shape, -0.25, np.float32), request, RATE)
        return out

    progress: list[tuple[int, int]] = []
    out, windows = extend(
        clip,
        4000,
        2000,
        EngineRequest("p", 1, 1.0),
        RATE,
        generate,
        lambda s, t: progress.append((s, t)),
        3,
    )
    assert windows == len(calls) == 3
    assert out.shape == (2, 4000)
    np.testing.assert_array_equal(out[:, :1480], clip[:, :1480])  # all but the last 20 ms
    # Mid-fade: the new part (levelled to the clip's 0.5: -0.5) weighs 11/21 there.
    assert float(out[0, 1490]) == pytest.approx(0.5 * (1 - 11 / 21) - 0.5 * 11 / 21, abs=1e-6)
    assert out[:, 1500:].min() < 0


def test_region_weights_ramp_inside_the_regions_only() -> None:
    request = EngineRequest("p", 0, 1.0, inpaint_regions=((0.2, 0.5), (0.9, 1.0)))
    w = region_weights(request, RATE, 1000)
    assert (w[:200] == 0).all() and (w[500:900] == 0).all()
    assert (w[220:480] == 1).all() and (w[920:] == 1).all()  # no fade out at the very end
    assert 0 < w[205] < 1 and 0 < w[495] < 1


def test_keep_mask_frames() -> None:
    audio = np.ones((2, 8 * 100), np.float32)
    request = EngineRequest("p", 0, 0.8, init_audio=audio, inpaint_regions=((0.25, 0.45),))
    mask = keep_mask(request, RATE, 100, 10).numpy()[0]
    # Frames of 0.1 s: 2..4 touch the region; 8 and 9 lie past the source (free).
    assert mask.tolist() == [1, 1, 0, 0, 0, 1, 1, 1, 0, 0]


def test_splice_keeps_the_source_and_levels_the_new_part() -> None:
    source = np.full((1, 1000), 0.1, np.float32)
    request = EngineRequest("p", 0, 1.0, init_audio=source, inpaint_regions=((0.4, 0.6),))
    generated = np.full((1, 1000), 2.0, np.float32)  # far too loud, as a random decoder is
    out = splice(generated, request, RATE)
    inside = np.zeros(1000, bool)
    inside[400:600] = True
    np.testing.assert_array_equal(out[:, ~inside], source[:, ~inside])
    assert out[0, 500] == pytest.approx(0.1)  # brought to the source's level
    loud = splice(
        np.r_[np.full(500, 0.01), np.full(500, 5.0)][None].astype(np.float32), request, RATE
    )
    assert float(np.abs(loud).max()) <= 0.98 + 1e-6
    np.testing.assert_array_equal(loud[:, ~inside], source[:, ~inside])


def test_v_sigma_is_monotonic_and_full_noise_at_one() -> None:
    sigmas = [v_sigma(x, 500.0) for x in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)]
    assert sigmas == sorted(sigmas) and sigmas[-1] == 500.0 and sigmas[0] == 1e-3
