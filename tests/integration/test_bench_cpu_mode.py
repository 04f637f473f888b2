"""The benchmark's CPU section at tiny shapes, so that its code path cannot rot.

The same functions as ``python -m bench --only cpu``: open-small written as a store entry and
loaded by the engine's loader in each mode, stock ``generate_diffusion_cond``, SA3-small in our
engine and diffusers' ``StableAudio3Pipeline``; only the shapes, steps and lengths are smaller.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import cpu
from stable_audio_bento.engine.precision import native_bfloat16

FAST = "bfloat16" if native_bfloat16() else "exact"


def test_cpu_section_at_tiny_size(tmp_path: Path) -> None:
    results = cpu.run(
        tiny_shapes=True,
        steps=2,
        frames=32,
        modes=("float32", FAST),
        profile_dir=tmp_path,
        sa3=cpu.sa3_available(),
    )
    assert results["peaks"]["float32"] > 0 and results["peaks"]["bfloat16"] > 0
    assert results["threads"] >= 1 and results["cores"] >= 1
    rows = {(r["model"], r["mode"]): r for r in results["rows"]}
    models = {"open-small", "sa3-small"} if cpu.sa3_available() else {"open-small"}
    for model in models:
        # SA3 has no compiled decoder, so no exact mode: its fast row is bfloat16 (or float32).
        mode = FAST if model == "open-small" or FAST == "bfloat16" else "float32"
        stock, ours, fast = (rows[model, m] for m in ("stock", "float32", mode))
        assert stock["speedup"] == 1.0 and stock["precision"] == "float32"
        for row in (stock, ours, fast):
            for key in ("model", "mode", "seconds", "stock_seconds", "speedup"):
                assert key in row
            assert math.isfinite(row["seconds"]) and row["seconds"] > 0
            assert row["stock_seconds"] == stock["seconds"]
            # Seconds are rounded to a few significant figures while ratios come from the
            # unrounded ones: at tiny shapes (hundredths of a second) that is a few percent.
            assert row["speedup"] == pytest.approx(stock["seconds"] / row["seconds"], rel=0.08)
            assert row["rtf"] == pytest.approx(row["seconds"] / row["audio_seconds"], rel=0.08)
            assert row["peak_rss_mib"] > 0 and row["tflops"] > 0 and row["fraction_of_peak"] > 0
        assert ours["snr_db"] == 999.0  # the reference itself
        assert fast["precision"] == mode
        assert fast["snr_db"] >= 12  # within the load check's default bound of float32
        for row in (ours, fast):  # one cProfile summary per mode, its top entries in the row
            profile = Path(row["profile"])
            assert profile.is_file() and "tottime" in profile.read_text()
            assert row["profile_top"] and all(" s x" in line for line in row["profile_top"])
    assert rows["open-small", "float32"]["audio_seconds"] == pytest.approx(32 * 2048 / 44100, 0.01)
    table = cpu.render(results)
    assert "| open-small | 1.49 | stock | float32 |" in table
    assert f"| open-small | 1.49 | {FAST} |" in table
