"""``python -m bench``: every benchmark in one run; prints the tables, writes JSON and RESULTS.md.

    python -m bench                 engine, service, gpu, encode, cpu, sa3 (~35 min on 2 cores)
    python -m bench --quick         fewer repeats and sizes (~4 min)
    python -m bench --only engine,gpu

Sections: ``engine`` (demo model: our engine vs stock ``generate_diffusion_cond`` at batch 1-8,
time per stage, coalescing 8 concurrent callers, torch threads), ``service`` (``bentoml serve``
with coalescing on and off under 1 / 4 / 16 concurrent clients, HTTP overhead), ``gpu``
(open-1.0- and small-shaped models with random weights: ours vs stock vs diffusers; tiny shapes
on a CPU), ``encode`` (every output format), ``cpu`` (the small models at full shape on this
CPU: each ``STABLE_AUDIO_CPU_FAST`` mode vs stock float32), ``sa3`` (the Stable Audio 3 small
shape with random weights on this CPU: our engine vs diffusers' ``StableAudio3Pipeline``, 10 s
and 30 s at 8 steps, seconds and peak RSS, decode time against length). The tables go between
the markers in RESULTS.md; the cpu and sa3 sections have markers of their own, so that each can
be rerun alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import load_average, machine, prepare_environment

HERE = Path(__file__).resolve().parent
SECTIONS = ("engine", "service", "gpu", "encode", "cpu", "sa3")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
CPU_BEGIN, CPU_END = "<!-- bench:cpu:begin -->", "<!-- bench:cpu:end -->"
SA3_BEGIN, SA3_END = "<!-- bench:sa3:begin -->", "<!-- bench:sa3:end -->"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="results file")
    parser.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md", help="tables go here")
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument(
        "--bentoml-home", type=Path, default=None, help="model store (default: temporary)"
    )
    parser.add_argument("--gpu-tiny", action="store_true", help="tiny shapes even on a GPU")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def update_markdown(path: Path, tables: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace what is between the markers (the prose around them is written by hand)."""
    block = f"{begin}\n{tables.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else f"# Benchmark results\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text = f"{text.rstrip()}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sections = [s for s in SECTIONS if s in args.only.split(",")]
    prepare_environment(args.bentoml_home)
    from . import cpu, encode, engine, gpu, sa3, service
    from .common import demo_entry

    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "command": command.strip(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_start": load_average(),
        "quick": args.quick,
    }
    rendered: list[str] = []
    cpu_table = sa3_table = ""
    began = time.perf_counter()
    entry = demo_entry() if {"engine", "service"} & set(sections) else None
    for section in sections:
        started = time.perf_counter()
        print(f"[bench] {section} ...", file=sys.stderr, flush=True)
        if section == "engine":
            report["engine"] = engine.run(entry, args.quick)
            rendered.append(engine.render(report["engine"]))
        elif section == "service":
            report["service"] = service.run(entry, args.quick)
            rendered.append(service.render(report["service"], report.get("engine")))
        elif section == "gpu":
            report["gpu"] = gpu.run(
                tiny_shapes=True if args.gpu_tiny else None, repeats=1 if args.quick else 2
            )
            rendered.append(gpu.render(report["gpu"]))
        elif section == "cpu":
            report["cpu"] = cpu.run(sa3=cpu.sa3_available())
            cpu_table = cpu.render(report["cpu"])
            print(cpu_table, flush=True)
        elif section == "sa3":
            report["sa3"] = sa3.run()
            sa3_table = sa3.render(report["sa3"])
            print(sa3_table, flush=True)
        else:
            report["encode"] = encode.run(repeats=2 if args.quick else 5)
            rendered.append(encode.render(report["encode"]))
        if section not in ("cpu", "sa3"):
            print(rendered[-1], flush=True)
        print(
            f"[bench] {section} took {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["load_average_at_end"] = load_average()

    m = report["machine"]
    header = (
        f"Last run: `{report['command']}`, {report['started']}, {report['seconds']:.0f} s. "
        f"Machine: {m['cpu']}, {m['cpu_cores']} cores, GPU: {m['gpu'] or 'none'}; "
        f"torch {m['torch']} ({m['torch_threads']} intra-op threads); 1-minute load average "
        f"{report['load_average_at_start']} at start, {report['load_average_at_end']} at the end "
        "(the cores are shared, so wall-clock numbers carry other work's noise)."
    )
    tables = "\n".join([header, "", *rendered])
    if not args.no_write:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        if rendered:
            update_markdown(args.markdown, tables)
        if cpu_table:
            update_markdown(args.markdown, f"{header}\n\n{cpu_table}", CPU_BEGIN, CPU_END)
        if sa3_table:
            update_markdown(args.markdown, f"{header}\n\n{sa3_table}", SA3_BEGIN, SA3_END)
        print(f"[bench] wrote {args.json} and {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
