"""``python -m bench.lora``: what LoRAs cost a request on the Stable Audio 3 small shape.

The full small shape with seeded random weights (``bench.sa3.build``), float32 on the CPU, one
5 s request at 8 steps. Plain rank-16 LoRAs on every Linear / Conv1d layer the reference
adapts in the DiT and the duration embedder. Rows: a request with no LoRA and with 1 and 3
LoRAs whose adapted weights are cached (the batch only swaps them in); the time to build a
set's adapted weights (the first request with a new set or strength, or every switch once the
cache is full) and to swap a cached set in and out (every switch between cached sets).
Prints a markdown table; ``--write`` puts it between the LoRA markers of RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .common import load_average, quiet

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- bench:lora:begin -->", "<!-- bench:lora:end -->"
RANK = 16
SECONDS = 5.0
BLOCK_LAYERS = (
    "self_attn.to_qkv",
    "self_attn.to_out",
    "cross_attn.to_q",
    "cross_attn.to_kv",
    "cross_attn.to_out",
    "ff.ff.0.proj",
    "ff.ff.2",
    "to_local_embed.0",
    "to_local_embed.2",
)
TOP_LAYERS = (
    "to_timestep_embed.0",
    "to_timestep_embed.2",
    "to_cond_embed.0",
    "to_cond_embed.2",
    "to_global_embed.0",
    "to_global_embed.2",
    "transformer.project_in",
    "transformer.project_out",
    "preprocess_conv",
    "postprocess_conv",
)


def adapter(engine: Any, tag: str, seed: int) -> Any:
    """A plain LoRA for every adaptable layer of ``engine``'s DiT and duration embedder."""
    import torch

    from stable_audio_bento.engine.lora.files import LoraConfig
    from stable_audio_bento.engine.lora.layout import engine_layer, engine_modules
    from stable_audio_bento.engine.lora.stored import Adapter

    components, sa3, differential = engine_modules(engine)
    depth = len(components["transformer"].transformer_blocks)
    names = [
        f"model.model.transformer.layers.{i}.{n}.weight" for i in range(depth) for n in BLOCK_LAYERS
    ]
    names += [f"model.model.{n}.weight" for n in TOP_LAYERS]
    names.append("conditioner.conditioners.seconds_total.embedder.embedding.1.weight")
    gen = torch.Generator().manual_seed(seed)
    layers: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            module, _ = engine_layer(components, name, sa3, differential)
        except (KeyError, AttributeError):
            continue
        shape = module.weight.shape
        fan_in = module.weight[0].numel()
        layers[name] = {
            "lora_A": torch.randn(RANK, fan_in, generator=gen) * 0.01,
            "lora_B": torch.randn(shape[0], RANK, generator=gen) * 0.01,
        }
    return Adapter(tag, LoraConfig("lora", RANK, float(RANK)), layers)


def run(repeats: int = 3) -> list[dict[str, Any]]:
    import dataclasses

    from stable_audio_bento.engine import EngineRequest
    from stable_audio_bento.engine.lora.apply import applied, cache, merged_weights

    from .sa3 import build

    with quiet():
        engine, _ = build("small")
    # Room for both sets (each is a float32 copy of every adapted layer).
    cache.budget = 4 * 2**30
    adapters = {tag: adapter(engine, tag, i) for i, tag in enumerate(("a", "b", "c"))}
    load = adapters.__getitem__
    request = EngineRequest("a steam train pulling into a station", seed=1, seconds_total=SECONDS)
    base = engine.info.sampling(steps=8)
    sets = {"none": (), "1": (("a", 1.0),), "3": (("a", 1.0), ("b", 0.5), ("c", 0.8))}
    rows: list[dict[str, Any]] = []

    def timed(loras: tuple[tuple[str, float], ...]) -> float:
        if loras:
            merged_weights(engine, loras, load)  # what applied() reads (cached now)
        sampling = dataclasses.replace(base, loras=loras)
        started = time.perf_counter()
        engine.generate([request], sampling)
        return time.perf_counter() - started

    def add(label: str, seconds: list[float], note: str = "") -> None:
        rows.append(
            {
                "case": label,
                "seconds": round(statistics.median(seconds), 3),
                "note": note,
                "load": load_average(),
            }
        )
        print(rows[-1], file=sys.stderr)

    # The engine reads LoRAs from the store; the bench's live in memory: ``timed`` builds the
    # set's adapted weights through ``load`` first (cached), so that generate() finds them.
    timed(())  # warm-up
    add("no LoRA: generate", [timed(()) for _ in range(repeats)])
    for count in ("1", "3"):
        loras = sets[count]
        add(
            f"{count} LoRA: generate, adapted weights cached",
            [timed(loras) for _ in range(repeats)],
        )
    for count in ("1", "3"):
        loras = sets[count]
        builds, swaps = [], []
        for _ in range(3):
            cache.clear()
            started = time.perf_counter()
            merged_weights(engine, loras, load)
            builds.append(time.perf_counter() - started)
            started = time.perf_counter()
            with applied(engine, loras, load):
                pass
            swaps.append(time.perf_counter() - started)
        weights = merged_weights(engine, loras, load).values()
        size = sum(t.numel() * t.element_size() for t in weights)
        note = f"{len(adapters['a'].layers)} layers, rank {RANK}, {size / 2**20:.0f} MB cached"
        add(f"{count} LoRA: build the adapted weights (a new set or strength)", builds, note)
        add(f"{count} LoRA: swap them in and out (a cached set)", swaps)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"SA3 small shape (random weights), float32, this CPU; one {SECONDS:g} s request, 8 steps;",
        f"plain rank-{RANK} LoRAs on every adapted layer. Median seconds.",
        "",
        "| case | seconds | note | load |",
        "| --- | ---: | --- | ---: |",
    ]
    lines += [f"| {r['case']} | {r['seconds']:.3f} | {r['note']} | {r['load']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lora", description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update RESULTS.md")
    args = parser.parse_args(argv)
    text = table(run(args.repeats))
    print(text)
    if args.write:
        results = HERE / "RESULTS.md"
        current = results.read_text()
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in current:
            head, rest = current.split(BEGIN, 1)
            current = head + block + rest.split(END, 1)[1]
        else:
            current = (
                current.rstrip("\n") + "\n\n## LoRA (`python -m bench.lora`)\n\n" + block + "\n"
            )
        results.write_text(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
