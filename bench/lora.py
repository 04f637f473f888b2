"""``python -m bench.lora``: what LoRAs cost a request on the Stable Audio 3 small shape.

The full small shape with seeded random weights (``bench.sa3.build``), float32 on the CPU with
one torch thread (CPU seconds then measure the work, not other processes' contention), one
SECONDS s request at STEPS steps. Plain rank-16 LoRAs on every Linear / Conv1d layer the
reference adapts in the DiT and the duration embedder. Each round runs every case once, in the
same order; a case's cost is the median over rounds of its CPU seconds divided by the no-LoRA
request's in the same round (what the noise of a shared machine leaves comparable).

Cases: 0 / 1 / 3 LoRAs merged with their adapted weights cached (a hot set: the batch only
swaps them in), the same applied per item (unmerged), a set that is not cached (a new set or
strength, or every switch past the cache: its adapted weights are built first), and a batch of
4 requests with 4 different sets: per item in one batch, against the same requests merged in
one batch per set, against 4 requests without LoRA in one batch. Also timed alone: building a
set's adapted weights and swapping a cached set in and out. Prints a markdown table;
``--write`` puts it between the LoRA markers of RESULTS.md.
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
SECONDS = 2.0
STEPS = 4
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


Sets = tuple[tuple[str, float], ...]


def run(rounds: int = 3, tiny: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The cases' rows and the build / swap / size figures (``tiny``: the test's shape)."""
    import dataclasses

    import torch

    from stable_audio_bento.engine import EngineRequest
    from stable_audio_bento.engine.lora.apply import EngineLoras
    from stable_audio_bento.engine.lora.merge import merged_bytes, merged_weights

    from .sa3 import build

    torch.set_num_threads(1)
    with quiet():
        engine, _ = build("small", tiny=tiny)
    adapters = {tag: adapter(engine, tag, i) for i, tag in enumerate("abcd")}
    load = adapters.__getitem__
    big = 64 * 1024  # MiB: room for every set the bench caches
    policies = {
        "merged": EngineLoras(engine, "merged", big, load=load),
        "cold": EngineLoras(engine, "merged", 0, load=load),  # nothing kept: built every time
        "per-item": EngineLoras(engine, "per-item", load=load),
    }
    request = EngineRequest("a steam train pulling into a station", seed=1, seconds_total=SECONDS)
    sampling = engine.info.sampling(steps=STEPS)
    one: Sets = (("a", 1.0),)
    three: Sets = (("a", 1.0), ("b", 0.5), ("c", 0.8))
    mixed: list[Sets] = [(), one, (("d", 0.7),), three]

    def timed(policy: str, sets: list[Sets], per_set: bool = False) -> tuple[float, float]:
        """CPU and wall seconds of generating ``request`` once per set: in one batch, or in
        one batch per set (``per_set``)."""
        engine.loras = policies[policy]
        batches = [[s] for s in sets] if per_set else [sets]
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in batches:
            engine.generate([dataclasses.replace(request, loras=s) for s in batch], sampling)
        return time.process_time() - cpu, time.perf_counter() - wall

    cases: list[tuple[str, str, list[Sets], bool]] = [
        ("no LoRA", "merged", [()], False),
        ("1 LoRA, merged, cached", "merged", [one], False),
        ("3 LoRAs, merged, cached", "merged", [three], False),
        ("1 LoRA, per item", "per-item", [one], False),
        ("3 LoRAs, per item", "per-item", [three], False),
        ("1 LoRA, merged, not cached (built first)", "cold", [one], False),
        ("3 LoRAs, merged, not cached (built first)", "cold", [three], False),
        ("4 requests, no LoRA, one batch", "merged", [()] * 4, False),
        ("4 requests, 4 sets (0/1/1/3), per item in one batch", "per-item", mixed, False),
        ("4 requests, 4 sets (0/1/1/3), merged, a batch per set, cached", "merged", mixed, True),
    ]
    with quiet():
        for chosen in (one, three, mixed[2]):
            merged_weights(engine, chosen, load)  # adapter factors and tensors in memory
        timed("merged", mixed, per_set=True)  # warm-up; fills the merged cache
        timed("per-item", mixed)
    samples: dict[str, list[tuple[float, float, float]]] = {c[0]: [] for c in cases}
    for _ in range(rounds):
        base_cpu = 0.0
        for label, policy, sets, per_set in cases:
            cpu, wall = timed(policy, sets, per_set)
            if label == "no LoRA":
                base_cpu = cpu
            samples[label].append((cpu, wall, cpu / base_cpu / len(sets)))
            print(label, round(cpu, 2), round(wall, 2), file=sys.stderr)
    rows = []
    for label, *_ in cases:
        got = samples[label]
        rows.append(
            {
                "case": label,
                "cpu_s": round(statistics.median(g[0] for g in got), 2),
                "wall_s": round(statistics.median(g[1] for g in got), 2),
                "per_request_vs_no_lora": round(statistics.median(g[2] for g in got), 3),
                "load": load_average(),
            }
        )
    builds, swaps = {}, {}
    for name, chosen in (("1", one), ("3", three)):
        spent, swapped = [], []
        for _ in range(3):
            started = time.perf_counter()
            merged_weights(engine, chosen, load)
            spent.append(time.perf_counter() - started)
            engine.loras = policies["merged"]
            started = time.perf_counter()
            with engine.loras.merged(chosen):
                pass
            swapped.append(time.perf_counter() - started)
        builds[name] = statistics.median(spent)
        swaps[name] = statistics.median(swapped) * 1000
    extra = {
        "layers": len(adapters["a"].layers),
        "merged_bytes": {
            "1": merged_bytes(engine, one, load),
            "3": merged_bytes(engine, three, load),
        },
        "build_s": builds,
        "swap_ms": swaps,
        "weights_mb": round(engine.nbytes() / 2**20),
        "rounds": rounds,
    }
    return rows, extra


def table(rows: list[dict[str, Any]], extra: dict[str, Any]) -> str:
    lines = [
        f"SA3 small shape (random weights, {extra['weights_mb']} MB), float32, this CPU, one torch"
        f" thread; a {SECONDS:g} s request, {STEPS} steps; plain rank-{RANK} LoRAs on all "
        f"{extra['layers']} adapted layers. Medians of {extra['rounds']} interleaved rounds;"
        " the last column is CPU time per request over the no-LoRA request's in the same round.",
        "",
        "| case | CPU s | wall s | per request vs no LoRA | load |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['case']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} | "
        f"{r['per_request_vs_no_lora']:.3f}x | {r['load']} |"
        for r in rows
    ]
    mb = {k: round(v / 2**20) for k, v in extra["merged_bytes"].items()}
    build, swap = extra["build_s"], extra["swap_ms"]
    lines += [
        "",
        f"Building a set's adapted weights (wall, alone): 1 LoRA {build['1']:.2f} s, 3 LoRAs "
        f"{build['3']:.2f} s; they hold {mb['1']} MB (1 or 3 LoRAs on the same layers: "
        f"{mb['3']} MB). Swapping a cached set in and out: {swap['1']:.2f} ms (1), "
        f"{swap['3']:.2f} ms (3).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lora", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update RESULTS.md")
    args = parser.parse_args(argv)
    text = table(*run(args.rounds))
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
