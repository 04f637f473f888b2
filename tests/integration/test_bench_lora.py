"""The LoRA benchmark, run at the tiny shape so that its code path cannot rot."""

from __future__ import annotations

import pytest

from bench import lora

pytestmark = pytest.mark.integration


def test_the_lora_bench_measures_every_case() -> None:
    rows, extra = lora.run(rounds=1, tiny=True)
    cases = [r["case"] for r in rows]
    assert cases[0] == "no LoRA" and len(cases) == len(set(cases)) == 10
    assert all(r["cpu_s"] > 0 and r["wall_s"] > 0 for r in rows)
    assert rows[0]["per_request_vs_no_lora"] == 1.0
    assert extra["build_s"]["1"] > 0 and extra["swap_ms"]["3"] >= 0
    # Three LoRAs on the same layers hold as much as one: one adapted copy per layer.
    assert extra["merged_bytes"]["1"] == extra["merged_bytes"]["3"] > 0
    text = lora.table(rows, extra)
    assert text.count("\n| ") == 12 and "per request vs no LoRA" in text
